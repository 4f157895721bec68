"""What fetcher says is right and says it plainly (issue 23, item 13)."""

from __future__ import annotations

import contextlib
import io
import json
import os

from fetcher.backends.registry import get_backend
from fetcher.cli import docgen
from fetcher.cli.main import main
from fetcher.files.filenames import clean_user_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_one_duplicate_line_is_singular(server, tmp_path):
    url = server.url("/files/d.jpg")
    (tmp_path / "urls.txt").write_text(f"{url}\n{url}\n")
    status, out, _ = run([str(tmp_path / "urls.txt"), "-o", str(tmp_path / "out")])
    assert status == 0 and "1 duplicate line was fetched once." in out


def test_an_unsupported_scheme_says_which_urls_are_fetched(tmp_path):
    (tmp_path / "urls.txt").write_text("ftp://example.com/x\n")
    status, _, err = run([str(tmp_path / "urls.txt"), "-o", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert status == 1 and record["error"]["kind"] == "unsupported-scheme"
    assert record["error"]["message"].endswith("scheme 'ftp' is not fetched: only http and https URLs are")


def test_an_unknown_backend_lists_auto_among_the_choices(tmp_path):
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/x\n")
    status, _, err = run([str(tmp_path / "urls.txt"), "--backend", "foo", "-o", str(tmp_path / "out")])
    assert status == 2 and "choose one of: auto, gevent, multi, process, thread" in err


def test_a_worker_takes_auto_as_it_says():
    get_backend("auto")  # fetcher work --backend auto: resolved once the server's client is known
    assert "or auto" in docgen.help_text(("work",))


def test_help_lists_parquet_among_the_input_formats():
    for command in ((), ("serve",)):
        usage = docgen.help_text(command, width=1000)
        line = next(line for line in usage.splitlines() if line.strip().startswith("input "))
        assert "parquet" in line, line


def test_the_docs_say_what_becomes_of_a_drive_letter():
    with open(os.path.join(ROOT, "docs", "input-output.md"), encoding="utf-8") as handle:
        page = handle.read()
    assert clean_user_path("C:/x.jpg") == "C_/x.jpg" and "`C:/x.jpg` becomes `C_/x.jpg`" in page
    assert "drive letters are dropped" not in page


def test_one_url_is_singular(server, tmp_path):
    (tmp_path / "urls.txt").write_text(server.url("/files/one.jpg") + "\n")
    status, out, _ = run([str(tmp_path / "urls.txt"), "-o", str(tmp_path / "out")])
    assert status == 0 and out.startswith("Finished 1 URL in ")
    status, shown, _ = run(["status", "-o", str(tmp_path / "out")])
    assert ": 1 URL: 1 ok" in shown
