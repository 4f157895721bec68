"""A delaying TCP relay: the WAN link of benchmarks/wan.py, in user space (this kernel has no netem).

Runs in the server namespace: accepts on the address the names resolve to and
relays each connection to nginx on 127.0.0.1. What it models, per connection:

- latency: every chunk read from one side is written to the other RTT/2 after
  it arrived, so a request-response costs one RTT;
- the TCP handshake: nothing is delivered before one RTT after the accept (the
  SYN/SYN-ACK round trip the kernel here does in microseconds), so the first
  bytes a client sends arrive at 1.5 RTT and their answer at 2 RTT, as on a WAN;
- loss: each chunk of n bytes is stalled, with the chance that one of its
  ceil(n / 1448) segments is lost at ``--loss``, by max(RTT, 200 ms) more (a
  fast retransmit or an RTO); later chunks of that connection's direction wait
  behind it (TCP delivers in order), other connections do not;
- bandwidth: one FIFO link per direction shared by every connection: a chunk
  leaves when the link has sent the ones before it at ``--mbit``.

What it does not: congestion control (slow start, the window shrinking after a
loss), the handshake's packets being lost, queueing delay of a router's buffer
beyond the FIFO, reordering. Each side's reads are paused while more than
``WINDOW`` bytes of its direction are held (a receive window), so memory stays
bounded and a slow reader slows its sender.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import socket

WINDOW = 1 << 20  # bytes held per direction of one connection before its reads pause
MSS = 1448


class Link:
    """One direction's shared bottleneck: the time it is free again."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.free_at = 0.0

    def send(self, now: float, nbytes: int) -> float:
        """The time ``nbytes`` offered at ``now`` have left the link."""
        if not self.bytes_per_s:
            return now
        self.free_at = max(self.free_at, now) + nbytes / self.bytes_per_s
        return self.free_at


class Half(asyncio.Protocol):
    """One side of a relayed connection; what it reads is written to ``peer`` after the delay."""

    def __init__(self, relay: Relay, link: Link, opened: float) -> None:
        self.relay, self.link, self.opened = relay, link, opened
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.held = 0
        self.last_due = 0.0
        self.paused = False
        self.closed_early = False
        self.undelivered: list[bytes] = []  # due before the peer (upstream) was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        relay, loop = self.relay, self.relay.loop
        # The shared link first (FIFO in arrival order), then the way across, then a loss stall:
        # a lost segment holds back only its own connection (TCP delivers in order per
        # connection), never the link. Stalling in the link's queue (as until issue 27) made one
        # connection's loss delay every connection's later chunks: a whole-link stall on about
        # every 200th segment, which no router does.
        start = max(loop.time(), self.opened + relay.rtt)
        due = self.link.send(start, len(data)) + relay.rtt / 2
        if relay.loss and random.random() < 1 - (1 - relay.loss) ** math.ceil(len(data) / MSS):
            due += max(relay.rtt, 0.2)
        due = max(due, self.last_due + 1e-6)  # in order within the connection
        self.last_due = due
        self.held += len(data)
        if self.held > WINDOW and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        loop.call_at(due, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        self.held -= len(data)
        peer = self.peer
        if peer is None:
            self.undelivered.append(data)
        elif peer.transport is not None and not peer.transport.is_closing():
            peer.transport.write(data)
        if self.paused and self.held <= WINDOW // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self._after_delay(self._close_peer)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._after_delay(self._close_peer)

    def _after_delay(self, callback: object) -> None:
        loop = self.relay.loop
        loop.call_at(max(loop.time(), self.last_due) + 1e-6, callback)  # type: ignore[arg-type]

    def _close_peer(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()
        elif peer is None:  # upstream not there yet (or never): it is closed when it comes
            self.closed_early = True


class Relay:
    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: tuple[str, int], rtt: float, loss: float,
                 mbit: float) -> None:
        self.loop, self.upstream, self.rtt, self.loss = loop, upstream, rtt, loss
        rate = mbit * 1e6 / 8
        self.down, self.up = Link(rate), Link(rate)  # server -> client, client -> server
        self.connections = 0

    def accepted(self) -> Half:
        """A client connected: its half now, the upstream half once connected."""
        self.connections += 1
        opened = self.loop.time()
        client = Half(self, self.up, opened)
        self.loop.create_task(self._connect(client, opened))
        return client

    async def _connect(self, client: Half, opened: float) -> None:
        try:
            _, server = await self.loop.create_connection(lambda: Half(self, self.down, opened), *self.upstream)
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        server.peer, client.peer = client, server  # type: ignore[assignment]
        for data in client.undelivered:
            server.transport.write(data)  # type: ignore[union-attr]
        client.undelivered.clear()
        if client.closed_early:
            server.transport.close()  # type: ignore[union-attr]


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    host, port = args.upstream.rsplit(":", 1)
    relay = Relay(loop, (host, int(port)), args.rtt_ms / 1000, args.loss, args.mbit)
    listen_host, listen_port = args.listen.rsplit(":", 1)
    sock = socket.create_server((listen_host, int(listen_port)), backlog=4096, reuse_port=False)
    server = await loop.create_server(relay.accepted, sock=sock)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: _write_stats(args.stats, relay))
    print("ready", flush=True)
    await stop.wait()
    server.close()
    _write_stats(args.stats, relay)


def _write_stats(path: str | None, relay: Relay) -> None:
    if path:
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(f"{relay.connections}\n")
        os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="share of segments lost, e.g. 0.005")
    parser.add_argument("--mbit", type=float, default=0.0, help="link bandwidth per direction (0: none)")
    parser.add_argument("--stats", help="file the connection count is written to on SIGUSR1 and at exit")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
