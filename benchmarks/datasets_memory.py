"""Peak memory of a dataset run over a parquet of a million rows: does anything grow with the list?

    python benchmarks/datasets_memory.py [--rows 1000000] [--backend process] [--client curl]

Writes a parquet of ``--rows`` rows shaped like LAION's (URL, TEXT, WIDTH, HEIGHT,
similarity, in row groups of 100,000), every URL distinct and answered by nginx
on 127.0.0.1 with a fast 404 (so the run measures what grows with the number of
rows: the parquet reader, the journal, the scheduler, the manifest, the shard
writer), then runs fetcher on it with the dataset flags on (--verify-image,
--resize 256, webdataset output) and reports the peak RSS of the whole process
tree, sampled every 20 ms (benchmarks/bench_measure.py), and how many records the
manifest holds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_measure import become_subreaper, run_measured  # noqa: E402
from bench_nginx import Nginx  # noqa: E402

TIMEOUT_S = 3600
GROUP_ROWS = 100_000


def write_parquet(path: str, base_url: str, rows: int) -> None:
    """``rows`` rows in row groups of GROUP_ROWS, written a group at a time (this script stays small too)."""
    import pyarrow
    import pyarrow.parquet

    writer = None
    try:
        for start in range(0, rows, GROUP_ROWS):
            ids = range(start, min(rows, start + GROUP_ROWS))
            table = pyarrow.table({
                "URL": [f"{base_url}/missing/{i:08d}.jpg" for i in ids],
                "TEXT": [f"a photo of thing number {i}, taken somewhere nice" for i in ids],
                "WIDTH": [640 + i % 100 for i in ids], "HEIGHT": [480 + i % 50 for i in ids],
                "similarity": [0.3 + (i % 1000) / 10_000 for i in ids],
            })
            writer = writer or pyarrow.parquet.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", default="process")
    parser.add_argument("--client", default="curl")
    parser.add_argument("--pool", type=int, default=32)
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = parser.parse_args()
    become_subreaper()
    work = tempfile.mkdtemp(prefix="fetcher-datasets-memory-")
    os.makedirs(os.path.join(work, "www"))
    nginx = Nginx(args.nginx, web_root=os.path.join(work, "www"), root=os.path.join(work, "nginx"))
    try:
        nginx.start()
        parquet = os.path.join(work, "rows.parquet")
        write_parquet(parquet, nginx.base_url, args.rows)
        out = os.path.join(work, "out")
        argv = [sys.executable, "-m", "fetcher", parquet, "-o", out, "-q", "--backend", args.backend,
                "--client", args.client, "--pool", str(args.pool), "--per-host", "0", "--retries", "0",
                "--caption-column", "TEXT", "--verify-image", "--resize", "256", "--output-format", "webdataset"]
        measured = run_measured(argv, cwd=work, env=dict(os.environ), timeout_s=TIMEOUT_S,
                                stdout_path=os.path.join(work, "stdout"), stderr_path=os.path.join(work, "stderr"))
        with open(os.path.join(out, "manifest.jsonl"), "rb") as handle:
            records = sum(1 for _ in handle)
        print(f"rows {args.rows:,}, backend {args.backend}, client {args.client}, pool {args.pool}: exit "
              f"{measured.exit_code}, {records:,} records, {measured.wall_s:.0f} s, CPU {measured.cpu_s:.0f} s, "
              f"peak RSS of the process tree {measured.peak_rss / 2**20:.0f} MiB")
        if measured.exit_code not in (0, 1):
            print(measured.stderr_tail)
    finally:
        nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
