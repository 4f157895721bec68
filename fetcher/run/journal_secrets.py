"""Journals written before credentials were masked (issue 18): found, not fetched again, and scrubbed.

Earlier journals keyed each row by the raw URL, password included, and kept
final URLs and messages as they came. On the first read-write open, each row
that may hold a credential is re-keyed by ``UrlKeys`` and its texts masked, in
one transaction, with SQLite's ``secure_delete`` on so the old text is
overwritten rather than left in free pages. ``PRAGMA user_version`` records
that it was done, so later opens cost one pragma read. A rerun then finds
every such row under its new key: nothing is fetched twice.
"""

from __future__ import annotations

import json
import sqlite3

from fetcher.redact import UrlKeys, mask, mask_extra, mask_optional

MASKED_VERSION = 1  # PRAGMA user_version of a journal whose rows hold no credential


def mask_legacy_rows(db: sqlite3.Connection, keys: UrlKeys) -> int:
    """Re-key and mask the rows of an older journal; return how many changed (0 when already done)."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= MASKED_VERSION:
        return 0
    db.execute("PRAGMA secure_delete = ON")
    changed = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute("SELECT url, final_url, error_message, extra FROM urls WHERE url LIKE '%@%' "
                          "OR final_url LIKE '%@%' OR error_message LIKE '%@%' OR extra LIKE '%@%'").fetchall()
        for url, final_url, message, extra in rows:
            masked = (keys.key(url), mask_optional(final_url), mask_optional(message), _masked_json(extra))
            if masked != (url, final_url, message, extra):
                db.execute("UPDATE OR REPLACE urls SET url = ?, final_url = ?, error_message = ?, extra = ? "
                           "WHERE url = ?", (*masked, url))
                changed += 1
        db.execute(f"PRAGMA user_version = {MASKED_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if changed:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the old pages leave the WAL file too
    return changed


def _masked_json(extra: str | None) -> str | None:
    if not extra or "@" not in extra:
        return extra
    try:
        value = json.loads(extra)
    except ValueError:
        return mask(extra)
    return json.dumps(mask_extra(value)) if isinstance(value, dict) else extra
