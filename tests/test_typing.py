"""The package type-checks under mypy --strict (the API ships py.typed)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_strict_is_clean():
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "fetcher"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
