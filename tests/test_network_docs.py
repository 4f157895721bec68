"""Every command of docs/network.md runs as written, against servers on 127.0.0.1.

A block's ``urls.txt`` is written with the test server's URLs, ``fetcher`` is this checkout's
``python -m fetcher``, and the addresses the doc names (a proxy on 127.0.0.1:1080) are the
test's own; each block is then checked for what it claims.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from proc_helpers import RUN_TIMEOUT_S, read_manifest
from proxies import Socks5Proxy

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "network.md")


def blocks() -> list[str]:
    with open(DOC, encoding="utf-8") as handle:
        return re.findall(r"```bash\n(.*?)```", handle.read(), flags=re.S)


def block_with(needle: str) -> str:
    [found] = [block for block in blocks() if needle in block]
    return found


def run_block(block: str, cwd, urls: list[str], **replace: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    (cwd / "urls.txt").write_text("\n".join(urls) + "\n", encoding="utf-8")
    for old, new in replace.items():
        block = block.replace(old, new)
    script = re.sub(r"(^|\s)fetcher ", rf"\1{sys.executable} -m fetcher ", block)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_every_block_is_checked() -> None:
    assert len(blocks()) == len(CHECKED), "a new block of docs/network.md needs a check here"


def test_proxy(server, tmp_path) -> None:
    proxy = Socks5Proxy().start()
    try:
        done = run_block(block_with("--proxy"), tmp_path, [server.url(f"/files/{i}.bin") for i in range(2)],
                         **{"127.0.0.1:1080": f"127.0.0.1:{proxy.port}"})
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in read_manifest(str(tmp_path / "out" / "manifest.jsonl"))] == ["ok", "ok"]
    assert server.stats.connections == sum(proxy.requests.values()) >= 1  # every connection came through it


def test_robots(server, tmp_path) -> None:
    server.robots = (200, "User-agent: my-dataset-bot\nDisallow: /files/no\n")
    done = run_block(block_with("--robots"), tmp_path, [server.url("/files/yes.bin"), server.url("/files/no.bin")])
    assert done.returncode == 1  # one URL is disallowed
    records = {r["url"].rsplit("/", 1)[1]: r for r in read_manifest(str(tmp_path / "out" / "manifest.jsonl"))}
    assert records["yes.bin"]["status"] == "ok" and records["no.bin"]["error"]["kind"] == "robots"
    assert server.stats.requests["/robots.txt"] == 1 and server.stats.requests["/files/no.bin"] == 0


def test_delay(server, tmp_path) -> None:
    done = run_block(block_with("--delay 1"), tmp_path, [server.url(f"/files/{i}.bin") for i in range(2)])
    assert done.returncode == 0, done.stderr
    starts = sorted(t for times in server.stats.times.values() for t in times)
    assert starts[1] - starts[0] >= 1.0


def test_limit_rate(server, tmp_path) -> None:
    started = time.monotonic()
    done = run_block(block_with("--limit-rate"), tmp_path, [server.url(f"/files/{i}.bin?size=300000") for i in range(2)])
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 600_000 / (500 * 1024) - 0.2  # a lower bound: the cap held


def test_dns(server, tmp_path) -> None:
    from dns_server import DnsServer

    dns = DnsServer().start()
    try:
        port = server.server_address[1]
        done = run_block(block_with("--dns-servers"), tmp_path,
                         [f"http://a.fetcher-test:{port}/files/{i}.bin" for i in range(3)],
                         **{"127.0.0.1:5353": dns.address})
    finally:
        dns.stop()
    assert done.returncode == 0, done.stderr
    assert dns.asked_once("a.fetcher-test"), dns.queries


CHECKED = [test_proxy, test_robots, test_delay, test_limit_rate, test_dns]

