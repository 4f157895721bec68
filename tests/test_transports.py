"""Both transports behind the seam: request shape, the environment read once, selection errors.

The fetch rules themselves run on both transports in test_rules.py,
test_resume.py and test_cli.py (the ``client`` fixture); this file covers
what is about the transports and their selection.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from conftest import HAVE_PYCURL, write_list

from fetcher import Task, fetch
from fetcher.cli.main import main
from fetcher.options import Options
from fetcher.transports.base import Headers
from fetcher.transports.environment import Environment

NOWHERE = "http://127.0.0.1:9/echo"  # the discard port: nothing listens there


def echo(results) -> dict[str, str]:
    (result,) = results
    assert result.ok, result.error
    return json.loads(result.content)


def test_request_headers_merge_per_task_over_run_over_defaults(server, client):
    task = fetch([Task(server.url("/echo"), headers={"X-Both": "task", "X-Task": "1"})],
                 memory=True, client=client, user_agent="bot/2", headers=["X-Both: run", "X-Run: 1"])
    sent = echo(task)
    assert sent["User-Agent"] == "bot/2" and sent["X-Both"] == "task"
    assert sent["X-Task"] == "1" and sent["X-Run"] == "1"
    assert "gzip" in sent["Accept-Encoding"]


def test_proxies_come_from_the_environment_and_no_proxy_is_honoured(server, client, monkeypatch):
    # The test server answers a proxy-style request line (absolute URL) like any other,
    # so a request for a dead address only succeeds if it went through the "proxy".
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base_url)
    assert echo(fetch([NOWHERE], memory=True, client=client, retries=0))["Host"] == "127.0.0.1:9"
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    (result,) = fetch([NOWHERE], memory=True, client=client, retries=0)
    assert result.error is not None and result.error.kind == "connect"


def test_the_environment_is_read_once_with_requests_meaning(monkeypatch, tmp_path):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", ".internal.example,10.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/my-ca.pem")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine h login u password p\n")
    monkeypatch.setenv("NETRC", str(netrc))
    env = Environment.read()
    assert env.proxy_for("https://images.example/a.jpg") == "http://proxy.example:3128"
    assert env.proxy_for("http://images.example/a.jpg") is None  # no http_proxy
    assert env.proxy_for("https://cdn.internal.example/a.jpg") is None
    assert env.proxy_for("https://10.0.0.1:8443/a.jpg") is None
    assert env.ca_bundle == "/etc/my-ca.pem" and env.netrc == str(netrc)


def test_response_headers_are_case_insensitive():
    headers = Headers({"content-type": "image/png"})
    assert headers.get("Content-Type") == "image/png" and "CONTENT-TYPE" in headers
    assert headers["Content-type"] == "image/png" and headers.get("ETag") is None


def test_a_small_download_leaves_no_meta_file_behind(server, out, tmp_path, client):
    url = server.url("/ranged/small.bin?size=5000")  # has an ETag: resumable, were it large
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--client", client]) == 0
    names = [f for _, _, fs in os.walk(out) for f in fs]
    assert not [f for f in names if ".part" in f]


def test_curl_without_pycurl_is_a_usage_error_that_says_how_to_install(server, out, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "pycurl", None)  # as if it were not installed
    assert main([write_list(tmp_path, [server.url("/files/a")]), "-o", out, "--client", "curl"]) == 2
    err = capsys.readouterr().err
    assert "pycurl" in err and "pip install pycurl" in err and err.count("\n") == 1
    assert sum(server.stats.requests.values()) == 0


@pytest.mark.skipif(not HAVE_PYCURL, reason="pycurl is not installed")
def test_a_blocking_curl_transport_refuses_a_gevent_patched_process(monkeypatch):
    """The thread backend's easy handles would block the loop; the gevent backend has its own (gevent_curl.py)."""
    from fetcher.errors import ConfigError
    from fetcher.transports.factory import make_session

    class Monkey:
        @staticmethod
        def is_module_patched(name: str) -> bool:
            return name == "socket"

    monkeypatch.setitem(sys.modules, "gevent.monkey", Monkey)
    with pytest.raises(ConfigError, match="gevent-patched process"):
        make_session(Options.create(client="curl"))


def test_the_multi_backend_needs_the_curl_client(server, out, tmp_path, capsys):
    listing = write_list(tmp_path, [server.url("/files/a")])
    assert main([listing, "-o", out, "--backend", "multi", "--client", "requests"]) == 2
    assert "use it with --client curl" in capsys.readouterr().err
    # Without --client, the CLI picks the client (auto): curl where pycurl is installed.
    assert main([listing, "-o", out, "--backend", "multi"]) == (0 if HAVE_PYCURL else 2)


@pytest.mark.skipif(not HAVE_PYCURL, reason="pycurl is not installed")
def test_the_multi_backend_stops_early_cleanly(server, out):
    # The drips have their .part files open when the consumer stops.
    urls = [server.url(f"/drip/d{i}.bin?size=100&interval=0.1") for i in range(3)] + [server.url("/files/f.jpg")]
    stream = fetch(urls[::-1], out=out, pool=4, backend="multi", client="curl")
    first = next(stream)
    time.sleep(0.3)
    stream.close()
    assert first.url == server.url("/files/f.jpg") and first.ok
    assert [f for _, _, fs in os.walk(out) for f in fs if ".part" in f] == []
    again = list(fetch([server.url("/files/again.jpg")], out=out, backend="multi", client="curl"))
    assert [r.ok for r in again] == [True]  # the folder's lock was released
