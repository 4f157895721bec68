"""Input formats: detection, readers, bad rows, carried columns, filenames and checksums."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import sys

import pytest

from fetcher.errors import ConfigError
from fetcher.sources.readers import Row, detect_format, read_rows
from fetcher.models import Result, Status, FetchTask
from fetcher.sources.tasks import iter_rows


def write(tmp_path, name: str, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return str(path)


def items(path: str, input_format: str = "auto", naming: str = "url") -> list[FetchTask | Result]:
    return list(iter_rows(read_rows(path, input_format), naming=naming))


@pytest.mark.parametrize("path,requested,expected", [
    ("urls.txt", "auto", "txt"), ("list", "auto", "txt"), ("a.CSV", "auto", "csv"),
    ("a.tsv.gz", "auto", "tsv"), ("a.jsonl", "auto", "jsonl"), ("a.ndjson.gz", "auto", "jsonl"),
    ("a.json", "auto", "txt"), ("-", "auto", "txt"), ("-", "csv", "csv"), ("a.csv", "txt", "txt"),
])
def test_format_comes_from_the_extension_unless_forced(path, requested, expected):
    assert detect_format(path, requested) == expected


CSV = "url,filename,sha256,title,Status\nhttp://h/a.jpg,,,Cat,mine\nhttp://h/b.jpg,pics/b.jpg,,Dog,\n"
TSV = "url\tfilename\tsha256\ttitle\tStatus\nhttp://h/a.jpg\t\t\tCat\tmine\nhttp://h/b.jpg\tpics/b.jpg\t\tDog\t\n"
JSONL = ('{"url": "http://h/a.jpg", "title": "Cat", "Status": "mine"}\n\n'
         '{"url": "http://h/b.jpg", "filename": "pics/b.jpg", "title": "Dog", "Status": ""}\n')


@pytest.mark.parametrize("name,text", [
    ("in.csv", CSV), ("in.csv.gz", CSV), ("in.tsv", TSV), ("in.tsv.gz", TSV),
    ("in.jsonl", JSONL), ("in.jsonl.gz", JSONL), ("in.ndjson", JSONL),
])
def test_every_format_gives_the_same_tasks(tmp_path, name, text):
    a, b = items(write(tmp_path, name, text))
    assert isinstance(a, FetchTask) and isinstance(b, FetchTask)
    assert a.url == "http://h/a.jpg" and a.name.startswith("h/a-") and a.name.endswith(".jpg")
    assert a.meta == {"title": "Cat", "Status": "mine"}
    assert b.name == "pics/b.jpg" and b.meta == {"title": "Dog", "Status": ""}
    assert (a.index, b.index) == (0, 1)


def test_plain_text_gz_and_gzipped_stdin(tmp_path, monkeypatch):
    assert [t.url for t in items(write(tmp_path, "u.txt.gz", "# c\nhttp://h/1\n\nhttp://h/2\n"))] == \
        ["http://h/1", "http://h/2"]
    data = gzip.compress(b"url\nhttp://h/3\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert [t.url for t in items("-", "csv")] == ["http://h/3"]


def test_a_byte_order_mark_is_ignored(tmp_path):
    for name, text in [("b.csv", "\ufeffURL\nhttp://h/x\n"), ("b.txt", "\ufeffhttp://h/x\n"),
                       ("b.jsonl", '\ufeff{"url": "http://h/x"}\n')]:
        assert [t.url for t in items(write(tmp_path, name, text))] == ["http://h/x"]


@pytest.mark.parametrize("name,text,message", [
    ("in.csv", "link,title\nhttp://h/x,a\n", "no 'url' column"),
    ("in.tsv.gz", "link\ttitle\nhttp://h/x\ta\n", "no 'url' column"),
    ("in.csv", "url,URL\nhttp://h/x,y\n", "names a column twice"),
    ("in.jsonl", '{"link": "http://h/x"}\n{"url": "http://h/y"}\n', "first JSON object has no 'url'"),
    ("in.csv.gz", b"\x1f\x8b\x08\x00garbage", "cannot read input"),
])
def test_a_file_without_a_url_column_is_a_config_error(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else
                     (gzip.compress(text.encode()) if name.endswith(".gz") else text.encode()))
    rows = read_rows(str(path))
    with pytest.raises(ConfigError, match=message):
        next(rows)


def test_bad_rows_fail_with_their_line_number_and_the_rest_runs(tmp_path):
    text = ("url,sha256,md5,note\n"
            "http://h/ok1,,,a\n"
            ",,,no url here\n"                     # line 3
            "http://h/sum,xyz,,bad sha256\n"       # line 4
            "http://h/md5,,ABC,bad md5\n"          # line 5
            "http://h/many,,,x,extra\n"            # line 6
            "ftp://h/x,,,scheme\n"                 # line 7
            "http://h/ok2,,,b\n")
    got = items(write(tmp_path, "in.csv", text))
    tasks = [i for i in got if isinstance(i, FetchTask)]
    failures = {i.error.message.split(":")[0]: i for i in got if isinstance(i, Result)}
    assert [t.url for t in tasks] == ["http://h/ok1", "http://h/ok2"]
    assert set(failures) == {"line 3", "line 4", "line 5", "line 6", "line 7"}
    assert failures["line 3"].error.kind == "invalid-input" and "no url" in failures["line 3"].error.message
    assert "sha256 must be 64 hexadecimal digits" in failures["line 4"].error.message
    assert "md5 must be 32 hexadecimal digits" in failures["line 5"].error.message
    assert "5 fields, but the header has 4" in failures["line 6"].error.message
    assert failures["line 7"].error.kind == "unsupported-scheme"
    assert failures["line 4"].extra == {"input": {"note": "bad sha256"}}
    assert all(f.status is Status.FAILED and f.attempts == 0 for f in failures.values())


def test_bad_json_lines_fail_and_the_rest_runs(tmp_path):
    text = ('{"url": "http://h/a"}\n'
            '{"url": "http://h/b"\n'            # line 2: broken
            '["http://h/c"]\n'                   # line 3: not an object
            '{"url": 42}\n'                      # line 4
            '{"url": "http://h/d", "n": NaN}\n'  # line 5: NaN is not JSON
            '{"title": "no url"}\n'              # line 6
            '{"url": "http://h/e", "sha256": 7}\n'
            '{"url": "http://h/f", "tags": ["x", {"y": 1}], "n": 3}\n')
    got = items(write(tmp_path, "in.jsonl", text))
    assert [i.url for i in got if isinstance(i, FetchTask)] == ["http://h/a", "http://h/f"]
    messages = [i.error.message for i in got if isinstance(i, Result)]
    assert [m.split(":")[0] for m in messages] == ["line 2", "line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "not valid JSON" in messages[0] and "expected a JSON object" in messages[1]
    assert "url must be a string" in messages[2] and "no url" in messages[4]
    assert got[-1].meta == {"tags": ["x", {"y": 1}], "n": 3}


def test_undecodable_bytes_are_reported_not_guessed(tmp_path):
    data = b"url,note\nhttp://h/\xff.jpg,a\nhttp://h/ok,\xfe\nnot a url,\xfd\n,\xfc\n"
    got = items(write(tmp_path, "in.csv", data))
    assert [(i.error.kind, i.error.message) for i in got] == [
        ("invalid-url", "line 2: not valid UTF-8"), ("invalid-input", "line 3: a column is not valid UTF-8"),
        ("invalid-url", "line 4: URL contains whitespace or control characters"),
        ("invalid-input", "line 5: no url")]
    for item in got:  # every record can be written to the UTF-8 manifest
        json.dumps(item.to_record(), ensure_ascii=False).encode("utf-8")


def test_lone_surrogates_in_json_never_reach_the_manifest(tmp_path):
    text = ('{"url": "http://h/a", "tags": ["\\ud800"]}\n{"url": "http://h/b", "\\udcff": 1}\n'
            '{"url": "http://h/\\ud800"}\n{"url": "http://h/ok", "x": {"y": "\\u00e9"}}\n')
    got = items(write(tmp_path, "in.jsonl", text))
    kinds = [i.error.kind if isinstance(i, Result) and i.error else None for i in got]
    assert kinds == ["invalid-input", "invalid-input", "invalid-url", None]
    for item in got:
        json.dumps(item.to_record() if isinstance(item, Result) else item.meta,
                   ensure_ascii=False).encode("utf-8")


def test_a_truncated_gzip_ends_the_input_with_one_failed_record(tmp_path):
    data = gzip.compress("".join(f"http://h/{n}\n" for n in range(20000)).encode())
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    got = items(str(path))
    last = got[-1]
    assert all(isinstance(i, FetchTask) for i in got[:-1]) and len(got) > 100
    assert isinstance(last, Result) and "cannot read the rest of the input" in last.error.message


def test_duplicates_are_dropped_by_canonical_url_and_the_first_row_wins(tmp_path):
    text = "url,filename,note\nhttp://h/a.jpg,first.jpg,1\nHTTP://H:80/a.jpg#x,second.jpg,2\n"
    counts: dict[str, int] = {}
    got = list(iter_rows(read_rows(write(tmp_path, "in.csv", text)), counts))
    assert len(got) == 1 and got[0].name == "first.jpg" and got[0].meta == {"note": "1"}
    assert counts["duplicates"] == 1


@pytest.mark.parametrize("filename,expected", [
    ("../../etc/passwd", "etc/passwd"), ("/abs/x.jpg", "abs/x.jpg"), ("C:\\Windows\\x.dll", "C_/Windows/x.dll"),
    ("a/./b//c.jpg", "a/b/c.jpg"), ("Été 2023/photo 1.jpg", "Été 2023/photo 1.jpg"), ("nul.txt", "_nul.txt"),
    ("..\\..\\up.jpg", "up.jpg"), (".hidden", "hidden"),
])
def test_filename_column_is_made_safe(tmp_path, filename, expected):
    text = json.dumps({"url": "http://h/x", "filename": filename}) + "\n"
    (task,) = items(write(tmp_path, "in.jsonl", text))
    assert task.name == expected and not task.provisional_name


def test_filename_that_leaves_nothing_or_is_reused_fails(tmp_path):
    lines = [{"url": "http://h/1", "filename": "../.."}, {"url": "http://h/2", "filename": "a.jpg"},
             {"url": "http://h/3", "filename": "A.JPG"}, {"url": "http://h/4", "filename": "./a.jpg/"}]
    got = items(write(tmp_path, "in.jsonl", "".join(json.dumps(x) + "\n" for x in lines)))
    assert [type(i).__name__ for i in got] == ["Result", "FetchTask", "Result", "Result"]
    assert "leaves no usable file name" in got[0].error.message
    assert "already used by an earlier row" in got[2].error.message


def test_checksum_columns_are_normalised(tmp_path):
    sha, md5 = "AB" * 32, "cd" * 16
    text = (f"url,sha256,md5\nhttp://h/1,{sha},\nhttp://h/2,,{md5}\nhttp://h/3,sha256:{sha},{md5}\n"
            "http://h/4,,\n")
    got = items(write(tmp_path, "in.csv", text))
    assert [t.checksum for t in got] == [f"sha256:{sha.lower()}", f"md5:{md5}", f"sha256:{sha.lower()}", None]


def test_naming_is_applied_and_provisional_without_an_extension(tmp_path):
    path = write(tmp_path, "in.txt", "http://h/a/b.png\nhttp://h/page\nhttp://h/show.php?id=3\n")
    png, page, php = items(path, naming="{host}/{path}-{hash}.{ext}")
    assert png.name.startswith("h/a/b-") and png.name.endswith(".png") and not png.provisional_name
    assert page.provisional_name and "." not in page.name.rsplit("/", 1)[1]
    assert php.provisional_name


def test_rows_are_read_lazily(tmp_path):
    head = "url,n\n" + "".join(f"http://h/{n},{n}\n" for n in range(5))
    path = tmp_path / "big.csv"
    path.write_text(head)
    rows = read_rows(str(path))
    first_two = list(itertools.islice(iter_rows(rows), 2))
    assert [t.meta for t in first_two] == [{"n": "0"}, {"n": "1"}]


def test_rows_carry_what_was_read():
    row = Row(3, {"url": "http://h/x", "k": "v"})
    (task,) = iter_rows([row])
    assert task.meta == {"k": "v"}
