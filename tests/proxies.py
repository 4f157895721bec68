"""Proxies for the tests, on 127.0.0.1, written with stdlib sockets: an HTTP forward proxy and a SOCKS5 server.

Both count what passes through them, and both resolve names themselves: a host ending in
``.test`` is 127.0.0.1 to them and to nobody else, so a URL on such a host can only be
fetched through them (that is how a test tells a proxied request from a direct one).

- ``HttpProxy``: absolute-form requests (``GET http://host:port/path``), forwarded one by one
  over an upstream connection per client connection, and ``CONNECT`` tunnels; with
  ``credentials``, a request without the right ``Proxy-Authorization`` gets 407.
- ``Socks5Proxy``: RFC 1928 ``CONNECT`` with IPv4, IPv6 or a domain name (what ``socks5h``
  sends), and RFC 1929 user/password authentication when ``credentials`` are set.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import ssl
import struct
import threading
from collections import Counter
from typing import Any

LOCAL_SUFFIX = ".test"


def resolve(host: str) -> str:
    """The proxies' own DNS: ``*.test`` is 127.0.0.1; anything else as the system resolves it."""
    if host.endswith(LOCAL_SUFFIX):
        return "127.0.0.1"
    return socket.gethostbyname(host)


def pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until ``source`` ends, then end ``sink``'s writing side."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client: socket.socket, upstream: socket.socket) -> None:
    """Both directions until both ends are done (a tunnel)."""
    other = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    other.start()
    pipe(client, upstream)
    other.join(30)


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler], credentials: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.credentials = credentials
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: Counter[str] = Counter()  # HTTP: request targets; SOCKS: "host:port" asked for
        self.refused = 0  # wrong or missing credentials
        self.kinds: Counter[str] = Counter()  # SOCKS: "ipv4" | "domain" | "ipv6"; HTTP: "forward" | "connect"
        self._thread: threading.Thread | None = None

    def count(self, **what: str) -> None:
        with self.lock:
            for field, value in what.items():
                getattr(self, field)[value] += 1

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> _Proxy:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def url(self, scheme: str) -> str:
        if self.credentials is None:
            return f"{scheme}://127.0.0.1:{self.port}"
        user, password = self.credentials
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}"


class _HttpHandler(socketserver.BaseRequestHandler):
    server: HttpProxy

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        client = self.request
        reader = client.makefile("rb")
        upstream: socket.socket | None = None
        try:
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                method, target, headers = head
                if not self._authorised(headers):
                    with self.server.lock:
                        self.server.refused += 1
                    client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                   b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                    continue
                if method == "CONNECT":
                    self.server.count(requests=target, kinds="connect")
                    host, _, port = target.rpartition(":")
                    upstream = socket.create_connection((resolve(host), int(port)), timeout=30)
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    relay(client, upstream)
                    return
                self.server.count(requests=target, kinds="forward")
                upstream = upstream or self._connect(target)
                _forward(method, target, headers, upstream, client)
        except OSError:
            return
        finally:
            if upstream is not None:
                upstream.close()

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.server.credentials is None:
            return True
        user, password = self.server.credentials
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return headers.get("proxy-authorization") == expected

    @staticmethod
    def _connect(target: str) -> socket.socket:
        netloc = target.split("/", 3)[2]
        host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "80")
        return socket.create_connection((resolve(host), int(port)), timeout=30)


def _read_head(reader) -> tuple[str, str, dict[str, str]] | None:  # type: ignore[no-untyped-def]
    line = reader.readline(65536)
    if not line.strip():
        return None
    method, target, _version = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (field := reader.readline(65536)) not in (b"\r\n", b"\n", b""):
        name, _, value = field.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _forward(method: str, target: str, headers: dict[str, str], upstream: socket.socket,
             client: socket.socket) -> None:
    """One absolute-form request, sent upstream in origin form; the response relayed back whole."""
    path = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    lines = [f"{method} {path} HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.items()
                                            if not name.startswith("proxy-")]
    upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    reader = upstream.makefile("rb")
    status = reader.readline(65536)
    response = [status]
    length = None
    while (field := reader.readline(65536)) not in (b"\r\n", b"\n", b""):
        response.append(field)
        name, _, value = field.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    response.append(b"\r\n")
    client.sendall(b"".join(response))
    if length is None:  # the test server's routes used through it all send a length
        raise OSError("no Content-Length")
    while length > 0:
        data = reader.read1(min(length, 65536))
        if not data:
            raise OSError("upstream ended early")
        client.sendall(data)
        length -= len(data)


class HttpProxy(_Proxy):
    """An HTTP forward proxy on 127.0.0.1 (see the module docstring); with ``tls``, an ``https://`` one."""

    def __init__(self, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(_HttpHandler, credentials)
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock.settimeout(10)
            sock = self.tls.wrap_socket(sock, server_side=True)  # the handshake, before a handler thread
            sock.settimeout(None)
        return sock, address


class _SocksHandler(socketserver.BaseRequestHandler):
    server: Socks5Proxy

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        client = self.request
        try:
            if not self._greet(client):
                return
            version, command, _reserved, kind = _exact(client, 4)
            if version != 5 or command != 1:  # CONNECT only
                client.sendall(b"\x05\x07\x00\x01" + bytes(6))
                return
            host, label = self._address(client, kind)
            port = struct.unpack("!H", _exact(client, 2))[0]
            self.server.count(requests=f"{host}:{port}", kinds=label)
            try:
                upstream = socket.create_connection((resolve(host), port), timeout=30)
            except OSError:
                client.sendall(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
                return
            with upstream:
                bound_host, bound_port = upstream.getsockname()[:2]
                client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(bound_host) + struct.pack("!H", bound_port))
                relay(client, upstream)
        except (OSError, ValueError):
            return

    def _greet(self, client: socket.socket) -> bool:
        version, count = _exact(client, 2)
        methods = _exact(client, count)
        if version != 5:
            return False
        wanted = 0 if self.server.credentials is None else 2
        if wanted not in methods:
            client.sendall(b"\x05\xff")
            return False
        client.sendall(bytes([5, wanted]))
        if wanted == 0:
            return True
        _sub, user_length = _exact(client, 2)
        user = _exact(client, user_length).decode()
        password = _exact(client, _exact(client, 1)[0]).decode()
        if (user, password) != self.server.credentials:
            with self.server.lock:
                self.server.refused += 1
            client.sendall(b"\x01\x01")
            return False
        client.sendall(b"\x01\x00")
        return True

    @staticmethod
    def _address(client: socket.socket, kind: int) -> tuple[str, str]:
        if kind == 1:
            return socket.inet_ntoa(_exact(client, 4)), "ipv4"
        if kind == 4:
            return socket.inet_ntop(socket.AF_INET6, _exact(client, 16)), "ipv6"
        if kind == 3:
            return _exact(client, _exact(client, 1)[0]).decode("ascii"), "domain"
        raise ValueError(f"address type {kind}")


def _exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        more = sock.recv(count - len(data))
        if not more:
            raise OSError("client went away")
        data += more
    return data


class Socks5Proxy(_Proxy):
    """A SOCKS5 server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(_SocksHandler, credentials)
