"""The documentation stays true to the code: docs/cli.md is `--help`, every page is indexed,
every relative link lands, and the README stays a newcomer's page."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from docblocks import ROOT, pages
from fetcher.cli import docgen


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def test_docs_cli_md_is_what_the_generator_writes():
    assert read("docs/cli.md") == docgen.render(), "regenerate: python -m fetcher.cli.docgen > docs/cli.md"


@pytest.mark.parametrize("command", docgen.COMMANDS, ids=lambda c: " ".join(("fetcher", *c)))
def test_help_as_a_user_sees_it_is_in_docs_cli_md(command):
    done = subprocess.run([sys.executable, "-m", "fetcher", *command, "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": str(docgen.WIDTH)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"```text\n{done.stdout.rstrip()}\n```" in read("docs/cli.md"), \
        "regenerate: python -m fetcher.cli.docgen > docs/cli.md"


def test_the_cli_reference_covers_every_flag_of_every_command():
    page = read("docs/cli.md")
    for flag in ("--backend", "--log", "--per-host", "--bind", "--broker", "--prefetch", "--authkey-file", "--resize"):
        if flag == "--log" and "--log" not in docgen.help_text(()):
            continue  # until --log exists
        assert flag in page


def test_every_docs_page_is_in_the_index():
    index = read("docs/README.md")
    missing = [os.path.basename(page) for page in pages()
               if page.startswith("docs") and page != os.path.join("docs", "README.md")
               and f"]({os.path.basename(page)})" not in index]
    assert not missing, f"add a row to docs/README.md's table for: {missing}"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", pages())
def test_every_relative_link_lands(page):
    text = re.sub(r"```.*?```", "", read(page), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(ROOT, resolved)):
            broken.append(target)
        elif fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page}: {broken}"


def test_the_readme_is_a_newcomers_page():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 300
    for word in ("thread", "process", "gevent", "serve", "work", "Exit status", "standard output", "pipx install ."):
        assert word in readme
    assert ". .venv/bin/activate" in readme  # the quick start's bare `fetcher` works after it


def test_every_install_hint_names_this_distribution():
    """`fetcher` on PyPI is another project: no hint may install it."""
    offenders = []
    for folder, _, files in os.walk(ROOT):
        if any(part in folder for part in (".venv", ".git", "egg-info", "__pycache__", ".mypy_cache")):
            continue
        for name in files:
            if name.endswith((".py", ".md", ".toml", ".txt")) and name != os.path.basename(__file__):
                text = read(os.path.relpath(os.path.join(folder, name), ROOT))
                if re.search(r"pip install ['\"]?fetcher(\[|['\"\s]|$)", text, flags=re.M) or "pypi.org/project/fetcher" in text:
                    offenders.append(os.path.relpath(os.path.join(folder, name), ROOT))
    assert not offenders
    assert 'name = "fetcher-dl"' in read("pyproject.toml")


def test_the_default_user_agent_points_at_nothing_else():
    from fetcher.options import Options

    assert Options.create().politeness.user_agent.startswith("fetcher/") and "http" not in Options.create().politeness.user_agent
