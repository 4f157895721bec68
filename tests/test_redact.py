"""The one rule for secrets (fetcher/redact.py), the journal's keys, an older journal's migration,
and headers read from a file."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
from conftest import write_list
from proc_helpers import read_manifest

from fetcher import redact
from fetcher.cli import main
from fetcher.errors import ConfigError
from fetcher.run.journal import journal_path
from fetcher.run.journal_secrets import MASKED_VERSION
from fetcher.models import ErrorInfo, Result, Status
from fetcher.options import Options, prepare_run


@pytest.mark.parametrize(("text", "shown"), [
    ("http://alice:s3cret@127.0.0.1:8/echo", "http://alice:***@127.0.0.1:8/echo"),
    ("https://TOKEN@github.com/x.git", "https://***@github.com/x.git"),  # a lone user name is the credential
    ("http://alice:p@ss@host/x", "http://alice:***@host/x"),  # a raw "@" in the password
    ("http://alice:se cret@host/x", "http://alice:***@host/x"),  # a bad input line with a space
    ("failed http://a:pw@h/x: refused; mail admin@example.com",
     "failed http://a:***@h/x: refused; mail admin@example.com"),
    ("http://h/?next=http://a:b@c/", "http://h/?next=http://a:***@c/"),
    ("http://h/path@v2?user=me@x", "http://h/path@v2?user=me@x"),  # "@" after the host is not a userinfo
    ("mailto:someone@example.com", "mailto:someone@example.com"),
    ("alice:s3cret@host/x", "alice:***@host/x"),  # a bad line without a scheme
    ("see me@example.com at 10:30", "see me@example.com at 10:30"),
    ("no url here", "no url here"),
])
def test_mask_hides_every_userinfo_password(text: str, shown: str) -> None:
    assert redact.mask(text) == shown


@pytest.mark.parametrize("text", ["http://alice:" + "p" * 300 + "@host/x", "alice:" + "p" * 300 + "@host/x"])
def test_a_cut_never_leaves_half_a_password(text: str) -> None:
    assert "ppp" not in redact.mask(redact.cut(text, 200))
    assert redact.cut("http://host/" + "x" * 300, 200) == ("http://host/" + "x" * 300)[:200]  # the rest as it was


def test_strip_credentials_touches_only_the_netloc() -> None:
    assert redact.strip_credentials("http://a:b@h:8/x?q=http://c:d@e/") == "http://h:8/x?q=http://c:d@e/"
    assert redact.strip_credentials("http://h/x@y") == "http://h/x@y"


def test_creating_options_remembers_no_header_value() -> None:
    """Options.create has no process-wide effect; starting a run (prepare_run) remembers the values."""
    options = Options.create(headers=["Authorization: Bearer n0t-yet-remembered"])
    assert redact.mask("401 for n0t-yet-remembered") == "401 for n0t-yet-remembered"
    prepare_run(options)
    assert redact.mask("401 for n0t-yet-remembered") == "401 for ***"


def test_a_remembered_header_value_is_masked_in_any_message() -> None:
    prepare_run(Options.create(headers=["Authorization: Bearer rememb3red-token", "Referer: http://site/",
                                        "proxy-authorization: Basic cHJveHk6cHc=", "Cookie: sid=c00kie-value"]))

    assert redact.mask("401 for token rememb3red-token") == "401 for token ***"
    assert redact.mask("proxy said cHJveHk6cHc= and sid=c00kie-value") == "proxy said *** and ***"
    assert redact.mask("Referer http://site/ stays") == "Referer http://site/ stays"


def test_to_record_masks_url_final_url_message_and_input_columns() -> None:
    result = Result(url="http://a:pw1@h/x", status=Status.FAILED, final_url="http://a:pw1@h/y",
                    error=ErrorInfo("connect", "cannot reach http://a:pw1@h/y"),
                    extra={"input": {"mirror": "http://b:pw2@m/x", "id": 7}})

    record = result.to_record()

    assert str(record).count("pw") == 0
    assert record["url"] == "http://a:***@h/x" and record["input"] == {"mirror": "http://b:***@m/x", "id": 7}
    assert result.url == "http://a:pw1@h/x"  # the Python API still gets back the URL it gave


def test_url_keys_are_stable_keyed_and_private(tmp_path) -> None:
    keys = redact.UrlKeys(str(tmp_path / ".fetcher"))
    plain = "http://h/x"

    assert keys.key(plain) == plain  # no credentials: the URL itself, as older journals have it
    assert not os.path.exists(keys.path)  # no key file until a URL needs one
    key = keys.key("http://alice:s3cret@h/x")
    assert key.startswith("http://alice:***@h/x#mac=") and "s3cret" not in key
    assert stat.S_IMODE(os.stat(keys.path).st_mode) == 0o600
    assert redact.UrlKeys(str(tmp_path / ".fetcher")).key("http://alice:s3cret@h/x") == key  # a rerun
    assert keys.key("http://alice:other@h/x") != key  # two URLs stay two URLs
    assert redact.UrlKeys(str(tmp_path / "elsewhere")).key("http://alice:s3cret@h/x") != key  # keyed per folder
    assert redact.shown_key(key) == "http://alice:***@h/x"


def test_an_unreadable_key_file_is_a_config_error(tmp_path) -> None:
    folder = tmp_path / ".fetcher"
    folder.mkdir()
    (folder / redact.KEY_FILE).write_text("not hex\n")

    with pytest.raises(ConfigError, match="remove it"):
        redact.UrlKeys(str(folder)).key("http://a:b@h/")


def _make_legacy(out: str, url: str, key: str) -> None:
    """Turn the journal row of ``url`` back into what fetcher wrote before issue 18: the raw URL."""
    db = sqlite3.connect(journal_path(out))
    try:
        assert db.execute("SELECT COUNT(*) FROM urls WHERE url = ?", (key,)).fetchone()[0] == 1
        db.execute("UPDATE urls SET url = ?, final_url = ? WHERE url = ?", (url, url, key))
        db.execute("PRAGMA user_version = 0")
        db.commit()
    finally:
        db.close()
    os.remove(os.path.join(out, ".fetcher", redact.KEY_FILE))  # older versions had none


def _journal_bytes(out: str) -> bytes:
    """Every file of the journal's folder (the SQLite file, and its WAL if any), as bytes."""
    folder = os.path.join(out, ".fetcher")
    found = b""
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as handle:
            found += handle.read()
    return found


def test_an_older_journal_keyed_by_raw_urls_is_found_and_scrubbed(server, tmp_path, out, capsys) -> None:
    url = server.url("/files/kept.bin?size=500").replace("http://", "http://alice:s3cret@")
    plain = server.url("/files/plain.bin?size=500")
    listing = write_list(tmp_path, [url, plain])
    assert main([listing, "-o", out, "-q"]) == 0
    key = redact.UrlKeys(os.path.join(out, ".fetcher")).key(url)
    _make_legacy(out, url, key)
    assert b"s3cret" in _journal_bytes(out)  # the legacy journal holds the password, as it used to

    assert main([listing, "-o", out, "-q"]) == 0

    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert [r["status"] for r in records] == ["skipped", "skipped"]  # found, not fetched again
    assert server.stats.requests["/files/kept.bin"] == 1
    assert b"s3cret" not in _journal_bytes(out)  # re-keyed, and the old text overwritten
    db = sqlite3.connect(journal_path(out))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == MASKED_VERSION
        assert sorted(row[0] for row in db.execute("SELECT url FROM urls")) == sorted(
            [redact.UrlKeys(os.path.join(out, ".fetcher")).key(url), plain])
    finally:
        db.close()


def test_status_masks_a_journal_not_yet_migrated(server, tmp_path, out, capsys) -> None:
    url = server.url("/status/404").replace("http://", "http://alice:s3cret@")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--retries", "0"]) == 1
    _make_legacy(out, url, redact.UrlKeys(os.path.join(out, ".fetcher")).key(url))
    capsys.readouterr()

    assert main(["status", "-o", out]) == 0  # read-only: it migrates nothing, but shows nothing secret

    shown = capsys.readouterr().out
    assert "http-status: " + redact.mask(url) in shown and "s3cret" not in shown


def test_header_file_gives_headers_off_the_command_line(server, tmp_path, out) -> None:
    headers = tmp_path / "headers.txt"
    headers.write_text("# tokens stay off argv\nAuthorization: Bearer from-a-file\n\nX-Extra:  two \r\n")
    listing = write_list(tmp_path, [server.url("/echo")])

    assert main([listing, "-o", out, "-q", "--header", f"@{headers}", "--header", "X-Third: 3"]) == 0

    record = read_manifest(os.path.join(out, "manifest.jsonl"))[0]
    with open(os.path.join(out, record["path"]), encoding="utf-8") as handle:
        echoed = handle.read()
    assert '"Authorization": "Bearer from-a-file"' in echoed
    assert '"X-Extra": "two"' in echoed and '"X-Third": "3"' in echoed


def test_a_bad_header_file_names_the_line_not_its_text(tmp_path, out, capsys) -> None:
    headers = tmp_path / "headers.txt"
    headers.write_text("Authorization: Bearer ok\nBearer TOKEN-WITHOUT-NAME\n")
    listing = write_list(tmp_path, ["http://127.0.0.1:9/x"])

    assert main([listing, "-o", out, "--header", f"@{headers}"]) == 2
    assert main([listing, "-o", out, "--header", f"@{tmp_path / 'missing.txt'}"]) == 2
    assert main([listing, "-o", out, "--header", "Bearer TOKEN-ON-ARGV"]) == 2

    err = capsys.readouterr().err
    assert "headers.txt line 2" in err and "missing.txt" in err
    assert "TOKEN" not in err
    assert not os.path.exists(out)


def test_cookies_travel_in_the_options_and_land_in_a_private_file(tmp_path) -> None:
    from fetcher.distributed import cookies as cookie_transfer

    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\nh\tFALSE\t/\tFALSE\t0\tsid\tCOOKIESECRET\n")
    sent = cookie_transfer.pack(Options.create(cookies=str(cookies), headers=["Authorization: Bearer T0KEN"]))
    cookies.unlink()  # the worker's host has no copy

    path, forget = cookie_transfer.unpack(sent)

    assert path is not None and "cookies_text" not in sent.options
    with open(path, encoding="utf-8") as handle:
        assert "COOKIESECRET" in handle.read()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert "COOKIESECRET" not in repr(sent) and "T0KEN" not in repr(sent)
    forget()
    assert not os.path.exists(os.path.dirname(path))


def test_a_task_header_token_is_masked_in_its_failure(tmp_path) -> None:
    from fetcher import Task, fetch

    token = "task-t0ken-value"
    # A header requests refuses (leading space): its error message would quote the value.
    task = Task("http://127.0.0.1:9/x", headers={"Authorization": f" Bearer {token}"})

    (result,) = fetch([task], out=str(tmp_path / "out"), retries=0)

    assert result.error is not None and token in result.error.message  # the Result itself is the caller's
    assert token not in str(result.to_record())


def test_a_part_meta_file_holds_no_password_and_still_resumes(tmp_path) -> None:
    from fetcher.download import partial

    part = str(tmp_path / "big.bin.part")
    with open(part, "wb") as handle:
        handle.write(b"x" * 100)
    url = "http://alice:s3cret@127.0.0.1:8/big.bin"

    assert partial.remember(part, url, {"ETag": '"v1"'})

    with open(partial.meta_path(part), encoding="utf-8") as handle:
        assert "s3cret" not in handle.read()
    assert partial.read_meta(part, url)[0] == (100, '"v1"')
