"""Every code block of README.md and docs/*.md runs in this suite.

- ``python`` blocks run as written, in a subprocess in a fresh folder, with
  ``https://example.com`` pointed at the loopback test server (tests/test_readme_examples.py
  checks what the named ones print).
- Every ``fetcher`` command in a shell block (no language, ``sh``, ``bash``, ``console``) goes
  through the real argument parser: a flag that does not exist, or a bad value, fails here.
- README.md's recipes run in bash, in order, in one folder, against a local list
  (test_the_readme_recipes_run_as_written).

``text`` blocks are output or synopses, not commands (docs/cli.md's are checked against
``--help`` by tests/test_docs.py). A page added to docs/ is picked up without a change here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from docblocks import ROOT, SHELL, Block, all_blocks, fetcher_commands
from fetcher.cli.main import main

# A block marked <!-- stand-in: NAME --> needs a library the tests do not install (Scrapy,
# Playwright): tests/test_async_docs.py runs each against stand-ins of the calls it makes.
PYTHON_BLOCKS = [block for block in all_blocks()
                 if block.lang == "python" and not block.marker.startswith("stand-in:")]
SHELL_BLOCKS = [block for block in all_blocks() if block.lang in SHELL]
COMMANDS = [(block, argv) for block in SHELL_BLOCKS for argv in fetcher_commands(block)]
KNOWN_LANGS = {"python", "text", *SHELL}


class Parsed(BaseException):
    """Raised from parse_args once the arguments parsed: the command goes no further."""


def parses(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[bool, str]:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
            status = main(argv)
    except Parsed:
        return True, ""
    return status == 0, printed.getvalue()  # 0: --help or --version


def test_every_block_has_a_known_language():
    unknown = [f"{block.where}: ```{block.lang}" for block in all_blocks() if block.lang not in KNOWN_LANGS]
    assert not unknown, f"use python, text or a shell block: {unknown}"


def test_the_shell_blocks_hold_fetcher_commands():
    assert len(COMMANDS) > 30
    assert {argv[0] for _, argv in COMMANDS if argv} >= {"status", "serve", "work"}


@pytest.mark.parametrize(("block", "argv"), COMMANDS, ids=[f"{b.where}:{' '.join(a)[:40]}" for b, a in COMMANDS])
def test_every_fetcher_command_in_the_docs_parses(block: Block, argv: list[str], monkeypatch):
    ok, said = parses(argv, monkeypatch)
    assert ok, f"{block.where}: fetcher {' '.join(argv)}\n{said}"


def test_a_flag_that_does_not_exist_is_caught(monkeypatch):
    assert parses(["urls.txt", "-o", "out"], monkeypatch)[0]
    assert parses(["serve", "urls.txt", "--bind", "127.0.0.1:0"], monkeypatch)[0]
    assert not parses(["urls.txt", "--no-such-flag"], monkeypatch)[0]
    assert not parses(["work", "127.0.0.1:8001", "--pool", "zero"], monkeypatch)[0]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_every_python_block_runs(block: Block, server, tmp_path):
    code = block.code.replace("https://example.com", server.base_url)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, f"{block.where}\n{done.stderr}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def readme_recipes(port: int) -> str:
    """README.md's shell blocks as one script: the install lines keep only their fetcher part."""
    script = []
    for block in SHELL_BLOCKS:
        if block.path != "README.md" or block.lang == "console" or block.marker == "dataset-example":
            continue  # the dataset example has its own test (test_datasets_shards.py)
        code = block.code
        if "pip install" in code or "pipx" in code or "pytest" in code:  # installs: what CI does itself
            code = "".join(f"fetcher {' '.join(map(repr, argv))}\n" for argv in fetcher_commands(block))
        script.append(f"echo '=== {block.where}'\n{code.replace('127.0.0.1:8001', f'127.0.0.1:{port}')}")
    return "\n".join(script)


def test_the_readme_recipes_run_as_written(server, tmp_path):
    good = [server.url(f"/files/pic{i}.jpg?type=image/jpeg") for i in range(6)]
    (tmp_path / "urls.txt").write_text("# a local list\n" + "\n".join([*good, server.url("/status/404")]) + "\n")
    (tmp_path / "sample_urls.txt").write_text("\n".join(good) + "\n")
    script = ('python3() { "$PY" "$@"; }\n'
              'fetcher() { "$PY" -m fetcher "$@"; local rc=$?; echo "$rc" >> "$CODES"; return $rc; }\n'
              + readme_recipes(free_port()))
    codes = tmp_path / "codes.txt"
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PY": sys.executable, "CODES": str(codes), "PYTHONPATH": ROOT})
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a serve left behind by a failed recipe
    assert "Traceback" not in err and "error:" not in err, err
    statuses = [int(line) for line in codes.read_text().split()]
    assert len(statuses) >= 14 and set(statuses) <= {0, 1}, (statuses, err)
    assert (tmp_path / "named" / "logos" / "python.png").stat().st_size == 1000
    assert '"status": "failed"' in out and "/status/404" in out  # the "what failed" recipe
    records = [json.loads(line) for line in (tmp_path / "results" / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 7 and all(record["worker"] for record in records if record["status"] == "ok")
    assert "7 URLs" in out  # fetcher status -o results
