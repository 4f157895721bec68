"""docs/testing.md's commands run: the property-based one (with the quick ``smoke`` profile in place
of ``long``), and the mutation script as far as its usage check (mutmut itself is too slow for CI)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from docblocks import ROOT, blocks

COMMANDS = [line for block in blocks("docs/testing.md") if block.lang == "sh"
            for line in block.code.splitlines() if line.strip()]


def test_every_file_the_page_names_exists():
    for line in COMMANDS:
        for word in shlex.split(line):
            if word.startswith(("tests/", "fetcher/")):
                assert os.path.exists(os.path.join(ROOT, word)), f"{word} (in: {line})"


def test_the_property_command_runs():
    [line] = [line for line in COMMANDS if "FETCHER_HYPOTHESIS_PROFILE=long" in line]
    words = shlex.split(line)
    env = {**os.environ, "FETCHER_HYPOTHESIS_PROFILE": "smoke"}
    argv = [sys.executable if w == ".venv/bin/python" else w for w in words[1:]]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "passing, 0 failing" in done.stdout  # --hypothesis-show-statistics: the cases per test


def test_the_mutation_script_is_well_formed():
    script = os.path.join(ROOT, "tests", "mutation.sh")
    assert subprocess.run(["bash", "-n", script], timeout=30).returncode == 0
    done = subprocess.run([script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr
    assert any(line.startswith("tests/mutation.sh fetcher/") for line in COMMANDS)
