"""The requests session fetcher makes: requests' own HTTPAdapter, one pool and one kept-alive connection per origin."""

from __future__ import annotations

from fetcher.download.attempt import fetch_one
from fetcher.models import Status, FetchTask
from fetcher.options import Options
from fetcher.transports.factory import make_session


def fetch(transport, server, out: str, name: str) -> Status:
    task = FetchTask(url=server.url(f"/files/{name}?size=100"), name=name, index=0)
    return fetch_one(task, transport, Options.create(out=out)).status


def test_one_origin_is_one_pool_and_one_connection(server, out):
    with make_session(Options.create(), 1) as transport:
        adapter = transport.session.get_adapter(server.base_url)
        statuses = [fetch(transport, server, out, f"a{i}.bin") for i in range(5)]
        pools = list(adapter.poolmanager.pools.keys())

    assert statuses == [Status.OK] * 5
    assert len(pools) == 1
    assert server.stats.connections == 1


def test_a_closed_pool_is_never_used_again(server, out):
    # urllib3 1.x closes each pool its PoolManager drops (2.x lets it go): do what 1.x does.
    with make_session(Options.create(), 1) as transport:
        assert fetch(transport, server, out, "before.bin") is Status.OK
        adapter = transport.session.get_adapter(server.base_url)
        adapter.poolmanager.clear()
        assert fetch(transport, server, out, "after.bin") is Status.OK  # not ClosedPoolError


def test_no_more_pools_are_remembered_than_the_pool_manager_keeps():
    # Each remembered pool holds its idle connections open: a list over thousands of hosts
    # must not keep more of them than requests itself would (pool_connections = 16).
    import requests

    with make_session(Options.create(), 1) as transport:
        adapter = transport.session.get_adapter("http://")
        for i in range(40):  # pools are made without connecting
            request = requests.Request("GET", f"http://host{i}.test/x").prepare()
            adapter.get_connection_with_tls_context(request, True)
        origins = [key.key_host for key in adapter.poolmanager.pools.keys()]

    assert sorted(origins) == sorted(f"host{i}.test" for i in range(24, 40))
