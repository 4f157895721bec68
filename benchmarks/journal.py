"""Journal benchmarks (issue 4): memory on a 1M-URL list, time to first request, journal overhead.

    python benchmarks/journal.py            # 1,000,000 URLs and 10,000 files
    python benchmarks/journal.py --quick    # 200,000 URLs and 3,000 files

Prints numbers, asserts nothing. Three measurements:

1. Peak RSS of the coordinating process over a whole 1M-URL list: the real
   pipeline (reader, journal, resume, scheduler, engine, collector, manifest)
   with a backend that answers instantly, so what is measured is fetcher's own
   bookkeeping, not the network. Run in a child process so its peak is its own.
2. Seconds from starting ``fetcher`` on that list to the first request reaching
   a real loopback server.
3. Journal overhead: the same 10,000 small downloads from the loopback server
   with and without the journal (medians of 3), wall and CPU time.

Downloads go to a fresh tmpfs when it can be mounted (root), else a temp folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def write_list(path: str, base: str, count: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"{base}/files/img{i}.jpg?size=2000\n")


def memory_child(list_path: str, out: str) -> None:
    """Runs in a child: the full pipeline over the list with an instant backend; prints its peak RSS."""
    from fetcher.backends.base import Backend
    from fetcher.run.runner import Report, Workers, plan, run_to_end
    from fetcher.models import Result, Status, FetchTask
    from fetcher.options import Options
    from fetcher.run.progress import Progress
    from fetcher.sources.readers import read_rows
    from fetcher.sources.tasks import iter_rows

    class InstantBackend(Backend):
        """Answers every task at once with an ok Result, as a server that answers instantly would."""

        name = "instant"

        def _start(self) -> None:
            pass

        def submit(self, task: FetchTask) -> None:
            self._deliver(Result(url=task.url, status=Status.OK, path=task.name, bytes=2000,
                                 sha256="0" * 64, http_status=200, attempts=task.attempt, index=task.index))

        def shutdown(self, cancel: bool = False) -> None:
            pass

    options = Options.create(out=out, pool=64)
    started = time.perf_counter()
    items = iter_rows(read_rows(list_path), dedupe=False)
    report = Report(Progress(None, enabled=False), quiet=True)
    summary = run_to_end(plan(options, report, workers=Workers(backend_factory=InstantBackend)), items)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{summary.ok} {elapsed:.1f} {peak_mib:.1f}")


def measure_memory(list_path: str, out: str) -> tuple[int, float, float]:
    done = subprocess.run([sys.executable, __file__, "--memory-child", list_path, out],
                          capture_output=True, text=True, check=True, timeout=1800)
    ok, elapsed, peak = done.stdout.split()
    return int(ok), float(elapsed), float(peak)


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "server.py")],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    return server, f"http://127.0.0.1:{port}"


def first_request_seconds(base: str, list_path: str, out: str) -> float:
    """Start the CLI on the big list; time until the server has seen a request."""
    import json
    import urllib.request

    def served() -> int:
        with urllib.request.urlopen(base + "/_stats") as reply:
            counts = json.load(reply)["requests"]
        return sum(n for path, n in counts.items() if path != "/_stats")

    before = served()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fetcher", list_path, "-o", out, "-q"], cwd=ROOT)
    try:
        while served() <= before:
            if time.perf_counter() - started > 60:
                return float("nan")
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        proc.kill()
        proc.wait()


def download_once(list_path: str, out: str, journal: bool) -> tuple[float, float]:
    """(wall s, CPU s) of one run of the small-file list, in a child process."""
    code = (
        "import sys, time, resource\n"
        "from fetcher.options import Options\n"
        "from fetcher.run.runner import Folder, Report, plan, run_to_end\n"
        "from fetcher.run.progress import Progress\n"
        "from fetcher.sources.readers import read_rows\n"
        "from fetcher.sources.tasks import iter_rows\n"
        f"o = Options.create(out={out!r}, pool=8)\n"
        "t = time.perf_counter()\n"
        f"spec = plan(o, Report(Progress(None, False), quiet=True), Folder() if {journal} else None)\n"
        f"s = run_to_end(spec, iter_rows(read_rows({list_path!r}), dedupe=not {journal}))\n"
        "wall = time.perf_counter() - t\n"
        "r = resource.getrusage(resource.RUSAGE_SELF)\n"
        "assert s.failed == 0, s\n"
        "print(wall, r.ru_utime + r.ru_stime)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


def fresh_folder(parent: str) -> str:
    """A new tmpfs mount when possible: deletes on the root filesystem slow the next run."""
    path = tempfile.mkdtemp(dir=parent)
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", path],
                                            capture_output=True).returncode == 0:
        return path
    return path


def release(path: str) -> None:
    subprocess.run(["umount", path], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    big = 200_000 if args.quick else 1_000_000
    small = 3_000 if args.quick else 10_000
    work = tempfile.mkdtemp(prefix="fetcher-bench-")
    server, base = start_server()
    try:
        big_list = os.path.join(work, "big.txt")
        write_list(big_list, base, big)
        folder = fresh_folder(work)
        ok, elapsed, peak = measure_memory(big_list, os.path.join(folder, "out"))
        print(f"{big:,} URLs through the full pipeline (instant backend): {ok:,} recorded in {elapsed:.1f} s, "
              f"peak RSS {peak:.0f} MiB")
        release(folder)
        folder = fresh_folder(work)
        first = first_request_seconds(base, big_list, os.path.join(folder, "out"))
        print(f"first request of a {big:,}-line list reached the server {first:.2f} s after start")
        release(folder)
        small_list = os.path.join(work, "small.txt")
        write_list(small_list, base, small)
        rows: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(3):
            for journal in (False, True):
                folder = fresh_folder(work)
                rows[journal].append(download_once(small_list, os.path.join(folder, "out"), journal))
                release(folder)
        for journal in (False, True):
            wall = statistics.median(w for w, _ in rows[journal])
            cpu = statistics.median(c for _, c in rows[journal])
            print(f"{small:,} small files, journal {'on ' if journal else 'off'}: median {wall:.2f} s wall "
                  f"({small / wall:.0f} files/s), {cpu:.2f} s CPU")
        off = statistics.median(w for w, _ in rows[False])
        on = statistics.median(w for w, _ in rows[True])
        off_cpu = statistics.median(c for _, c in rows[False])
        on_cpu = statistics.median(c for _, c in rows[True])
        print(f"journal overhead: {100 * (on - off) / off:+.1f}% wall, {100 * (on_cpu - off_cpu) / off_cpu:+.1f}% CPU")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
