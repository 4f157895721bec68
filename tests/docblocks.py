"""The code blocks of README.md and docs/*.md, and the ``fetcher`` commands inside shell blocks.

Used by tests/test_docs_examples.py (every block runs or is parsed) and tests/test_docs.py.
A block is a fenced block (```LANG ... ```), at any indentation; the line just before its
fence may hold a marker comment (``<!-- example: NAME -->``, ``<!-- dataset-example -->``).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import textwrap
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL = ("", "sh", "bash", "shell", "console")
FETCHER = ("fetcher", ".venv/bin/fetcher")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str  # the comment before the fence, "" if none
    code: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def pages() -> list[str]:
    """README.md and every docs/*.md, relative to the repository."""
    found = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return ["README.md", *found]


def blocks(path: str) -> list[Block]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    found, index = [], 0
    while index < len(lines):
        opening = re.match(r"^(\s*)```(\w*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        indent, lang, start = opening.group(1), opening.group(2), index
        index += 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        before = lines[start - 1].strip() if start else ""
        marker = before[4:-3].strip() if before.startswith("<!--") and before.endswith("-->") else ""
        code = textwrap.dedent("\n".join(body)) + "\n" if indent or body else ""
        found.append(Block(path, start + 1, lang, marker, textwrap.dedent("\n".join(body)) + "\n"))
        index += 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def logical_lines(code: str, console: bool = False) -> list[str]:
    """Lines joined at trailing backslashes; for a console block only the ``$ `` lines."""
    joined: list[str] = []
    pending = ""
    for raw in code.split("\n"):
        if console and not pending:
            if not raw.startswith("$ "):
                continue
            raw = raw[2:]
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        joined.append(pending + raw)
        pending = ""
    return [line for line in joined if line.strip()]


def segments(line: str) -> list[str]:
    """A shell line cut at unquoted ``|``, ``;``, ``&`` and ``&&``, without its comment."""
    parts, current, quote, depth, index = [], [], "", 0, 0
    while index < len(line):
        char = line[index]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif line.startswith("$(", index):
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0 and char == "#" and (index == 0 or line[index - 1].isspace()):
            break
        elif depth == 0 and char in "|;&":
            parts.append("".join(current))
            current = []
            while index + 1 < len(line) and line[index + 1] in "|&":
                index += 1
            index += 1
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def fetcher_argv(segment: str) -> list[str] | None:
    """The arguments of a ``fetcher`` command (``python -m fetcher`` too), or None for another."""
    segment = re.sub(r"(^|\s)\d*(>>?|<)(&\d+|\s*[^\s|;&]+)", " ", segment)  # redirections
    try:
        words = shlex.split(segment)
    except ValueError:
        return None
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words[:1] and words[0] in FETCHER:
        return words[1:]
    if len(words) >= 3 and words[0].startswith("python") and words[1:3] == ["-m", "fetcher"]:
        return words[3:]
    return None


def fetcher_commands(block: Block) -> list[list[str]]:
    """Every ``fetcher`` command of a shell block, as argv."""
    found = []
    for line in logical_lines(block.code, console=block.lang == "console"):
        for segment in segments(line):
            argv = fetcher_argv(segment)
            if argv is not None:
                found.append(argv)
    return found
