"""The delayed-ACK stall on keep-alive connections (issue 23, item 12), fetcher beside curl -Z.

The origin is Python's own ThreadingHTTPServer with ``protocol_version = "HTTP/1.1"``
(keep-alive): ``end_headers()`` writes the headers, then ``wfile.write(body)`` the body,
two writes. Under Nagle the server holds the body until the headers are acknowledged,
and on a reused connection the client's kernel delays that ACK by up to 40 ms. A client
that reuses connections pays ~40 ms per request unless it acknowledges at once
(fetcher/transports/curl/quickack.py). The wall time here is dominated by those stalls,
not by CPU, so it means something even on a loaded machine; the CPU (user + sys of the
client process tree) and the load average are printed beside it.

    python benchmarks/keepalive_stall.py [--files 400] [--pool 8] [--repeat 1]

Every tool gets the same list in one run, interleaved per repetition; each run's files
are counted afterwards. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ORIGIN = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        size = int(self.path.rsplit("-", 1)[1].split(".")[0])
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(size))
        self.end_headers()            # write 1: the headers
        self.wfile.write(b"x" * size)  # write 2: the body

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


def tools(python: str, pool: int) -> list[tuple[str, list[str], dict[str, str]]]:
    fetcher = [python, "-m", "fetcher", "urls.txt", "-q", "--pool", str(pool), "-o", "out"]
    off = {"FETCHER_QUICKACK": "0"}
    return [
        ("fetcher (default: multi + curl)", fetcher, {}),
        ("fetcher (default), quick ACK off", fetcher, off),
        ("fetcher --backend thread (+ curl)", [*fetcher, "--backend", "thread"], {}),
        ("fetcher --backend thread, quick ACK off", [*fetcher, "--backend", "thread"], off),
        ("fetcher --backend process --client curl", [*fetcher, "--backend", "process", "--client", "curl"], {}),
        ("fetcher --backend thread --client requests", [*fetcher, "--backend", "thread", "--client", "requests"],
         {}),
        ("curl -Z --parallel-max POOL", ["curl", "-sS", "-Z", "--parallel-max", str(pool), "--create-dirs",
                                         "-K", "curl.cfg"], {}),
    ]


def run_one(argv: list[str], env: dict[str, str], folder: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the children, files saved."""
    shutil.rmtree(os.path.join(folder, "out"), ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(argv, cwd=folder, env={**os.environ, **env}, check=False, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    saved = sum(len([n for n in names if n.endswith(".jpg")])
                for where, _, names in os.walk(os.path.join(folder, "out")) if ".fetcher" not in where)
    return wall, cpu, saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="keepalive-stall-")
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN], stdout=subprocess.PIPE, text=True)
    try:
        port = int(origin.stdout.readline())  # type: ignore[union-attr]
        rng = random.Random(1)
        urls = [f"http://127.0.0.1:{port}/f{i}-{rng.randint(2048, 61440)}.jpg" for i in range(args.files)]
        with open(os.path.join(folder, "urls.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(urls) + "\n")
        with open(os.path.join(folder, "curl.cfg"), "w", encoding="utf-8") as handle:
            handle.writelines(f'url = "{url}"\noutput = "out/{i}.jpg"\n' for i, url in enumerate(urls))
        print(f"# {args.files} files of 2-60 KiB, pool {args.pool}, origin: http.server HTTP/1.1 (two writes); "
              f"load average before: {os.getloadavg()[0]:.2f}")
        print("| tool | wall s | ms / file | CPU s | files saved |\n|---|--:|--:|--:|--:|")
        for _ in range(args.repeat):
            for name, argv, env in tools(sys.executable, args.pool):
                wall, cpu, saved = run_one(argv, env, folder)
                print(f"| {name.replace('POOL', str(args.pool))} | {wall:.2f} | {1000 * wall / args.files:.1f} | "
                      f"{cpu:.2f} | {saved} |", flush=True)
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
    finally:
        origin.kill()
        origin.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
