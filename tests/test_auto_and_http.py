"""--backend/--client auto, --http-version, and the run-wide libcurl share (issue 19)."""

from __future__ import annotations

import pytest
from conftest import HAVE_PYCURL, NEEDS_PYCURL, write_list

from fetcher.auto import choose
from fetcher.cli import main
from fetcher.errors import ConfigError
from fetcher.options import Options, prepare_run


def test_auto_picks_libcurl_where_pycurl_imports() -> None:
    backend, client, why = choose("auto", "auto")
    assert (backend, client) == (("multi", "curl") if HAVE_PYCURL else (backend, "requests"))
    assert why.startswith(f"auto: --backend {backend} --client {client}")


def test_nothing_auto_changes_nothing() -> None:
    assert choose("thread", "requests") == ("thread", "requests", "")
    options, why = prepare_run(Options.create())
    assert why == "" and options.transport.backend == "thread" and options == Options.create()


def test_auto_keeps_what_was_given() -> None:
    backend, client, _ = choose("auto", "requests")
    assert client == "requests" and backend in ("process", "thread")


@NEEDS_PYCURL
def test_auto_says_its_choice_with_v_and_in_the_summary(server, tmp_path, capsys) -> None:
    urls = [server.url(f"/files/a{i}.jpg") for i in range(3)]
    code = main([write_list(tmp_path, urls), "-o", str(tmp_path / "out"), "--backend", "auto", "--client", "auto",
                 "-v"])
    captured = capsys.readouterr()
    assert code == 0
    assert "auto: --backend multi --client curl" in captured.err
    assert "multi (+ curl, chosen by auto) backend" in captured.out


def test_a_dataset_build_that_decodes_runs_on_every_cpu(monkeypatch) -> None:
    """Decoding and resizing are CPU per image: multi's one thread would be the ceiling (issue 26)."""
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    backend, client, why = choose("auto", "auto", decodes=True)
    assert backend == "process" and "decoded" in why
    assert choose("auto", "requests", decodes=True)[0] == "process"
    assert choose("thread", "auto", decodes=True)[0] == "thread"  # a backend given is kept
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert choose("auto", "auto", decodes=True)[0] in ("multi", "thread")  # one CPU: nothing to spread over
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    for flags, decodes in (({"resize": 256}, True), ({"verify_image": True}, True), ({"encode_format": "png"}, True),
                           ({"min_image_size": 10}, False), ({"output_format": "webdataset"}, False)):
        options, _ = prepare_run(Options.create(backend="auto", client="auto", **flags))
        if decodes or HAVE_PYCURL:  # without pycurl, requests on 4 CPUs is the process backend anyway
            assert (options.transport.backend == "process") == decodes, flags


def test_http_version_2_needs_curl() -> None:
    with pytest.raises(ConfigError, match="needs --client curl"):
        Options.create(http_version="2")
    with pytest.raises(ConfigError, match="1.1 or 2"):
        Options.create(http_version="3")


@NEEDS_PYCURL
@pytest.mark.parametrize("backend", ["thread", "multi"])
@pytest.mark.parametrize("version", ["1.1", "2"])
def test_http_version_over_plain_http_is_1_1_and_per_host_holds(server, tmp_path, backend, version) -> None:
    urls = [server.url(f"/slow/h{i}.jpg?delay=0.1") for i in range(12)]
    code = main([write_list(tmp_path, urls), "-o", str(tmp_path / "out"), "-q", "--backend", backend, "--client",
                 "curl", "--http-version", version, "--pool", "8", "--per-host", "2"])
    assert code == 0
    assert server.stats.max_active <= 2


@NEEDS_PYCURL
def test_threads_reuse_their_connections_over_the_run(server, tmp_path) -> None:
    """Eight threads, one host, files one after another: each thread's handle reuses its own idle
    connection, so 40 files take at most one connection per thread. (Threads no longer share one
    connection cache: libcurl does not support it across threads and it crashed under load; see
    transports/curl/share.py. Shared, this run made 1-2 connections.)"""
    urls = [server.url(f"/files/c{i}.jpg") for i in range(40)]
    code = main([write_list(tmp_path, urls), "-o", str(tmp_path / "out"), "-q", "--backend", "thread", "--client",
                 "curl", "--pool", "8", "--per-host", "1"])
    assert code == 0
    assert server.stats.connections <= 8
