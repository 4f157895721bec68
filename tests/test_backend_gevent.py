"""The gevent backend beyond the contract: patching order, refusal when unpatched, one shared pool.

Everything here runs in a subprocess: gevent's monkey-patching must never
reach the pytest process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import NEEDS_PYCURL, write_list
from proc_helpers import RUN_TIMEOUT_S, Variant, read_manifest, run_cli


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    # -W error: a MonkeyPatchWarning (or any other) would fail the run, not scroll by.
    return subprocess.run([sys.executable, "-W", "error", "-c", code, *args], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


SPY_ON_PATCH_ALL = """
import json, sys
from gevent import monkey

seen = {}
original = monkey.patch_all

def spy(*args, **kwargs):
    seen["loaded_before_patch"] = sorted(
        name for name in ("requests", "urllib3", "ssl", "http.client", "fetcher.download.attempt") if name in sys.modules)
    return original(*args, **kwargs)

monkey.patch_all = spy
from fetcher.cli.main import main
seen["exit"] = main(sys.argv[1:])
seen["patched"] = monkey.is_module_patched("socket")
seen["requests_loaded_at_end"] = "requests" in sys.modules
print(json.dumps(seen))
"""


def test_the_cli_patches_before_requests_is_imported(server, tmp_path, out) -> None:
    urls = [server.url(f"/files/g{i}.jpg?size=100") for i in range(5)]

    result = _python(SPY_ON_PATCH_ALL, write_list(tmp_path, urls), "-o", out, "--backend", "gevent", "-q")

    assert result.returncode == 0, result.stderr
    assert "MonkeyPatchWarning" not in result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"loaded_before_patch": [], "exit": 0, "patched": True, "requests_loaded_at_end": True}


def test_the_cli_refuses_to_patch_after_requests_was_imported(server, tmp_path, out) -> None:
    code = "import sys, requests\nfrom fetcher.cli.main import main\nsys.exit(main(sys.argv[1:]))"

    result = _python(code, write_list(tmp_path, [server.url("/files/a.jpg")]), "-o", out, "--backend", "gevent")

    assert result.returncode == 2
    assert "must monkey-patch before" in result.stderr and "requests" in result.stderr
    assert "MonkeyPatchWarning" not in result.stderr
    assert server.stats.requests == {}


def test_the_api_refuses_gevent_in_an_unpatched_process(out) -> None:
    code = """
import sys
from fetcher.backends import get_backend
from fetcher.errors import BackendError
from fetcher.options import Options
try:
    with get_backend("gevent")(Options.create(out=sys.argv[1], backend="gevent")):
        pass
except BackendError as exc:
    print(exc)
    from gevent import monkey
    print("patched" if monkey.is_module_patched("socket") else "not patched")
"""
    result = _python(code, out)

    assert result.returncode == 0, result.stderr
    message, state = result.stdout.strip().splitlines()
    assert "gevent.monkey.patch_all()" in message and "before importing requests" in message
    assert "another backend" in message
    assert state == "not patched"  # the library never patches behind the caller's back


def test_importing_fetcher_loads_nothing_heavy() -> None:
    code = """
import sys
import fetcher, fetcher.cli.main, fetcher.backends, fetcher.errors
print(sorted(m for m in ("requests", "urllib3", "ssl", "gevent", "tqdm", "multiprocessing") if m in sys.modules))
"""
    result = _python(code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_one_shared_session_opens_about_pool_connections(server, tmp_path, out) -> None:
    pool = 50
    urls = [server.url(f"/files/k{i}.jpg?size=200") for i in range(1000)]  # keep-alive server

    result = run_cli(Variant("gevent"), [write_list(tmp_path, urls), "-o", out, "--pool", str(pool), "-q"])

    assert result.returncode == 0, result.stderr
    assert len(read_manifest(os.path.join(out, "manifest.jsonl"))) == 1000
    assert server.stats.connections <= 2 * pool, server.stats.connections
    # urllib3 logs this (to stderr, through logging's last resort) for every connection
    # it opens and throws away because the session's pool is smaller than --pool.
    assert "Connection pool is full" not in result.stderr


def test_the_shared_session_keeps_pool_connections_per_host(out) -> None:
    # Behaviourally the drainer greenlets hand connections on without churn even
    # when undersized, so check the sizing itself: a burst of new greenlets needs it.
    code = """
import sys
from gevent import monkey
monkey.patch_all()
from fetcher.backends.gevent import GeventBackend
from fetcher.options import Options
with GeventBackend(Options.create(out=sys.argv[1], pool=37, backend="gevent")) as backend:
    print(backend._session.session.get_adapter("http://127.0.0.1/").poolmanager.connection_pool_kw["maxsize"])
"""
    result = _python(code, out)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "37"


CURL_HUB_VARIANT = """
import sys
from gevent import monkey

monkey.patch_all()
import fetcher.backends.multi as multi
import fetcher.backends.gevent_curl as gevent_curl

if sys.argv[1] == "no-epoll":  # as on a platform without epoll: an io watcher per socket
    gevent_curl.unpatched_epoll = lambda: None
else:  # libcurl itself fails once, in the middle of the run
    settle_ended, calls = multi.MultiDownloads.settle_ended, []

    def failing_once(self):
        calls.append(self.transfers.active)
        if len(calls) == 6:  # transfers are in flight by then
            raise RuntimeError("libcurl broke")
        settle_ended(self)

    multi.MultiDownloads.settle_ended = failing_once
from fetcher.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@NEEDS_PYCURL
def test_gevent_curl_without_epoll_watches_each_socket(server, tmp_path, out) -> None:
    urls = [server.url(f"/files/w{i}.jpg?size=3000") for i in range(60)]

    result = _python(CURL_HUB_VARIANT, "no-epoll", write_list(tmp_path, urls), "-o", out, "--backend", "gevent",
                     "--client", "curl", "--pool", "8", "-q")

    assert result.returncode == 0, result.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(r["status"] for r in records) == ["ok"] * 60


@NEEDS_PYCURL
def test_gevent_curl_reports_every_transfer_when_libcurl_fails(server, tmp_path, out) -> None:
    # Transfers in flight when libcurl fails end as internal failures: nothing waits forever.
    urls = [server.url(f"/files/f{i}.jpg?size=3000") for i in range(40)]

    result = _python(CURL_HUB_VARIANT, "fail-once", write_list(tmp_path, urls), "-o", out, "--backend", "gevent",
                     "--client", "curl", "--pool", "8", "--retries", "0", "-q")

    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert len(records) == 40, result.stderr
    internal = [r for r in records if r["status"] == "failed"]
    assert internal and all(r["error"]["kind"] == "internal" for r in internal), internal
    assert "libcurl broke" in internal[0]["error"]["message"]
    assert len(internal) + sum(r["status"] == "ok" for r in records) == 40
    assert result.returncode == 1
