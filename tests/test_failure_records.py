"""A failed record says what the server sent and nothing of fetcher's insides (issue 23, item 10)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from fetcher.cli.main import main

pytest.importorskip("PIL")


def run(argv: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        status = main(argv)
    return status, printed.getvalue()


def records(out) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {record["url"]: record for record in map(json.loads, lines)}


@pytest.mark.parametrize("client", ["requests", "curl"])
def test_a_refused_image_of_a_webdataset_run_names_no_staging_path(server, tmp_path, client):
    if client == "curl":
        pytest.importorskip("pycurl")
    url = server.url("/img/b.jpg?fault=corrupt")
    (tmp_path / "urls.txt").write_text(url + "\n")
    out = tmp_path / "out"
    status, screen = run([str(tmp_path / "urls.txt"), "--verify-image", "--output-format", "webdataset",
                          "--client", client, "--backend", "thread", "-o", str(out)])
    record = records(out)[url]
    assert status == 1 and record["error"]["kind"] == "bad-image"
    for shown in (record["error"]["message"], screen, run(["status", "-o", str(out)])[1]):
        assert "staging" not in shown and ".part" not in shown, shown
    assert record["http_status"] == 200 and record["content_type"] == "image/jpeg"
    assert record["final_url"] == url


@pytest.mark.parametrize("client", ["requests", "curl"])
def test_a_body_refused_after_a_200_keeps_its_type_and_final_url(server, tmp_path, client):
    if client == "curl":
        pytest.importorskip("pycurl")
    url = server.url("/redirect/big.bin?to=/files/big.bin%3Fsize%3D50000%26type%3Dimage/png")
    (tmp_path / "urls.txt").write_text(url + "\n")
    status, _ = run([str(tmp_path / "urls.txt"), "--max-size", "10K", "--client", client, "--backend", "thread",
                     "-o", str(tmp_path / "out")])
    record = records(tmp_path / "out")[url]
    assert status == 1 and record["error"]["kind"] == "too-large" and record["http_status"] == 200
    assert record["content_type"] == "image/png"
    assert record["final_url"] == server.url("/files/big.bin?size=50000&type=image/png")
