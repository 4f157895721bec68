"""One "open the input" for ``fetcher`` and ``fetcher serve`` (issue 25): the same rows, errors and bar total."""

from __future__ import annotations

import types

import pytest
from conftest import write_list

from fetcher.cli import main
from fetcher.options import Options
from fetcher.sources.opening import open_input

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def write_parquet(tmp_path, count: int) -> str:
    path = str(tmp_path / "in.parquet")
    # Text with newlines in it, so that counting newline bytes could never give the row count.
    rows = [{"url": f"http://127.0.0.1:9/{i}.jpg", "caption": "two\nlines\n" * (i % 3)} for i in range(count)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_serve_tells_its_bar_how_many_rows_a_parquet_input_has(tmp_path, monkeypatch) -> None:
    """Serve counted a parquet file's newline bytes as the bar's total before; now it counts rows."""
    seen = {}

    def fake_serve(items, options, progress, config, *, total=None, **_):
        seen["total"], seen["urls"] = total, [item.url for item in items]
        summary = types.SimpleNamespace(exit_code=0)
        return types.SimpleNamespace(summary=summary, workers=[])

    monkeypatch.setattr("fetcher.distributed.server.serve", fake_serve)
    monkeypatch.setenv("FETCHER_AUTHKEY", "k" * 32)
    path = write_parquet(tmp_path, 37)

    assert main(["serve", path, "-o", str(tmp_path / "out"), "--bind", "127.0.0.1:0", "-q"]) == 0
    assert seen["total"] == 37
    assert seen["urls"] == [f"http://127.0.0.1:9/{i}.jpg" for i in range(37)]


def test_fetcher_and_serve_read_the_same_input_the_same_way(tmp_path) -> None:
    listing = write_list(tmp_path, ["http://127.0.0.1:9/a", "not a url", "http://127.0.0.1:9/a"])
    opened = open_input(listing, Options.create())
    items = list(opened.items)
    assert opened.total == 3 and len(items) == 3  # the journal dedupes, not the reader
    assert [getattr(item, "ok", None) for item in items] == [None, False, None]  # the bad row is a failed Result


def test_a_missing_input_is_a_usage_error_for_serve_too(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FETCHER_AUTHKEY", "k" * 32)
    assert main(["serve", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "missing.txt" in capsys.readouterr().err
