"""The one rule the tests use for "is this CI?", and what a missing tool then means.

CI sets ``CI=true`` (GitHub Actions, GitLab, most others); ``1`` and ``yes`` count too, in
any case. A test that needs something the machine lacks (redis-server, strace, root for a
tmpfs) skips on a developer's machine and fails under CI: CI must never skip it silently.
test_ci_rule.py keeps every test module on this one rule.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Skip for ``reason`` on a developer's machine; fail under CI, where the test must run."""
    if in_ci():
        pytest.fail(f"{reason} (CI must run this test, not skip it)")
    pytest.skip(reason)
