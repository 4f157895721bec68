"""``--backend auto`` / ``--client auto``: the fastest safe configuration this machine has.

Decided from the WAN benchmark (benchmarks/wan.py, issue 19) and the loopback
one (benchmarks/run.py), measured in the same runs:

- client: libcurl (``curl``) where pycurl is installed and this process is not
  gevent-patched (a blocking libcurl would stall the loop), else requests;
- backend, with libcurl: ``multi``: one thread drives every transfer, all on one
  multi handle, so HTTP/2 carries a host's requests on one connection and DNS and
  TLS sessions are shared by the whole run; the process backend splits the pool
  (and so each host's connections) over its workers;
- backend, with requests: ``process`` on several CPUs, else ``thread``;
- backend, when every image is decoded (a dataset build: ``--verify-image``, ``--resize``,
  ``--encode-format``): ``process`` on several CPUs, whatever the client. Decoding, resizing and
  encoding cost about 1 ms of CPU per image (of ~1.8 ms in all), and multi runs them all on its one
  thread: measured on 10,000 images resized to 256 (benchmarks/datasets.py,
  docs/performance-datasets.md), process + curl made 1.8x the images/s of multi + curl at about the
  same CPU per image.

``auto`` is the CLI's default for a local run (``fetcher INPUT``): measured on a quiet
machine, multi + curl made 1.7-3.3x the files/s of thread + requests on the loopback
datasets and 2x on the WAN profiles. The Python API keeps thread + requests
(``session_factory`` hands requests sessions), and so do ``serve``'s workers.
"""

from __future__ import annotations

import importlib.util
import os
import sys

AUTO = "auto"


def choose(backend: str, client: str, decodes: bool = False) -> tuple[str, str, str]:
    """(backend, client, why) with each ``auto`` replaced; ``why`` is "" when nothing was ``auto``.

    ``decodes``: every image is decoded (``--verify-image``, ``--resize``, ``--encode-format``),
    so the run needs CPUs more than one thread: the process backend, with libcurl in each worker.
    """
    if AUTO not in (backend, client):
        return backend, client, ""
    reasons = []
    if client == AUTO:
        client, reason = _client()
        reasons.append(reason)
    if backend == AUTO:
        cpus = os.cpu_count() or 1
        if decodes and cpus > 1:
            backend = "process"
            reasons.append(f"images are decoded: on all {cpus} CPUs, not in the one thread multi has")
        elif client == "curl":
            backend = "multi"
            reasons.append("libcurl's multi interface drives every transfer from one thread")
        else:
            backend = "process" if cpus > 1 else "thread"
            reasons.append(f"{cpus} CPU{'s' if cpus > 1 else ''}")
    return backend, client, f"auto: --backend {backend} --client {client} ({'; '.join(reasons)})"


def _client() -> tuple[str, str]:
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        return "requests", "gevent-patched process"
    if importlib.util.find_spec("pycurl") is None:
        return "requests", "pycurl is not installed"
    # Found, not imported: libcurl is loaded in transports/curl/ only (tests/test_layers.py). No
    # version here: importlib.metadata cost a fifth of the interpreter's start-up (issue 29).
    return "curl", "pycurl is installed"
