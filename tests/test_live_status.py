"""`fetcher status -o DIR` on a run that is still going (issue 23, item 4)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

from fetcher.cli.main import main


def status(out: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["status", "-o", out]) == 0
    return printed.getvalue()


def wait_for(check, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def live_done(out: str) -> int:
    try:
        with open(os.path.join(out, ".fetcher", "live.json"), encoding="utf-8") as handle:
            return int(json.load(handle)["ok"])
    except (OSError, ValueError):
        return -1


def test_status_of_a_live_run_then_of_a_killed_one(server, tmp_path):
    urls = [server.url(f"/files/fast{i}.jpg") for i in range(3)] + [server.url(f"/slow/s{i}.jpg?delay=30")
                                                                   for i in range(4)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    out = str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-m", "fetcher", str(tmp_path / "urls.txt"), "-o", out, "--backend",
                             "thread", "--pool", "8", "-q"], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: live_done(out) == 3)
        shown = status(out)
        assert f"is running (pid {proc.pid})." in shown, shown
        assert "so far: 3 URLs done of about 7 input lines (3 ok, 0 failed, 0 skipped)" in shown, shown
        assert "did not finish" not in shown and "had read" not in shown
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    shown = status(out)  # the lock went with the process: a live.json left behind is not believed
    assert "did not finish (interrupted or killed)." in shown and "running" not in shown, shown


def test_status_after_a_finished_run_is_as_before(server, tmp_path):
    (tmp_path / "urls.txt").write_text(server.url("/files/one.jpg") + "\n")
    out = str(tmp_path / "out")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(tmp_path / "urls.txt"), "-o", out, "-q"]) == 0
    shown = status(out)
    assert "1 URL: 1 ok, 0 failed, 0 pending" in shown and "and finished." in shown
    assert not os.path.exists(os.path.join(out, ".fetcher", "live.json"))
