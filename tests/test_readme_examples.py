"""The Python examples of README.md and docs/python-api.md print what they say, against the loopback server.

(tests/test_docs_examples.py runs every block of every page; here the named ones' output is checked.)"""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def examples() -> dict[str, str]:
    found = {}
    for page in (README, os.path.join(ROOT, "docs", "python-api.md")):
        with open(page, encoding="utf-8") as handle:
            text = handle.read()
        found.update(re.findall(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", text, flags=re.S))
    return found


def run_example(name: str, server, tmp_path, monkeypatch) -> str:
    code = examples()[name].replace("https://example.com", server.base_url)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"README.md:{name}", "exec"), {"__name__": "__readme__"})  # noqa: S102
    return printed.getvalue()


def test_the_pages_have_the_four_examples():
    assert set(examples()) == {"readme", "plain-list", "crawler", "in-memory"}


def test_readme(server, tmp_path, monkeypatch):
    printed = run_example("readme", server, tmp_path, monkeypatch)
    lines = sorted(printed.splitlines())
    assert lines[0].startswith("failed ") and "/status/404 http-status HTTP 404" in lines[0]
    assert lines[1].startswith("saved ") and lines[1].endswith(".jpg 1000")
    assert (tmp_path / "downloads" / lines[1].split()[1]).stat().st_size == 1000


def test_plain_list(server, tmp_path, monkeypatch):
    printed = run_example("plain-list", server, tmp_path, monkeypatch)
    lines = sorted(printed.splitlines())
    assert len(lines) == 3
    assert any(line.startswith("birds/owl.jpg 1000 {'id': 42}") for line in lines)
    assert (tmp_path / "downloads" / "birds" / "owl.jpg").stat().st_size == 1000
    assert (tmp_path / "downloads" / "manifest.jsonl").exists()


def test_crawler(server, tmp_path, monkeypatch):
    printed = run_example("crawler", server, tmp_path, monkeypatch)
    assert printed.strip() == "12 images saved"  # 4 pages x 3 images; the cycle back to page 0 is not followed
    assert server.stats.requests["/gallery/0"] == 1
    assert sum(1 for p in (tmp_path / "images").rglob("*.png")) == 12


def test_in_memory(server, tmp_path, monkeypatch):
    printed = run_example("in-memory", server, tmp_path, monkeypatch)
    assert printed.strip() == "Bearer my-token"
    assert not any(p for p in tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("name", ["readme", "plain-list", "crawler", "in-memory"])
def test_examples_import_only_public_names(name):
    imported = re.findall(r"from fetcher(?:\.\w+)? import ([\w, ]+)", examples()[name])
    for names in imported:
        assert set(n.strip() for n in names.split(",")) <= {"fetch", "Fetcher", "Task", "Result"}


def test_ci_runs_the_readme_test_command_as_written():
    with open(README, encoding="utf-8") as handle:
        section = handle.read().split("Run the tests", 1)[1]
    command = re.search(r"```\n(.*?)\n```", section, flags=re.S).group(1).strip()  # type: ignore[union-attr]
    with open(os.path.join(os.path.dirname(README), ".ci", "run"), encoding="utf-8") as handle:
        steps = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert steps[-1] == command
