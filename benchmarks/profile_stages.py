#!/usr/bin/env python3
"""Split a cProfile of ``fetcher LIST`` into the per-file stages of docs/performance-budget.md.

    python -m cProfile -o prof.out -m fetcher LIST -o OUT --quiet
    python benchmarks/profile_stages.py prof.out FILES

cProfile's own cost inflates Python-heavy stages, so the shares are a guide; the
budget's absolute figures come from getrusage, perf and strace (profile_path.py).
"""

from __future__ import annotations

import pstats
import sys

# stage -> (function name, file suffix) whose inclusive time it is; "minus" stages subtract the listed ones.
STAGES = {
    "input: read, canonical URL, task, journal admit": [("next_ready", "scheduler.py")],
    "prepare: safety walk, meta look-up, Download": [("prepare", "attempt.py")],
    "start: request, easy handle options, add_handle": [("start", "multi.py")],
    "callbacks: head parse, .part open, body chunks, sha256": [("_on_write", "easy.py")],
    "socket callbacks (epoll_ctl)": [("on_socket", "sockets.py"), ("_on_timer", "multi.py")],
    "settle: checks, write(2), close, Result": [("settle", "attempt.py")],
    "flush: syncfs, renames, folder fsync": [("ready", "flusher.py")],
    "collector: journal, manifest, progress": [("record", "collector.py")],
}
LIBCURL = [("socket_action", "multi.py"), ("on_timeout", "multi.py")]  # libcurl + kernel, callbacks inside
WAIT = [("poll", "sockets.py")]


def inclusive(stats: dict, name: str, suffix: str) -> float:
    return sum(value[3] for (path, _, func), value in stats.items() if func == name and path.endswith(suffix))


def main() -> int:
    stats = pstats.Stats(sys.argv[1]).stats  # type: ignore[attr-defined]
    files = int(sys.argv[2])
    total = sum(value[2] for value in stats.values())
    rows = {stage: sum(inclusive(stats, *where) for where in wheres) for stage, wheres in STAGES.items()}
    callbacks = rows["callbacks: head parse, .part open, body chunks, sha256"] + rows["socket callbacks (epoll_ctl)"]
    rows["libcurl + kernel network (socket_action, minus callbacks)"] = (
        sum(inclusive(stats, *where) for where in LIBCURL) - callbacks)
    rows["epoll wait"] = sum(inclusive(stats, *where) for where in WAIT)
    rows["the rest: start-up, engine and backend loops"] = total - sum(rows.values())
    print(f"{'stage':60s} {'share':>6s} {'µs/file (profiled)':>20s}")
    for stage, seconds in rows.items():
        print(f"{stage:60s} {seconds / total:6.1%} {seconds / files * 1e6:20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
