"""The manager broker's wire: ``multiprocessing.connection`` framing, an authkey handshake, deadlines.

Server side, a public ``multiprocessing.connection.Listener`` accepts; each
connection gets its own thread, which runs the handshake (with a deadline)
and then a small dispatcher: ``(method, args)`` in, ``("ok", value)`` or
``("error", text)`` out, for the methods in ``exposed`` only.

Client side, a ``Link`` is one authenticated ``Connection`` whose every call
has a deadline: ``poll(timeout)`` before each ``recv``, and SO_RCVTIMEO /
SO_SNDTIMEO on the socket, so neither a silent network nor half a message
blocks a read or a write for longer than the call's timeout. A Link that
failed is thrown away for a new one (reconnect = new connection).

The handshake is HMAC-SHA256 challenge-response in both directions over
``send_bytes``/``recv_bytes`` (the stdlib's own ``deliver_challenge`` is not
public API and cannot take a deadline). Calls are pickled: whoever holds the
key can run code on the other end; that is the manager mode's documented
trade-off (the Redis broker speaks JSON instead).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import pickle
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from multiprocessing import connection
from typing import Any

from fetcher.distributed.calls import WireError
from fetcher.distributed.dropped import Dropped
from fetcher.errors import AuthError, FetcherError, LinkError

log = logging.getLogger("fetcher.distributed")

MAX_MESSAGE = 64 << 20  # a complete() batch of 1,000 results is a few hundred KiB
GREETING = b"fetcher-rpc/2 "
REFUSED = b"#refused"
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_CLOSE_S = 600.0  # a connection silent this long (a vanished host) is closed by the server


def _digest(key: bytes, nonce: bytes, side: bytes) -> bytes:
    return hmac.new(key, side + nonce, "sha256").digest()


def _expect(conn: connection.Connection, timeout: float, limit: int = 256) -> bytes:
    """One message, or TimeoutError if none starts within ``timeout``."""
    if not conn.poll(timeout):
        raise TimeoutError("no answer within the deadline")
    return conn.recv_bytes(limit)


def _set_deadlines(conn: connection.Connection, timeout: float) -> None:
    """Bound every read and write syscall on the connection's socket to ``timeout`` seconds."""
    packed = struct.pack("ll", int(timeout), int((timeout % 1) * 1_000_000))
    sock = socket.socket(fileno=conn.fileno())
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, packed)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, packed)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request and its reply are small writes
    finally:
        sock.detach()


# -- server ------------------------------------------------------------------------------


class RpcServer:
    """Serves the ``exposed`` methods of one object until ``stop()``.

    Args:
        obj: the object whose methods workers may call.
        address: ``(host, port)``; port 0 picks a free one (see ``bound``).
        authkey: the shared key; a client must prove it knows it, and so must the server.
        exposed: the method names a client may call.
        check: ``(method, args)`` of an unpickled call, or WireError: the call is dropped (and counted
            in ``dropped``), never run.
    """

    def __init__(self, obj: object, address: tuple[str, int], authkey: bytes, exposed: tuple[str, ...],
                 check: Callable[[object], tuple[str, tuple[Any, ...]]] | None = None) -> None:
        self._methods: dict[str, Callable[..., Any]] = {name: getattr(obj, name) for name in exposed}
        self._check = check
        self.dropped = Dropped(log, "fetcher serve")
        self._key = authkey
        self._listener = connection.Listener(address, family="AF_INET", backlog=64)
        host, port = self._listener.address
        self.bound: tuple[str, int] = (str(host), int(port))  # the real port when asked for 0
        self._stopping = threading.Event()
        self._conns: set[connection.Connection] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="fetcher-rpc-accept", daemon=True)

    def start(self) -> RpcServer:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()  # no authkey here: the handshake runs in the connection's thread
            except OSError:
                if self._stopping.wait(0.01):  # e.g. out of file descriptors: do not spin
                    return
                continue
            if self._stopping.is_set():
                conn.close()
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="fetcher-rpc-conn", daemon=True).start()

    def _serve(self, conn: connection.Connection) -> None:
        try:
            _set_deadlines(conn, HANDSHAKE_TIMEOUT_S)
            if self._handshake(conn):
                _set_deadlines(conn, IDLE_CLOSE_S)
                while conn.poll(IDLE_CLOSE_S):
                    conn.send_bytes(self._dispatch(conn.recv_bytes(MAX_MESSAGE)))
        except (OSError, EOFError, TimeoutError):
            pass  # the client went away, or stalled: its thread ends, it will make a new connection
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _handshake(self, conn: connection.Connection) -> bool:
        nonce = secrets.token_bytes(32)
        conn.send_bytes(GREETING + nonce)
        answer = _expect(conn, HANDSHAKE_TIMEOUT_S)
        if not hmac.compare_digest(answer[:32], _digest(self._key, nonce, b"client")) or len(answer) != 64:
            self.dropped("a connection", "its handshake did not prove the authkey")
            conn.send_bytes(REFUSED)
            return False
        conn.send_bytes(_digest(self._key, answer[32:], b"server"))
        return True

    def _dispatch(self, request: bytes) -> bytes:
        try:
            method, args = self._call_of(request)
            function = self._methods.get(method)
            if function is None:
                reply: tuple[str, Any] = ("error", f"{method!r} is not in exposed methods")
            else:
                reply = ("ok", function(*args))
        except WireError as exc:  # dropped, and the caller told why
            reply = ("error", f"malformed call: {exc}")
        except Exception as exc:  # a bug on the server: answer it, keep serving
            reply = ("error", f"{type(exc).__name__}: {exc}")
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)

    def _call_of(self, request: bytes) -> tuple[str, tuple[Any, ...]]:
        """The call a message holds, checked; WireError (counted and logged) if it is not a call of ours."""
        try:
            try:
                call = pickle.loads(request)  # after the handshake: only key holders get here
            except Exception as exc:  # garbage bytes raise nearly anything from the unpickler
                raise WireError(f"not a pickled call ({type(exc).__name__})") from None
            if self._check is not None:
                return self._check(call)
            method, args = call
            return method, tuple(args)
        except WireError as exc:
            self.dropped(f"a call of {len(request)} bytes", exc)
            raise
        except (TypeError, ValueError) as exc:
            self.dropped(f"a call of {len(request)} bytes", exc)
            raise WireError(str(exc)) from None

    def stop(self) -> None:
        """Stop accepting and hang up on every connected client."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # wake the accept loop, blocked in accept(): closing would not
            socket.create_connection(_loopback(self.bound), timeout=1).close()
        self._thread.join(2)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)  # the serving thread's poll/recv returns EOF and it exits
        self._listener.close()


def _loopback(address: tuple[str, int]) -> tuple[str, int]:
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1"}.get(address[0], address[0])
    return host, address[1]


def _shutdown(conn: connection.Connection) -> None:
    try:
        sock = socket.socket(fileno=conn.fileno())
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


# -- client ------------------------------------------------------------------------------


def _connect(address: tuple[str, int], timeout: float) -> connection.Connection:
    """A Connection to ``address`` made within ``timeout``.

    ``connection.Client`` has no connect deadline (a cut network holds connect()
    for the kernel's SYN retries, about two minutes), so the socket is made here
    as its SocketClient makes it, with one, and handed to the documented
    Connection class.
    """
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(None)  # Connection reads with os.read: the fd must be blocking (SO_RCVTIMEO bounds it)
    conn = connection.Connection(sock.detach())
    _set_deadlines(conn, timeout)
    return conn


class Link:
    """One authenticated connection to an RpcServer; ``call`` has a deadline.

    A Link that failed (or was interrupted mid-call, leaving half a message on
    the wire) is ``broken``; make a new one.

    Raises (from the constructor and ``call``):
        AuthError: the server rejected the key, or proved it does not know it.
        LinkError: no connection, a reset, or no answer within the deadline.
    """

    def __init__(self, address: tuple[str, int], authkey: bytes, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.broken = False
        with _translated(address, timeout):
            self._conn = _connect(address, timeout)
            try:
                self._handshake(authkey)
            except BaseException:
                self._conn.close()
                raise

    def _handshake(self, key: bytes) -> None:
        greeting = _expect(self._conn, self.timeout)
        if not greeting.startswith(GREETING) or len(greeting) != len(GREETING) + 32:
            raise LinkError(f"{_where(self.address)} does not speak fetcher's protocol")
        nonce = secrets.token_bytes(32)
        self._conn.send_bytes(_digest(key, greeting[len(GREETING):], b"client") + nonce)
        proof = _expect(self._conn, self.timeout)
        if not hmac.compare_digest(proof, _digest(key, nonce, b"server")):
            raise AuthError(f"the server at {_where(self.address)} rejected this authkey, or answered with "
                            "another one: use the server's key (FETCHER_AUTHKEY or --authkey-file)")

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        if self.broken:
            raise LinkError("this link failed before; open a new one")
        self.broken = True  # until the reply is in: an interrupted call leaves the stream unusable
        deadline = timeout or self.timeout
        try:
            with _translated(self.address, deadline):
                self._conn.send_bytes(pickle.dumps((method, args), protocol=pickle.HIGHEST_PROTOCOL))
                kind, value = pickle.loads(_expect(self._conn, deadline, MAX_MESSAGE))
        except BaseException:
            self._conn.close()
            raise
        self.broken = False
        if kind == "ok":
            return value
        raise FetcherError(f"the server failed to answer {method}: {value}")  # a bug there, not the network

    def close(self) -> None:
        self.broken = True
        self._conn.close()


def _where(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


@contextlib.contextmanager
def _translated(address: tuple[str, int], timeout: float) -> Iterator[None]:
    """Map socket, framing and handshake errors to LinkError in one place."""
    try:
        yield
    except (LinkError, AuthError):
        raise
    except (TimeoutError, BlockingIOError):  # poll() ran out, or SO_RCVTIMEO/SO_SNDTIMEO fired mid-message
        raise LinkError(f"the server at {_where(address)} did not answer within {timeout:g} s") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise LinkError(f"no connection to the server at {_where(address)}: {exc or type(exc).__name__}") from None
