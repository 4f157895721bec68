"""benchmarks/wan.py keeps what each run leaves, so a lost URL can be traced (issue 27)."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import wan  # noqa: E402


def test_a_run_keeps_its_streams_manifest_and_the_urls_it_lost(tmp_path) -> None:
    out, tmp, keep = tmp_path / "out", tmp_path / "tmp", tmp_path / "keep"
    (out / "h1.test").mkdir(parents=True)
    tmp.mkdir()
    (out / "h1.test" / "f00001-abc.bin").write_bytes(b"x" * 10)
    (out / "h1.test" / "f00002-abc.bin").write_bytes(b"x" * 3)  # cut short: not saved
    urls = ["https://h1.test/f00001.bin", "https://h1.test/f00002.bin", "https://h2.test/f00003.bin"]
    records = [{"url": urls[1], "status": "failed", "error": {"kind": "truncated", "message": "body ended early"}}]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp / "stderr").write_text("fetcher: 1 failed\n")

    saved = wan.saved_keys(str(out), {"f00001": 10, "f00002": 10, "f00003": 10})
    lost = wan.keep_run(str(keep / wan.slug("80 ms") / wan.slug("fetcher (default)")), str(out), str(tmp), urls, saved)

    assert saved == {"f00001"} and lost == 2
    folder = keep / "80-ms" / "fetcher-default"
    assert (folder / "stderr").read_text() == "fetcher: 1 failed\n" and (folder / "manifest.jsonl").exists()
    assert (folder / "lost.txt").read_text().splitlines() == [
        f"{urls[1]}\tfailed truncated: body ended early", f"{urls[2]}\tno record"]


def test_dns_queries_are_shown_per_host() -> None:
    assert wan.per_host(1068, 500) == "1068 (2.14/host)"


class _Clock:
    """A stand-in event loop for the relay: the time is set by hand, ``call_at`` only noted."""

    def __init__(self) -> None:
        self.now, self.calls = 10.0, []  # type: ignore[var-annotated]

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback, *args) -> None:  # type: ignore[no-untyped-def]
        self.calls.append((when, args))


def test_a_loss_on_one_connection_stalls_that_connection_only() -> None:
    import wan_relay

    clock = _Clock()
    relay = wan_relay.Relay(clock, ("127.0.0.1", 1), rtt=0.1, loss=1.0, mbit=8)  # type: ignore[arg-type]
    lossy, other = (wan_relay.Half(relay, relay.down, opened=0.0) for _ in range(2))
    lossy.data_received(b"a" * 1000)  # lost: held back max(RTT, 200 ms) more
    relay.loss = 0.0
    other.data_received(b"b" * 1000)  # same link, a moment later, not lost
    lossy.data_received(b"c" * 1000)  # the lossy connection's next chunk waits behind its stall
    (stalled, _), (clean, _), (behind, _) = clock.calls

    link = 1000 / 1e6  # 1,000 bytes at 8 Mbit/s
    assert abs(stalled - (10 + link + 0.05 + 0.2)) < 1e-9
    assert abs(clean - (10 + 2 * link + 0.05)) < 1e-9  # only the link's queue, not the other's stall
    assert behind > stalled


def test_the_tail_is_the_time_nginx_took_for_the_last_hundredth() -> None:
    lines = [f"{i} . HTTP/2.0 200 {1000 + i / 100:.3f} 0.010 h1.test" for i in range(99)]
    lines.append("99 . HTTP/2.0 200 1003.000 0.010 h1.test")  # a retry long after the rest
    assert abs(wan.last_share_s(lines) - (1003.0 - 1000.98)) < 1e-6  # type: ignore[operator]
    assert wan.last_share_s(["1 . HTTP/1.1 200"]) is None  # an older log format: no times


def test_rounds_report_each_tool_s_median_run() -> None:
    runs = [["fetcher (default)", "333", "2000/2000"], ["fetcher (default) (exit 1)", "269", "1999/2000"],
            ["fetcher (default)", "301", "2000/2000"]]
    row = wan.median_row(runs)
    assert row[1:] == ["301", "2000/2000"]
    assert row[0] == "fetcher (default) [median of 3: 333, 269, 301 files/s; lost 0, 1, 0]"
    assert wan.median_row(runs[:1]) == runs[0]  # one round: the row as it was
    assert wan.median_row(runs[:2])[1] == "269"  # an even count: the lower middle
    assert wan.median_row([runs[0], runs[2]])[0] == "fetcher (default) [median of 2: 333, 301 files/s]"
