"""Manifests in a reused folder: one per run, and no record silently disappears (issue 23, item 6)."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os

from fetcher.cli.main import main


def run(argv: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        main(argv)
    return printed.getvalue()


def urls_in(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["url"] for line in handle]


def test_two_lists_in_one_folder_keep_both_manifests(server, tmp_path):
    first = [server.url(f"/files/a{i}.jpg") for i in range(3)]
    second = [server.url(f"/files/b{i}.jpg") for i in range(2)]
    (tmp_path / "a.txt").write_text("\n".join(first) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(second) + "\n")
    out = str(tmp_path / "out")
    run([str(tmp_path / "a.txt"), "-o", out])
    said = run([str(tmp_path / "b.txt"), "-o", out])
    kept = sorted(glob.glob(os.path.join(out, "manifest.*.jsonl")))
    assert len(kept) == 1 and f"(the earlier run's kept as {os.path.basename(kept[0])})" in said
    assert sorted(urls_in(os.path.join(out, "manifest.jsonl"))) == sorted(second)
    assert sorted(urls_in(kept[0])) == sorted(first)


def test_a_killed_runs_records_are_kept_in_whole_lines(server, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"url": server.url("/files/k.jpg"), "status": "ok"}
    (out / "manifest.jsonl.part").write_text(json.dumps(earlier) + "\n" + '{"url": "http://half')
    (tmp_path / "c.txt").write_text(server.url("/files/c.jpg") + "\n")
    run([str(tmp_path / "c.txt"), "-o", str(out)])
    kept = glob.glob(str(out / "manifest.*.jsonl"))
    assert len(kept) == 1 and urls_in(kept[0]) == [earlier["url"]]
    assert urls_in(str(out / "manifest.jsonl")) == [server.url("/files/c.jpg")]
    assert not (out / "manifest.jsonl.part").exists()


def test_a_custom_manifest_path_is_kept_the_same_way(server, tmp_path):
    (tmp_path / "d.txt").write_text(server.url("/files/d.jpg") + "\n")
    path = str(tmp_path / "records.jsonl")
    for _ in range(2):
        run([str(tmp_path / "d.txt"), "-o", str(tmp_path / "out"), "--manifest", path])
    assert len(glob.glob(str(tmp_path / "records.*.jsonl"))) == 1 and os.path.exists(path)
