"""One record of an input file, as every reader yields it (readers.py, parquet.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    """One record of an input file.

    Attributes:
        line: 1-based line number (for a CSV record spanning lines, its last line).
        fields: column or key → value as read (strings for txt/CSV, any JSON value for JSONL).
        error: why the row cannot be used, or None.
        raw: the row's text, shown in the manifest when it has no usable url.
        length: for a line too long to be read, its whole length in bytes (``raw`` holds its start).
        url_line: whether the line was meant as a URL (a plain list's), so that a line no URL can
            be fails as ``invalid-url``; a CSV/TSV/JSONL row that cannot be read is ``invalid-input``.
    """

    line: int
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    raw: str = ""
    length: int = 0
    url_line: bool = False
