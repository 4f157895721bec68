"""A line no URL can be: shown by its first 200 characters and its length, with the kind the
docs give it (issue 23, item 9)."""

from __future__ import annotations

import contextlib
import io
import json

from fetcher.cli.main import main


def run(path: str, out: str) -> tuple[int, str, list[dict]]:
    printed = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(printed):
        status = main([path, "-o", out])
    with open(f"{out}/manifest.jsonl", encoding="utf-8") as handle:
        return status, printed.getvalue(), [json.loads(line) for line in handle]


def test_a_100000_byte_line_of_a_plain_list(server, tmp_path):
    (tmp_path / "urls.txt").write_text("x" * 100_000 + "\n" + server.url("/files/ok.jpg") + "\n")
    status, err, records = run(str(tmp_path / "urls.txt"), str(tmp_path / "out"))
    bad = next(r for r in records if r["status"] == "failed")
    assert status == 1 and bad["url"] == "x" * 200 + "... (100,000 bytes)"
    assert bad["error"]["kind"] == "invalid-url"
    assert bad["error"]["message"] == "line 1: line of 100,000 bytes is longer than the 65,536 a URL may have"
    assert f"failed {bad['url']}: invalid-url: line 1:" in err
    assert any(r["status"] == "ok" for r in records)


def test_a_two_mib_row_of_a_jsonl_input_is_invalid_input(server, tmp_path):
    rows = [json.dumps({"url": server.url("/files/a.jpg"), "pad": "y" * 2_000_000}),
            json.dumps({"url": server.url("/files/b.jpg")})]
    (tmp_path / "list.jsonl").write_text("\n".join(rows) + "\n")
    status, _, records = run(str(tmp_path / "list.jsonl"), str(tmp_path / "out"))
    bad = next(r for r in records if r["status"] == "failed")
    assert bad["error"]["kind"] == "invalid-input"
    assert bad["url"].endswith(f"... ({len(rows[0]):,} bytes)") and len(bad["url"]) < 240
    assert status == 1 and sum(r["status"] == "ok" for r in records) == 1


def test_a_short_bad_line_is_shown_whole(tmp_path):
    (tmp_path / "urls.txt").write_text("not a url at all\n")
    _, _, records = run(str(tmp_path / "urls.txt"), str(tmp_path / "out"))
    assert records[0]["url"] == "not a url at all" and records[0]["error"]["kind"] == "invalid-url"
