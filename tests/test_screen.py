"""What a person sees on a terminal (issue 23, item 8): a Ctrl-C'd bar stays where it stopped,
and no line is ever glued to the bar (serve's banner)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time


class Terminal:
    """A command on a pseudo-terminal, its screen output collected as bytes."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str] | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a new pty is 0 x 0
        self.master, self.output = master, b""
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True,
                                     env={**os.environ, "COLUMNS": "100", "LINES": "30", **(env or {})})
        os.close(slave)

    def read_until(self, pattern: str, seconds: float = 30.0) -> str:
        deadline = time.monotonic() + seconds
        while not re.search(pattern, self.text):
            assert time.monotonic() < deadline, f"no {pattern!r} in {self.text!r}"
            self._read(0.2)
        return self.text

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # a failed test: never leave the command running
            self.proc.kill()
            self.proc.wait(timeout=30)
            os.close(self.master)

    def finish(self, seconds: float = 30.0) -> int:
        deadline = time.monotonic() + seconds
        while self.proc.poll() is None or self._read(0.1):
            assert time.monotonic() < deadline, self.text
        os.close(self.master)
        return self.proc.returncode

    def _read(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        self.output += chunk
        return bool(chunk)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def segments(self) -> list[str]:
        """What was drawn, cut wherever the cursor went back to the line's start."""
        return [s.strip() for s in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", self.text)) if s.strip()]


def test_a_ctrl_c_leaves_the_bar_where_it_stopped(server, tmp_path):
    urls = [server.url(f"/files/f{i}.jpg") for i in range(3)] + [server.url(f"/slow/s{i}.jpg?delay=30")
                                                                for i in range(4)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    with Terminal([sys.executable, "-m", "fetcher", "urls.txt", "--backend", "thread", "-o", "out"],
                  str(tmp_path)) as term:
        term.read_until(r"3/7 \[")  # drawn even though nothing comes after the first three
        time.sleep(0.5)  # a refresh or two of the bar at 3/7
        term.proc.send_signal(signal.SIGINT)
        assert term.finish() == 130
    bars = [s for s in term.segments() if "file/s" in s or "file [" in s]
    assert bars and "3/7" in bars[-1] and "43%" in bars[-1], bars[-3:]
    assert not any("100%" in bar or "3/3" in bar or "7/7" in bar for bar in bars), bars
    assert "Interrupted after 3 URLs" in term.text


def test_serve_prints_its_banner_above_the_bar(server, tmp_path):
    (tmp_path / "urls.txt").write_text("\n".join(server.url(f"/files/b{i}.jpg") for i in range(5)) + "\n")
    with Terminal([sys.executable, "-m", "fetcher", "serve", "urls.txt", "--bind", "127.0.0.1:0", "-o", "out"],
                  str(tmp_path), env={"FETCHER_AUTHKEY": "0123456789abcdef0123456789abcdef"}) as term:
        term.read_until(r"start workers with the same key: fetcher work 127\.0\.0\.1:\d+ -o DIR")
        time.sleep(0.5)
        term.proc.send_signal(signal.SIGINT)
        assert term.finish() == 130
    lines = term.segments()
    said = [line for line in lines if "fetcher serve:" in line]
    assert len(said) >= 2 and all(line.startswith("fetcher serve:") for line in said), lines
    assert all("file/s" not in line for line in said), said
    assert any(re.match(r"^\s*0%\|.*\| 0/5 \[", line) for line in lines), lines  # the bar, on its own line
