"""Write docs/cli.md from the commands' own ``--help``: ``python -m fetcher.cli.docgen > docs/cli.md``.

The text is what ``fetcher [SUBCOMMAND] --help`` prints, taken by running the CLI itself, so
the page follows the parsers whatever builds them; tests/test_docs.py fails when the page and
``--help`` disagree. The width is fixed (``COLUMNS``) so the page does not depend on the
terminal it was made in.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator

WIDTH = 100
COMMANDS: tuple[tuple[str, ...], ...] = ((), ("status",), ("serve",), ("work",))

HEADER = """\
# Command-line reference

Generated from the parsers by `python -m fetcher.cli.docgen > docs/cli.md`: each section is
exactly what `fetcher ... --help` prints (at {width} columns). tests/test_docs.py fails when
this page and `--help` disagree, so regenerate it after changing a flag. The flags are
explained with examples in [usage.md](usage.md), [input-output.md](input-output.md),
[datasets.md](datasets.md) and [distributed.md](distributed.md).

Sizes (`--max-size`, `--min-size`, `--min-speed`) take a number of bytes with an optional
`K`, `M`, `G` or `T` suffix in powers of 1024 (`500K`, `10M`, `1G`).
"""


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse's HelpFormatter reads it (shutil.get_terminal_size)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def help_text(command: tuple[str, ...], width: int = WIDTH) -> str:
    """What ``fetcher *command --help`` prints, at ``width`` columns."""
    from fetcher.cli.main import main

    printed = io.StringIO()
    with _columns(width), contextlib.redirect_stdout(printed):
        status = main([*command, "--help"])
    if status != 0:
        raise RuntimeError(f"fetcher {' '.join(command)} --help exited {status}")
    return printed.getvalue()


def render(width: int = WIDTH) -> str:
    """The whole of docs/cli.md."""
    parts = [HEADER.format(width=width)]
    for command in COMMANDS:
        name = " ".join(("fetcher", *command))
        parts.append(f"## `{name}`\n\n```text\n{help_text(command, width).rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
