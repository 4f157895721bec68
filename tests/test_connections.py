"""The thread backend's handles share idle keep-alive connections, as docs/backends.md says
(issue 23, item 11): counted at the test server."""

from __future__ import annotations

import contextlib
import io

import pytest

from fetcher.cli.main import main


@pytest.mark.parametrize("client", ["curl", "requests"])
def test_thread_backend_reuses_connections_to_one_keep_alive_host(server, tmp_path, client):
    if client == "curl":
        pytest.importorskip("pycurl")
    urls = [server.url(f"/files/k{i}.jpg?size={2000 + 37 * i}") for i in range(200)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    before = server.stats.connections
    with contextlib.redirect_stdout(io.StringIO()):
        status = main([str(tmp_path / "urls.txt"), "--backend", "thread", "--client", client, "--pool", "8",
                       "-o", str(tmp_path / "out")])
    assert status == 0
    opened = server.stats.connections - before
    assert opened <= 16, f"{opened} connections for 200 URLs on 8 threads"  # one per thread, with room to spare
