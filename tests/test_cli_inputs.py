"""Input formats, naming and --on-exists end to end: the CLI against the loopback server."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
from urllib.parse import quote, urlencode

import pytest
from server import body_for
from test_cli import all_files, manifest

from fetcher.cli.main import main


def write_table(tmp_path, name: str, rows: list[dict]) -> str:
    """Write rows as CSV, TSV or JSONL (by extension, optionally .gz); return the path."""
    fmt = name.removesuffix(".gz").rsplit(".", 1)[1]
    if fmt in ("jsonl", "ndjson"):
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, columns, dialect=csv.excel_tab if fmt == "tsv" else csv.excel)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return str(path)


def inside(out: str, path: str) -> bool:
    full = os.path.realpath(os.path.join(out, path))
    return full.startswith(os.path.realpath(out) + os.sep)


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl", "in.csv.gz", "in.tsv.gz", "in.jsonl.gz",
                                  "in.ndjson"])
def test_each_format_downloads_and_carries_extra_columns(server, out, tmp_path, name):
    urls = [server.url(f"/files/{name}-{i}.jpg?size={500 + i}") for i in range(6)]
    rows = [{"url": u, "title": f"pic {i}", "status": "theirs", "id": str(i)} for i, u in enumerate(urls)]
    rows.append(dict(rows[0]))  # a duplicate row: fetched once
    assert main([write_table(tmp_path, name, rows), "-o", out, "-q"]) == 0
    records = manifest(out)
    assert set(records) == set(urls)
    for i, url in enumerate(urls):
        record = records[url]
        assert record["status"] == "ok"
        assert record["input"] == {"title": f"pic {i}", "status": "theirs", "id": str(i)}
        with open(os.path.join(out, record["path"]), "rb") as handle:
            assert handle.read() == body_for(f"{name}-{i}.jpg", 500 + i)
    assert sum(server.stats.requests.values()) == len(urls)


def test_stdin_with_a_forced_format(server, out, tmp_path, monkeypatch):
    url = server.url("/files/s.jpg")
    data = gzip.compress(json.dumps({"url": url, "n": 1}).encode() + b"\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["-", "--input-format", "jsonl", "-o", out, "-q"]) == 0
    assert manifest(out)[url]["input"] == {"n": 1}


def test_bad_rows_are_failed_records_and_the_rest_runs(server, out, tmp_path):
    good = server.url("/files/good.jpg")
    text = (f"url,sha256,note\n{good},,fine\n,,no url\n{server.url('/files/x.jpg')},nothex,bad sum\n"
            f"{server.url('/files/y.jpg')},,too,many\nfile:///etc/passwd,,scheme\n")
    path = tmp_path / "in.csv"
    path.write_text(text)
    assert main([str(path), "-o", out, "-q"]) == 1
    records = manifest(out)
    assert records[good]["status"] == "ok" and records[good]["input"] == {"note": "fine"}
    messages = sorted(r["error"]["message"] for r in records.values() if r["error"])
    assert [m.split(":")[0] for m in messages] == ["line 3", "line 4", "line 5", "line 6"]
    kinds = sorted(r["error"]["kind"] for r in records.values() if r["error"])
    assert kinds == ["invalid-input", "invalid-input", "invalid-input", "unsupported-scheme"]
    assert sum(server.stats.requests.values()) == 1


@pytest.mark.parametrize("name,content", [
    ("in.csv", "link,title\nhttp://127.0.0.1:1/x,a\n"),
    ("in.tsv", "URLS\tx\nhttp://127.0.0.1:1/x\ta\n"),
    ("in.jsonl", '{"href": "http://127.0.0.1:1/x"}\n'),
])
def test_a_missing_url_column_exits_2_before_anything(tmp_path, out, capsys, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert main([str(path), "-o", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fetcher: error:") and err.count("\n") == 1 and "'url'" in err
    assert not os.path.exists(out)


def test_filename_column_wins_and_never_escapes(server, out, tmp_path):
    attempts = ["../../escape.jpg", "/etc/passwd", "C:\\Windows\\x.dll", "..\\..\\up.jpg",
                "sub/dir/ok.jpg", "Été/photo 1.jpg", "a/../../../b.jpg"]
    rows = [{"url": server.url(f"/files/f{i}.jpg"), "filename": name} for i, name in enumerate(attempts)]
    assert main([write_table(tmp_path, "in.jsonl", rows), "-o", out, "-q"]) == 0
    paths = [manifest(out)[row["url"]]["path"] for row in rows]
    assert paths == ["escape.jpg", "etc/passwd", "C_/Windows/x.dll", "up.jpg", "sub/dir/ok.jpg",
                     "Été/photo 1.jpg", "a/b.jpg"]  # ".." parts are dropped, not resolved
    assert all(inside(out, p) for p in paths)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out"]


def test_expected_checksums(server, out, tmp_path):
    ok_sha = server.url("/files/a.jpg")
    ok_md5 = server.url("/files/b.jpg")
    wrong = server.url("/files/c.jpg")
    rows = [
        {"url": ok_sha, "sha256": hashlib.sha256(body_for("a.jpg", 1000)).hexdigest().upper()},
        {"url": ok_md5, "md5": hashlib.md5(body_for("b.jpg", 1000)).hexdigest()},
        {"url": wrong, "sha256": "ab" * 32},
    ]
    assert main([write_table(tmp_path, "in.csv", rows), "-o", out, "-q", "--retries", "3"]) == 1
    records = manifest(out)
    assert records[ok_sha]["status"] == records[ok_md5]["status"] == "ok"
    bad = records[wrong]
    assert bad["status"] == "failed" and bad["error"]["kind"] == "bad-content" and bad["path"] is None
    assert bad["attempts"] == 1 and server.stats.requests["/files/c.jpg"] == 1  # not retried
    assert not [f for f in all_files(out) if "c-" in f or f.endswith(".part")]


def test_naming_url_hash_and_template(server, tmp_path):
    urls = [server.url("/files/gal/cat.png"), server.url("/files/photo?type=image/jpeg")]
    path = write_table(tmp_path, "in.csv", [{"url": u} for u in urls])
    paths = {}
    for naming in ["url", "hash", "full/{sha1}.{ext}", "{host}/{path}_{index:03d}-{hash}.{ext}"]:
        out = str(tmp_path / naming.replace("/", "_"))
        assert main([path, "-o", out, "-q", "--naming", naming]) == 0
        records = manifest(out)
        paths[naming] = [records[u]["path"] for u in urls]
    port_host = f"127.0.0.1_{server.server_address[1]}"
    sha = [hashlib.sha1(u.encode()).hexdigest() for u in urls]
    assert paths["url"][0].startswith(f"{port_host}/cat-") and paths["url"][1].endswith(".jpg")
    assert paths["hash"] == [f"{sha[0]}.png", f"{sha[1]}.jpg"]  # .jpg from Content-Type
    assert paths["full/{sha1}.{ext}"] == [f"full/{sha[0]}.png", f"full/{sha[1]}.jpg"]
    template = paths["{host}/{path}_{index:03d}-{hash}.{ext}"]
    assert template == [f"{port_host}/files/gal/cat_000-{sha[0][:12]}.png",
                        f"{port_host}/files/photo_001-{sha[1][:12]}.jpg"]


@pytest.mark.parametrize("query,expected_stem", [
    ({"filename": "../../etc/passwd"}, "passwd"),
    ({"filename": "C:\\Windows\\evil.dll"}, "evil"),
    ({"filename": "/abs/root.txt"}, "root"),
    ({"star": "../../../escape.txt"}, "escape"),
    ({"star": "€ rates.pdf", "filename": "rates.pdf"}, "€ rates"),
    ({"raw": 'attachment; filename="..\\..\\été.ini"'}, "été"),  # raw UTF-8 bytes, Windows path
    ({"filename": ".."}, "d"),
])
def test_content_disposition_is_used_only_when_asked_and_never_escapes(server, tmp_path, query, expected_stem):
    url = server.url(f"/disposition/d?{urlencode(query, quote_via=quote)}")
    path = write_table(tmp_path, "in.csv", [{"url": url}])
    plain, asked = str(tmp_path / "plain"), str(tmp_path / "asked")
    assert main([path, "-o", plain, "-q"]) == 0
    assert main([path, "-o", asked, "-q", "--naming", "content-disposition"]) == 0
    assert manifest(plain)[url]["path"].split("/")[1].startswith("d-")  # header ignored by default
    name = manifest(asked)[url]["path"]
    host, filename = name.split("/")
    assert host == f"127.0.0.1_{server.server_address[1]}" and inside(asked, name)
    assert filename.startswith(expected_stem + "-" + hashlib.sha1(url.encode()).hexdigest()[:12])
    assert sorted(os.listdir(tmp_path)) == ["asked", "in.csv", "plain"]


def run_twice(server, tmp_path, out: str, on_exists: str | None) -> tuple[dict, dict]:
    urls = [server.url("/files/a.jpg"), server.url("/files/noext?type=image/png")]
    path = write_table(tmp_path, "in.csv", [{"url": u} for u in urls])
    extra = [] if on_exists is None else ["--on-exists", on_exists]
    assert main([path, "-o", out, "-q"]) == 0
    first = manifest(out)
    for record in first.values():  # mark the files, to see whether the rerun touches them
        with open(os.path.join(out, record["path"]), "wb") as handle:
            handle.write(b"old")
    # --on-exists is about files the journal does not know (a known file that
    # changed size is re-fetched by the journal): forget the first run.
    shutil.rmtree(os.path.join(out, ".fetcher"))
    server.stats.requests.clear()
    assert main([path, "-o", out, "-q", *extra]) == 0
    return first, manifest(out)


def contents(out: str, path: str) -> bytes:
    with open(os.path.join(out, path), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("on_exists", [None, "skip"])
def test_on_exists_skip_is_the_default(server, tmp_path, out, on_exists):
    first, second = run_twice(server, tmp_path, out, on_exists)
    for url, record in second.items():
        assert record["status"] == "skipped" and record["path"] == first[url]["path"]
        assert record["bytes"] == 3 and contents(out, record["path"]) == b"old"
    # Name known before the request: no request. Extension from Content-Type: one request, body dropped.
    assert server.stats.requests["/files/a.jpg"] == 0
    assert server.stats.requests["/files/noext"] == 1
    assert second[server.url("/files/a.jpg")]["attempts"] == 0


def test_on_exists_overwrite(server, tmp_path, out):
    first, second = run_twice(server, tmp_path, out, "overwrite")
    for url, record in second.items():
        assert record["status"] == "ok" and record["path"] == first[url]["path"]
        assert contents(out, record["path"]) != b"old"


def test_on_exists_rename(server, tmp_path, out):
    first, second = run_twice(server, tmp_path, out, "rename")
    for url, record in second.items():
        old = first[url]["path"]
        stem, ext = os.path.splitext(old)
        assert record["status"] == "ok" and record["path"] == f"{stem} (1){ext}"
        assert contents(out, old) == b"old" and contents(out, record["path"]) != b"old"


@pytest.mark.parametrize("args,message", [
    (["--naming", "{host}/{name}.{ext}"], "must contain {hash} or {sha1}"),
    (["--naming", "{host}/{size}-{hash}"], "unknown field {size}"),
    (["--naming", "shortest"], "unknown naming 'shortest'"),
    (["--on-exists", "keep"], "on-exists must be one of skip, overwrite, rename"),
    (["--input-format", "xml"], "input format must be one of auto, txt, csv, tsv, jsonl"),
])
def test_bad_input_and_naming_flags_exit_2(server, out, tmp_path, capsys, args, message):
    path = write_table(tmp_path, "in.csv", [{"url": server.url("/files/a.jpg")}])
    assert main([path, "-o", out, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fetcher: error:") and message in err
    assert "Traceback" not in err and not os.path.exists(out)
    assert sum(server.stats.requests.values()) == 0


def test_help_lists_the_new_flags(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--input-format" in text and "--naming" in text and "--on-exists" in text
