"""The package's shape stays within the limits issue 25 set (figures: tests/code_figures.py).

An exception is named here with its reason, so that a new one is a decision, not a drift.
"""

from __future__ import annotations

from code_figures import class_fields, function_lines, import_cycles, module_lines, parameters

MAX_FIELDS, MAX_PARAMETERS, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 20, 8, 350, 60

# fetch() and Fetcher() keep every public keyword they had (the CLI's flags come as **settings);
# AsyncFetcher() takes the same ones, with the same names and defaults (issue 28).
PUBLIC_SIGNATURES = {"fetcher.api fetch", "fetcher.api __init__", "fetcher.aio __init__"}
# attempt.py: one URL's attempt, step by step; the perf helper (issue 29) is working in it this session.
LONG_MODULES = {"fetcher.download.attempt"}


def _name(key: str) -> str:
    module, _, rest = key.partition(":")
    return f"{module} {rest.split(' ', 1)[1]}"


def test_no_class_holds_more_than_20_fields() -> None:
    assert {k: v for k, v in class_fields().items() if v > MAX_FIELDS} == {}


def test_no_def_takes_more_than_8_parameters() -> None:
    over = {k: v for k, v in parameters().items() if v > MAX_PARAMETERS and _name(k) not in PUBLIC_SIGNATURES}
    assert over == {}


def test_no_module_is_longer_than_350_lines() -> None:
    assert {k: v for k, v in module_lines().items() if v > MAX_MODULE_LINES and k not in LONG_MODULES} == {}


def test_no_function_is_longer_than_60_lines() -> None:
    assert {k: v for k, v in function_lines().items() if v > MAX_FUNCTION_LINES} == {}


def test_no_import_cycle_outside_type_checking() -> None:
    assert import_cycles() == []
