"""Property-based tests of the input readers: any bytes, in any of the formats (txt, csv, tsv, jsonl,
gzip-compressed or not, with a BOM, in UTF-16), become rows and then tasks or readable failures,
or one ConfigError for the whole file; nothing else is ever raised, and every failure can be written
to the UTF-8 manifest. Profiles: tests/props.py."""

from __future__ import annotations

import codecs
import gzip
import json
import tempfile

import props  # noqa: F401 - loads the hypothesis profile
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetcher.errors import ConfigError
from fetcher.models import FetchTask, Result
from fetcher.sources.readers import read_rows
from fetcher.sources.tasks import iter_rows

SUFFIXES = ["txt", "csv", "tsv", "jsonl"]
URLISH = st.one_of(
    st.text(max_size=60),
    st.builds(lambda host, path: f"http://{host}/{path}", st.text(min_size=1, max_size=20), st.text(max_size=30)),
    st.sampled_from(["http://h/a", "https://h:8080/b?c=d#e", "ftp://h/x", "http://[::1]/", "http://h:99999/",
                     "HTTP://H/é", "http://u:p@h/", "//h/x", "http:///x", "http://h\x00/"]),
)


def items_of(data: bytes, suffix: str, dedupe: bool = True) -> list[FetchTask | Result] | None:
    """Every item the reader makes of ``data`` (None: refused as a whole, with one ConfigError line)."""
    with tempfile.NamedTemporaryFile(suffix=f".{suffix}") as handle:
        handle.write(data)
        handle.flush()
        try:
            got = list(iter_rows(read_rows(handle.name), dedupe=dedupe))
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return None
    for item in got:
        if isinstance(item, Result):
            assert item.error is not None and item.error.message
            json.dumps(item.to_record(), ensure_ascii=False).encode("utf-8")
        else:
            assert isinstance(item, FetchTask) and item.url.startswith(("http://", "https://"))
    return got


@given(data=st.binary(max_size=2000), suffix=st.sampled_from(SUFFIXES), gz=st.booleans())
def test_any_bytes_become_items_or_one_error(data, suffix, gz):
    items_of(gzip.compress(data) if gz else data, f"{suffix}.gz" if gz else suffix)


@given(data=st.binary(max_size=2000), suffix=st.sampled_from(SUFFIXES), cut=st.integers(min_value=0, max_value=60))
def test_a_truncated_gzip_is_items_or_one_error(data, suffix, cut):
    packed = gzip.compress(data)
    items_of(packed[: max(0, len(packed) - cut)], f"{suffix}.gz")


@given(urls=st.lists(URLISH, max_size=30), bom=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16"]))
def test_a_list_of_lines_in_any_encoding(urls, bom, encoding):
    lines = [u.replace("\n", " ").replace("\r", " ") for u in urls]
    text = "\n".join(lines) + "\n"
    data = text.encode(encoding) if encoding == "utf-16" else (codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8", "surrogatepass")
    got = items_of(data, "txt")
    if encoding == "utf-8" and got is not None:
        assert len(got) <= len(lines)  # blank lines and comments skipped, nothing invented


@given(rows=st.lists(st.fixed_dictionaries({"url": st.one_of(URLISH, st.integers(), st.none(), st.lists(st.integers(), max_size=3))},
                                           optional={"name": st.text(max_size=20), "n": st.floats(allow_nan=False)}),
                     min_size=1, max_size=20))
def test_jsonl_rows_of_any_shape(rows):
    data = "\n".join(json.dumps(r) for r in rows).encode() + b"\n"
    got = items_of(data, "jsonl", dedupe=False)
    if got is not None:
        assert len(got) == len(rows)  # one item per row: a task, or a failure saying why


@given(cells=st.lists(st.lists(st.text(max_size=30), min_size=1, max_size=4), min_size=1, max_size=20),
       delimiter=st.sampled_from([",", "\t"]))
def test_csv_and_tsv_cells_of_any_text(cells, delimiter):
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(["url", "title"])
    for row in cells:
        writer.writerow(row)
    items_of(buffer.getvalue().encode("utf-8", "surrogatepass"), "csv" if delimiter == "," else "tsv")


pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@given(values=st.lists(st.one_of(URLISH, st.none()), min_size=1, max_size=20), as_binary=st.booleans())
def test_parquet_url_columns_of_any_text(values, as_binary):
    column = [None if v is None else v.encode("utf-8", "surrogatepass") for v in values] if as_binary else \
        [None if v is None else v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for v in values]
    with tempfile.NamedTemporaryFile(suffix=".parquet") as handle:
        pq.write_table(pa.table({"url": pa.array(column, pa.binary() if as_binary else pa.string())}), handle.name)
        try:
            got = list(iter_rows(read_rows(handle.name), dedupe=False))
        except ConfigError:
            return
    assert len(got) == len(values)
    for item in got:
        if isinstance(item, Result):
            json.dumps(item.to_record(), ensure_ascii=False).encode("utf-8")


@given(data=st.binary(max_size=3000))
def test_a_parquet_file_of_garbage_is_one_error(data):
    items_of(b"PAR1" + data + b"PAR1", "parquet")
