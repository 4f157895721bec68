"""The wire: a ``multiprocessing.managers`` server for the Coordinator, and a client with deadlines.

Server side, the stdlib manager ``Server`` does the work (authkey challenge in
each connection's own thread, one thread per connection, pickled calls),
with two changes: ``serve_forever`` is not used (it calls ``sys.exit``), and
the accept loop can be stopped.

Client side, BaseManager proxies are not used: they cache connections per
address in ``BaseProxy._address_to_local``, so after a server restart even new
proxies fail with ``BrokenPipeError`` (CPython #86320, #87495, #78947), and they
block forever in ``recv()`` on a silent network. ``Link`` speaks the same wire
protocol (``create`` once, ``accept_connection``, then ``(ident, method, args,
kwds)`` requests) over its own socket, with a deadline on every call, and a
broken Link is simply thrown away for a fresh one.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import socket
import struct
import threading
import time
from multiprocessing import AuthenticationError, connection
from multiprocessing.managers import BaseManager, Server
from collections.abc import Iterator
from typing import Any

from fetcher.errors import ConfigError, FetcherError

MAX_MESSAGE = 1 << 30


class LinkError(FetcherError):
    """The server could not be reached, or a call did not complete in time; try again later."""


class AuthError(ConfigError):
    """The server rejected the authkey (or this side rejected the server's)."""


# -- server ------------------------------------------------------------------------------


def _same(obj: Any) -> Any:
    return obj


class RpcServer(Server):
    """A manager Server that serves one object as ``"coordinator"`` until ``stop()``.

    Args:
        obj: the object whose ``exposed`` methods workers may call.
        address: ``(host, port)``; port 0 picks a free one (see ``bound``).
        authkey: the shared key; a client must prove it knows it.
    """

    listener: connection.Listener  # made by Server.__init__

    def __init__(self, obj: object, address: tuple[str, int], authkey: bytes, exposed: tuple[str, ...]) -> None:
        manager: type[BaseManager] = type("CoordinatorManager", (BaseManager,), {})  # a registry of its own
        manager.register("coordinator", callable=functools.partial(_same, obj), exposed=exposed)
        super().__init__(manager._registry, address, authkey, "pickle")  # type: ignore[attr-defined]
        host, port = self.listener.address
        self.bound: tuple[str, int] = (str(host), int(port))  # the real port when asked for 0
        # serve_client loops while stop_event is unset; serve_forever would make it. It is never
        # set here: a serving thread that saw it set between two requests would end by sending
        # one more ("#RETURN", None), which the client would read as the answer to its next call.
        # Connections end instead when stop() shuts their sockets down.
        self.stop_event = threading.Event()
        self.public = ["create", "accept_connection"]  # all Link uses; not "shutdown", which sets stop_event
        self._stopping = threading.Event()
        self._conns: set[connection.Connection] = set()
        self._conns_lock = threading.Lock()
        self._thread = threading.Thread(target=self.accepter, name="fetcher-rpc-accept", daemon=True)

    def start(self) -> RpcServer:
        self._thread.start()
        return self

    def accepter(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self.listener.accept()
            except OSError:
                time.sleep(0.01)  # e.g. out of file descriptors: the stdlib loop would spin
                continue
            if self._stopping.is_set():
                conn.close()
                return
            _tune(conn.fileno(), keepalive=True)
            with self._conns_lock:
                self._conns.add(conn)
            threading.Thread(target=self.handle_request, args=(conn,), daemon=True).start()

    def handle_request(self, conn: connection.Connection) -> None:
        try:
            super().handle_request(conn)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)

    def stop(self) -> None:
        """Stop accepting and hang up on every connected client."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # wake the accepter, blocked in accept(): closing would not
            socket.create_connection(_loopback(self.bound), timeout=1).close()
        self._thread.join(2)
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn.fileno())  # the serving thread's recv() returns EOF and it exits
        self.listener.close()


def _loopback(address: tuple[str, int]) -> tuple[str, int]:
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
    return host, address[1]


def _tune(fd: int, keepalive: bool = False) -> None:
    """TCP_NODELAY (a request and its reply are small writes) and keepalive on a raw socket fd."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:  # a worker host that vanished frees its server thread within minutes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
                if hasattr(socket, name):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass
    finally:
        sock.detach()


def _shutdown(fd: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


# -- client ------------------------------------------------------------------------------


class _Channel:
    """``multiprocessing.connection`` framing over a socket whose every call has a deadline.

    ``send_bytes``/``recv_bytes`` are all ``answer_challenge`` needs, so the stdlib's
    authkey handshake runs over it unchanged.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = 0.0

    def _timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def send_bytes(self, data: bytes) -> None:
        self._sock.settimeout(self._timeout())
        self._sock.sendall(struct.pack("!i", len(data)) + data)

    def recv_bytes(self, maxsize: int | None = None) -> bytes:
        size = struct.unpack("!i", self._read(4))[0]
        if size == -1:
            size = struct.unpack("!Q", self._read(8))[0]
        if size < 0 or size > (maxsize or MAX_MESSAGE):
            raise OSError(f"bad message length {size}")
        return self._read(size)

    def _read(self, size: int) -> bytes:
        chunks, remaining = [], size
        while remaining:
            self._sock.settimeout(self._timeout())
            chunk = self._sock.recv(min(remaining, 1 << 20))
            if not chunk:
                raise EOFError("the server closed the connection")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def request(self, message: Any, timeout: float) -> Any:
        self.deadline = time.monotonic() + timeout
        self.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        kind, result = pickle.loads(self.recv_bytes())
        if kind == "#RETURN":
            return result
        if kind == "#ERROR" and isinstance(result, BaseException):
            raise result  # the coordinator raised: a bug on the server, not a network problem
        raise FetcherError(f"the server failed to answer: {result}")

    def close(self) -> None:
        self._sock.close()


def _open(address: tuple[str, int], authkey: bytes, timeout: float) -> _Channel:
    """Connect and run the authkey handshake (both ways), all within ``timeout``."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    channel = _Channel(sock)
    channel.deadline = time.monotonic() + timeout
    try:
        connection.answer_challenge(channel, authkey)  # type: ignore[arg-type]
        connection.deliver_challenge(channel, authkey)  # type: ignore[arg-type]
    except BaseException:
        channel.close()
        raise
    return channel


class Link:
    """One authenticated connection to a Coordinator; ``call`` has a deadline.

    A Link that failed (or was interrupted mid-call, leaving half a message on
    the wire) is ``broken``; make a new one.

    Raises (from the constructor and ``call``):
        AuthError: the server rejected the key.
        LinkError: no connection, a reset, or no answer within the deadline.
    """

    def __init__(self, address: tuple[str, int], authkey: bytes, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.broken = False
        with _translated(address, timeout):
            setup = _open(address, authkey, timeout)
            try:
                self._ident = setup.request((None, "create", ("coordinator",), {}), timeout)[0]
            finally:
                setup.close()
            self._channel = _open(address, authkey, timeout)
            try:
                self._channel.request((None, "accept_connection", ("fetcher-worker",), {}), timeout)
            except BaseException:
                self._channel.close()
                raise

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        if self.broken:
            raise LinkError("this link failed before; open a new one")
        self.broken = True  # until the reply is in: an interrupted call leaves the stream unusable
        try:
            with _translated(self.address, timeout or self.timeout):
                result = self._channel.request((self._ident, method, args, {}), timeout or self.timeout)
        except BaseException:
            self._channel.close()
            raise
        self.broken = False
        return result

    def close(self) -> None:
        self.broken = True
        self._channel.close()


@contextlib.contextmanager
def _translated(address: tuple[str, int], timeout: float) -> Iterator[None]:
    """Map socket, framing and handshake errors to LinkError/AuthError in one place."""
    where = f"{address[0]}:{address[1]}"
    try:
        yield
    except AuthenticationError:
        raise AuthError(f"the server at {where} rejected this authkey, or answered with another one: "
                        "use the server's key (FETCHER_AUTHKEY or --authkey-file)") from None
    except TimeoutError:
        raise LinkError(f"the server at {where} did not answer within {timeout:g} s") from None
    except (OSError, EOFError, pickle.UnpicklingError, struct.error) as exc:
        raise LinkError(f"no connection to the server at {where}: {exc or type(exc).__name__}") from None
    except AssertionError:  # answer_challenge asserts the greeting: not a fetcher server
        raise LinkError(f"{where} does not speak fetcher's protocol") from None
