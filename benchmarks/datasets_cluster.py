"""``fetcher serve`` + two ``fetcher work`` on this host, as one measured process tree (benchmarks/datasets.py).

    python benchmarks/datasets_cluster.py PARQUET OUT RESIZE MODE POOL_PER_WORKER [FORMAT]

serve (manager broker on 127.0.0.1, an ephemeral port, the key in FETCHER_AUTHKEY) hands
out the parquet's rows; each worker fetches, checks, resizes and encodes where it runs,
into OUT/w0 and OUT/w1 (``--output-format files``, or ``webdataset`` when FORMAT says so
and this fetcher builds shards across hosts). Both workers run with their default
backend. Exit code: serve's. Every process is waited for here, so the caller's rusage of
this one holds them all.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

TIMEOUT_S = 1800


def main() -> int:
    parquet, out, resize, mode, pool = sys.argv[1:6]
    output_format = sys.argv[6] if len(sys.argv) > 6 else "files"
    env = dict(os.environ, FETCHER_AUTHKEY=secrets.token_hex(16))
    os.makedirs(out, exist_ok=True)
    flags = ["--per-host", "0", "--retries", "0", "--output-format", output_format, "--resize", resize,
             "--resize-mode", mode, "--encode-format", "jpg", "--encode-quality", "95"]
    if output_format == "webdataset":
        flags += ["--shard-size", "1000", "--caption-column", "caption"]
    log = os.path.join(out, "serve.log")
    with open(log, "wb") as handle:
        serve = subprocess.Popen([sys.executable, "-m", "fetcher", "serve", parquet, "--bind", "127.0.0.1:0",
                                  "-o", os.path.join(out, "serve"), "-q", *flags], env=env, stdout=handle,
                                 stderr=handle)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        address = _address(log, serve)
        workers = [subprocess.Popen([sys.executable, "-m", "fetcher", "work", address, "-q", "--pool", pool,
                                     "-o", os.path.join(out, f"w{i}")], env=env) for i in range(2)]
        code = serve.wait(TIMEOUT_S)
        for worker in workers:
            worker.wait(60)
        return code
    finally:
        for proc in [serve, *workers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _address(log: str, serve: subprocess.Popen[bytes]) -> str:
    """serve's HOST:PORT, from its "listening on" line (bounded wait)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and serve.poll() is None:
        with open(log, encoding="utf-8", errors="replace") as text:
            for line in text:
                if "listening on 127.0.0.1:" in line:
                    return "127.0.0.1:" + line.rsplit("127.0.0.1:", 1)[1].split()[0].strip(",;")
        time.sleep(0.05)
    with open(log, encoding="utf-8", errors="replace") as text:
        raise RuntimeError("fetcher serve did not start: " + text.read()[-2000:])


if __name__ == "__main__":
    sys.exit(main())
