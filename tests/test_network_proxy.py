"""``--proxy`` and the proxy environment variables, on every backend x client pair and in serve's workers.

The proxies are tests/proxies.py's, on 127.0.0.1, counting what passes through them. URLs
on a ``*.test`` host resolve only at the proxy, so a download of one proves it went through
the proxy (for ``http://`` and ``socks5h://``, where the proxy resolves names); for
``socks5://`` (the client resolves) every connection the server saw must have come from the proxy.
Each run is ``python -m fetcher`` in a subprocess, so gevent patches only there.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from cluster import Cluster, manifest
from conftest import NEEDS_PYCURL, write_list
from proc_helpers import HAVE_PROC, Variant, descendants, read_manifest, run_cli, wait_until
from proxies import HttpProxy, Socks5Proxy

USER, PASSWORD = "proxyuser", "Pr0xyS3cret"
PAIRS = [Variant("thread"), Variant("process"), Variant("gevent"),
         pytest.param(Variant("thread", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("process", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("gevent", flags=("--client", "curl")), marks=NEEDS_PYCURL),
         pytest.param(Variant("multi", flags=("--client", "curl")), marks=NEEDS_PYCURL)]
NO_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "NO_PROXY")


@pytest.fixture(params=PAIRS, ids=lambda v: v.id if isinstance(v, Variant) else None)
def pair(request: pytest.FixtureRequest) -> Variant:
    return request.param


@pytest.fixture
def http_proxy() -> Iterator[HttpProxy]:
    proxy = HttpProxy((USER, PASSWORD)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def socks_proxy() -> Iterator[Socks5Proxy]:
    proxy = Socks5Proxy((USER, PASSWORD)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def clean_env(variant: Variant, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in variant.env().items() if k not in NO_PROXY_ENV}
    env.update(extra)
    return env


def run(variant: Variant, args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    import subprocess

    from proc_helpers import RUN_TIMEOUT_S, cli_command

    return subprocess.run(cli_command(variant, args), env=env or clean_env(variant), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


def proxy_file(tmp_path, url: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "proxy.txt"
    path.write_text(f"# the run's proxy\n{url}\n", encoding="utf-8")
    return f"@{path}"


def test_fetches_through_an_http_proxy_with_a_password_on_every_pair(server, http_proxy, pair, tmp_path,
                                                                     out) -> None:
    urls = [f"http://files.test:{server.server_address[1]}/files/p{i}.bin?size=3000" for i in range(3)]
    done = run(pair, [write_list(tmp_path, urls), "-o", out, "-v", "--retries", "0",
                      "--proxy", proxy_file(tmp_path, http_proxy.url("http"))])

    assert done.returncode == 0, done.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(r["status"] for r in records) == ["ok"] * 3 and all(r["bytes"] == 3000 for r in records)
    assert sum(http_proxy.requests.values()) == 3 and http_proxy.refused == 0  # each request passed through it
    assert sum(server.stats.requests.values()) == 3
    assert PASSWORD not in done.stdout + done.stderr + all_files_text(out)


def test_fetches_through_socks5h_with_a_password_on_every_pair(server, socks_proxy, pair, tmp_path, out) -> None:
    urls = [f"http://files.test:{server.server_address[1]}/files/s{i}.bin?size=3000" for i in range(3)]
    done = run(pair, [write_list(tmp_path, urls), "-o", out, "-v", "--retries", "0",
                      "--proxy", proxy_file(tmp_path, socks_proxy.url("socks5h"))])

    assert done.returncode == 0, done.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(r["status"] for r in records) == ["ok"] * 3
    # The name went to the proxy unresolved, and every connection the server saw came from it.
    assert set(socks_proxy.kinds) == {"domain"} and socks_proxy.refused == 0
    assert server.stats.connections == sum(socks_proxy.requests.values()) >= 1
    assert PASSWORD not in done.stdout + done.stderr + all_files_text(out)


def test_socks5_resolves_names_here_and_sends_the_address_on_every_pair(server, socks_proxy, pair, tmp_path,
                                                                       out) -> None:
    urls = [server.url(f"/files/r{i}.bin?size=3000") for i in range(3)]
    done = run(pair, [write_list(tmp_path, urls), "-o", out, "-v", "--retries", "0",
                      "--proxy", proxy_file(tmp_path, socks_proxy.url("socks5"))])

    assert done.returncode == 0, done.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(r["status"] for r in records) == ["ok"] * 3 and all(r["bytes"] == 3000 for r in records)
    assert set(socks_proxy.kinds) == {"ipv4"} and socks_proxy.refused == 0
    assert server.stats.connections == sum(socks_proxy.requests.values()) >= 1
    assert PASSWORD not in done.stdout + done.stderr + all_files_text(out)


@pytest.mark.parametrize("variant", [Variant("thread"), pytest.param(Variant("multi", flags=("--client", "curl")),
                                                                       marks=NEEDS_PYCURL)], ids=lambda v: v.id)
def test_the_environment_names_the_proxy_when_the_flag_is_absent_and_no_proxy_bypasses_it(
        server, http_proxy, variant, tmp_path) -> None:
    port = server.server_address[1]
    urls = [f"http://files.test:{port}/files/e.bin?size=100"]
    env = clean_env(variant, http_proxy=http_proxy.url("http"))
    proxied = run(variant, [write_list(tmp_path, urls), "-o", str(tmp_path / "a")], env)
    assert proxied.returncode == 0, proxied.stderr
    assert sum(http_proxy.requests.values()) == 1

    direct = run(variant, [write_list(tmp_path, [server.url("/files/d.bin?size=100")], "direct.txt"),
                           "-o", str(tmp_path / "b")], {**env, "no_proxy": "127.0.0.1"})
    assert direct.returncode == 0, direct.stderr
    assert sum(http_proxy.requests.values()) == 1 and server.stats.requests["/files/d.bin"] == 1

    flag = run(variant, [write_list(tmp_path, urls, "flag.txt"), "-o", str(tmp_path / "c"), "--proxy",
                         "http://127.0.0.1:9"], env)  # the flag wins over the environment: nothing there
    assert flag.returncode == 1
    assert sum(http_proxy.requests.values()) == 1


@pytest.mark.parametrize("variant", [Variant("thread"), pytest.param(Variant("thread", flags=("--client", "curl")),
                                                                       marks=NEEDS_PYCURL)], ids=lambda v: v.id)
def test_a_wrong_proxy_password_fails_the_urls_and_is_never_shown(server, http_proxy, socks_proxy, variant,
                                                                 tmp_path, out) -> None:
    url = f"http://files.test:{server.server_address[1]}/files/w.bin?size=100"
    wrong = "WrongPassw0rd"
    for proxy, scheme in ((http_proxy, "http"), (socks_proxy, "socks5h")):
        folder = os.path.join(out, scheme)
        done = run(variant, [write_list(tmp_path, [url]), "-o", folder, "--retries", "0",
                             "--proxy", f"{scheme}://{USER}:{wrong}@127.0.0.1:{proxy.port}"])
        assert done.returncode == 1, done.stderr
        assert proxy.refused >= 1
        [record] = read_manifest(os.path.join(folder, "manifest.jsonl"))
        assert record["status"] == "failed"
        assert wrong not in done.stdout + done.stderr + all_files_text(folder)
    assert server.stats.requests["/files/w.bin"] == 0


@pytest.mark.skipif(not HAVE_PROC, reason="reads command lines from /proc")
def test_serve_ships_the_proxy_to_workers_through_the_broker(server, http_proxy, tmp_path) -> None:
    port = server.server_address[1]
    urls = [f"http://files.test:{port}/files/w{i}.bin?size=500" for i in range(4)]
    urls.append(f"http://files.test:{port}/slow/slow.bin?delay=1&size=10")
    out, worker_out = str(tmp_path / "srv"), str(tmp_path / "worker")
    cluster = Cluster(tmp_path)
    try:
        srv = cluster.serve(write_list(tmp_path, urls), out, "-q", "--proxy", proxy_file(tmp_path, http_proxy.url("http")))
        worker = cluster.work(srv.address, worker_out, "--backend", "process", "--pool", "2")
        wait_until(lambda: server.stats.active >= 1, what="the slow download")
        running = "".join(command_line(pid) for pid in [srv.proc.pid, worker.proc.pid,
                                                         *descendants(worker.proc.pid)])
        assert srv.wait() == 0 and worker.wait() == 0
        records = manifest(out)
        assert [r["status"] for r in records.values()] == ["ok"] * 5
        assert sum(http_proxy.requests.values()) == 5
        assert "fetcher" in running and PASSWORD not in running
        assert PASSWORD not in srv.text() + worker.text() + all_files_text(out) + all_files_text(worker_out)
    finally:
        cluster.close()


@pytest.mark.parametrize("value, message", [
    ("ftp://u:Secret99@h:1", "must start with one of http://, https://, socks5://, socks5h://"),
    ("127.0.0.1:3128", "must start with one of"),
    ("http://u:Secret99@h:99999", "port of 1 to 65535"),
    ("http://u:Secret99@h:1/path", "nothing after the port"),
])
def test_a_bad_proxy_is_one_line_exit_2_without_its_password(value, message, tmp_path) -> None:
    done = run_cli(Variant("thread"), [write_list(tmp_path, ["http://127.0.0.1:9/x"]), "-o", str(tmp_path / "o"),
                                       "--proxy", value])
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Secret99" not in done.stderr


@pytest.fixture
def certificate(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A self-signed certificate for 127.0.0.1 (key and certificate in one file), made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    path = tmp_path / "proxy.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(path), "-out",
                    str(tmp_path / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    path.write_text(path.read_text() + (tmp_path / "cert.pem").read_text())
    return str(path)


def test_an_https_proxy_is_spoken_to_over_tls_and_its_certificate_checked_on_every_pair(server, certificate, pair,
                                                                                       tmp_path) -> None:
    variant = pair
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate)
    proxy = HttpProxy((USER, PASSWORD), tls=context).start()
    try:
        urls = [f"http://files.test:{server.server_address[1]}/files/t{i}.bin?size=100" for i in range(2)]
        args = [write_list(tmp_path, urls), "-o", str(tmp_path / "ok"), "--retries", "0", "--proxy",
                proxy_file(tmp_path, proxy.url("https"))]
        trusted = run(variant, args, clean_env(variant, REQUESTS_CA_BUNDLE=certificate, CURL_CA_BUNDLE=certificate))
        assert trusted.returncode == 0, trusted.stderr
        assert sum(proxy.requests.values()) == 2 and proxy.refused == 0
        assert PASSWORD not in trusted.stdout + trusted.stderr + all_files_text(str(tmp_path / "ok"))
        args[2] = str(tmp_path / "untrusted")
        untrusted = run(variant, args)  # the system's roots do not know this certificate
        assert untrusted.returncode == 1
        assert sum(proxy.requests.values()) == 2
    finally:
        proxy.stop()


def test_a_proxy_without_a_port_gets_curls_default() -> None:
    from fetcher.options import Options

    assert Options.create(proxy="socks5h://h").transport.proxy == "socks5h://h:1080"
    assert Options.create(proxy="https://u:p@h").transport.proxy == "https://u:p@h:443"
    assert "p@h" not in repr(Options.create(proxy="http://u:p@h:3128"))


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace") + "\n"
    except OSError:
        return ""


def all_files_text(root: str) -> str:
    """Every file under ``root``, as text (the journal's SQLite files included)."""
    text = ""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                text += handle.read().decode("latin-1")
    return text
