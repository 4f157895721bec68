"""One "is this CI?" rule for the whole test suite: tests/ci.py. Three rules that disagreed
(CI=true only; CI=1/true/yes; any non-empty CI, even "false") made a missing tool skip in
one CI and fail in another."""

from __future__ import annotations

import os
import re

import pytest

import ci

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_no_test_module_reads_the_ci_variable_itself():
    pattern = re.compile(r"""environ(?:\.get)?\(?\[?\s*["']CI["']""")
    offenders = []
    for name in sorted(os.listdir(TESTS)):
        if name.endswith(".py") and name not in ("ci.py", "test_ci_rule.py"):
            with open(os.path.join(TESTS, name), encoding="utf-8") as handle:
                if pattern.search(handle.read()):
                    offenders.append(name)
    assert offenders == [], "use ci.in_ci() / ci.missing() instead"


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("YES", True), (" true ", True),
                                                 ("false", False), ("0", False), ("", False), (None, False)])
def test_the_rule(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert ci.in_ci() is expected
