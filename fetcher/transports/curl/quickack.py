"""ACK a response's headers at once: no 40 ms stall per request on a reused connection.

An HTTP/1.1 server that writes a response's headers and its body in two writes
(Python's http.server does, so do many small servers) holds the body back under
Nagle's algorithm until the headers are acknowledged, and on a reused connection the
client's kernel delays that ACK by up to 40 ms (Linux's delayed ACK in "ping-pong"
mode: the connection looks interactive). Every request then waits ~40 ms whatever
the network: 400 files of 2-60 KiB over 8 connections took 2.7 s instead of 0.4
(benchmarks/keepalive_stall.py; curl --parallel pays it too).

Setting TCP_QUICKACK on a socket sends an ACK the kernel is holding back, and it does
not stick (the next request puts the connection back in ping-pong mode), so it is set
when each response's status line arrives, on the connection that carries it. libcurl
does not say which socket a transfer uses while it runs (pycurl refuses getinfo() inside
a callback), so: every socket libcurl opens is noted (SOCKOPTFUNCTION), and the
PREREQFUNCTION, called for each request on its connection, names the connection's local
port, which finds the socket. Linux only; elsewhere nothing is set.
"""

from __future__ import annotations

import os
import socket
import threading

import pycurl

TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
# FETCHER_QUICKACK=0 turns it off, for benchmarks/keepalive_stall.py's "before" row.
ENABLED = (TCP_QUICKACK is not None and hasattr(pycurl, "PREREQFUNCTION")
           and os.environ.get("FETCHER_QUICKACK", "1") != "0")

_lock = threading.Lock()
_unknown: set[int] = set()  # sockets opened whose local port is not looked up yet
_by_port: dict[int, int] = {}  # local port -> socket
_port_of: dict[int, int] = {}  # socket -> local port


def on_socket(fd: int, purpose: int) -> int:
    """libcurl's SOCKOPTFUNCTION: note a socket it just created (an earlier one with the same number is gone)."""
    with _lock:
        old = _port_of.pop(fd, None)
        if old is not None and _by_port.get(old) == fd:
            del _by_port[old]
        _unknown.add(fd)
    return int(pycurl.SOCKOPT_OK)


def socket_for(local_port: int) -> int | None:
    """The socket whose local port is ``local_port`` (the connection a request is about to use)."""
    with _lock:
        fd = _by_port.get(local_port)
        if fd is None and _unknown:
            for candidate in list(_unknown):
                port = _local_port(candidate)
                if port is None:
                    continue  # not connected yet
                _unknown.discard(candidate)
                _port_of[candidate], _by_port[port] = port, candidate
            fd = _by_port.get(local_port)
        return fd


def quick_ack(fd: int) -> None:
    """Have the kernel send now the ACK it holds back on socket ``fd`` (Linux's TCP_QUICKACK)."""
    if TCP_QUICKACK is None:
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # closed meanwhile, or not a socket
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
    except OSError:
        pass
    finally:
        sock.detach()  # the descriptor is libcurl's: never closed here


def _local_port(fd: int) -> int | None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        address = sock.getsockname()
    except OSError:
        return None
    finally:
        sock.detach()
    return int(address[1]) if isinstance(address, tuple) and address[1] else None
