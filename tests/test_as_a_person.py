"""fetcher run as a person runs it: a terminal, pipes that close early, bad output locations,
a disk that fills up, huge and binary input. Each test asserts the exit code, one readable
message, no traceback, and that nothing is lost: what finished is in the journal, and a rerun
completes the rest. (See person.py for how the terminal and the disks are made.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import write_list
from person import (assert_one_clear_line, fetcher_command, remount, run_in_terminal, run_into_closing_pipe,
                    small_disk)


def _urls(server, count: int, size: int = 2000, route: str = "files") -> list[str]:
    return [server.url(f"/{route}/f{i:04d}.bin?size={size}") for i in range(count)]


def _journal_states(out: str) -> dict[str, int]:
    db = sqlite3.connect(f"file:{os.path.join(out, '.fetcher', 'journal.sqlite3')}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM urls GROUP BY state").fetchall())
    finally:
        db.close()


def _manifest(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]  # every line whole, or this raises


def _parts(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".part")]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fetcher_command(args), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, **kwargs)


# -- a terminal -------------------------------------------------------------------------------


def test_the_quick_start_in_a_terminal_draws_the_bar_and_a_readable_summary(server, tmp_path):
    urls = write_list(tmp_path, _urls(server, 40, route="slow") + [server.url("/status/404")])
    out = str(tmp_path / "out")
    # slow/: 40 URLs at 0.05 s each over a pool of 4 take ~0.5 s, so the bar redraws several times.
    code, screen = run_in_terminal([urls, "--pool", "4", "-o", out])
    assert code == 1, screen  # the 404 failed
    assert "Traceback" not in screen and "Error" not in screen, screen
    frames = [f for f in screen.replace("\r", "\n").splitlines() if "file/s" in f or "file]" in f]
    assert len(frames) >= 2, screen  # drawn, then updated
    assert any("41/41" in frame for frame in frames), screen  # the bar ends at the list's size
    assert "failed http://127.0.0.1" in screen and "http-status" in screen  # the failure, above the bar
    summary = [line for line in screen.splitlines() if line.startswith("Finished 41 URLs")]
    assert summary and "40 ok, 1 failed" in summary[0], screen
    assert len(_manifest(os.path.join(out, "manifest.jsonl"))) == 41


def test_serve_in_a_terminal_draws_its_bar(server, tmp_path):
    urls = write_list(tmp_path, _urls(server, 20))
    out, work_out = str(tmp_path / "served"), str(tmp_path / "worked")
    key = tmp_path / "key"
    key.write_text("k" * 32)
    key.chmod(0o600)
    # The worker starts first and waits for the server (README: workers may start before the server).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = subprocess.Popen(fetcher_command(["work", f"127.0.0.1:{port}", "--authkey-file", str(key),
                                               "-o", work_out, "-q"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        code, screen = run_in_terminal(["serve", urls, "--bind", f"127.0.0.1:{port}", "--authkey-file",
                                        str(key), "-o", out])
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert code == 0, screen
    assert "Traceback" not in screen, screen
    assert "20/20" in screen, screen
    assert "Finished 20 URLs" in screen, screen


# -- pipes that close early ---------------------------------------------------------------


def test_a_reader_that_stops_early_stops_the_printing_not_the_run(server, tmp_path):
    """``fetcher -v LIST 2>&1 | head -3``: every URL still downloads, the journal has them all."""
    urls = write_list(tmp_path, _urls(server, 201))
    out = str(tmp_path / "out")
    code, lines, _ = run_into_closing_pipe([urls, "-v", "--pool", "4", "-o", out], keep_lines=3)
    assert code == 0
    assert len(lines) == 3
    assert _journal_states(out) == {"ok": 201}
    assert len(_manifest(os.path.join(out, "manifest.jsonl"))) == 201
    assert _parts(out) == []


def test_a_closed_stdout_gives_no_traceback_and_the_runs_own_exit_code(server, tmp_path):
    """``fetcher LIST | head -0``: nothing can be printed, the run ends as it would have."""
    urls = write_list(tmp_path, _urls(server, 20) + [server.url("/status/404")])
    out = str(tmp_path / "out")
    code, lines, err = run_into_closing_pipe([urls, "-o", out], keep_lines=0, merge_stderr=False)
    assert code == 1  # one URL failed: the same status as with a reader
    assert lines == []
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert _journal_states(out) == {"ok": 20, "failed": 1}


def test_status_into_a_closed_pipe(server, tmp_path):
    urls = write_list(tmp_path, _urls(server, 5) + [server.url("/status/404")])
    out = str(tmp_path / "out")
    assert _run([urls, "-o", out, "-q"]).returncode == 1
    # Closed before it prints (as ``| head -0``, or a head that read its lines while more come).
    code, lines, err = run_into_closing_pipe(["status", "-o", out], keep_lines=0, merge_stderr=False)
    assert code == 0 and lines == []
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# -- where the output goes ----------------------------------------------------------------


def test_an_output_folder_that_is_a_file_exits_2_in_one_line(server, tmp_path):
    urls = write_list(tmp_path, _urls(server, 3))
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    result = _run([urls, "-o", str(target)])
    assert result.returncode == 2
    assert_one_clear_line(result.stderr, "fetcher: error:", "is a file")
    assert server.stats.snapshot()["requests"] == {}  # checked before the first request


def test_a_manifest_that_is_a_folder_exits_2_before_downloading(server, tmp_path):
    urls = write_list(tmp_path, _urls(server, 3))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    result = _run([urls, "-o", str(tmp_path / "out"), "--manifest", str(folder)])
    assert result.returncode == 2
    assert_one_clear_line(result.stderr, "fetcher: error:", "is a folder")
    assert server.stats.snapshot()["requests"] == {}
    assert not os.path.exists(str(folder) + ".part")


@pytest.mark.parametrize("where", ["out", "manifest"])
def test_a_read_only_output_or_manifest_exits_2_in_one_line(server, tmp_path, where):
    urls = write_list(tmp_path, _urls(server, 3))
    with small_disk("1m", read_only=True) as disk:
        args = ([urls, "-o", os.path.join(disk, "out")] if where == "out" else
                [urls, "-o", str(tmp_path / "out"), "--manifest", os.path.join(disk, "m.jsonl")])
        result = _run(args)
    assert result.returncode == 2, result.stderr
    assert_one_clear_line(result.stderr, "fetcher: error:", "read-only")
    assert server.stats.snapshot()["requests"] == {}


# -- a disk that fills up -----------------------------------------------------------------


def test_a_disk_that_fills_up_stops_cleanly_and_a_rerun_finishes(server, tmp_path):
    """Bodies of 100 KiB onto a 1 MiB disk: the run stops with exit 3 and one line; the manifest is
    whole lines under its final name; after room is made, the same command finishes, every URL once."""
    urls = write_list(tmp_path, _urls(server, 30, size=100 * 1024))
    with small_disk("1m") as disk:
        out = os.path.join(disk, "out")
        first = _run([urls, "--pool", "2", "-o", out])
        assert first.returncode == 3, first.stdout + first.stderr
        assert "Traceback" not in first.stdout + first.stderr
        assert_one_clear_line(first.stdout, "Stopped:", "No space left on device")
        done = _manifest(os.path.join(out, "manifest.jsonl"))
        assert 0 < len(done) < 30 and all(r["status"] == "ok" for r in done)
        for record in done:  # what the manifest says is saved is whole
            assert os.path.getsize(os.path.join(out, record["path"])) == 100 * 1024
        remount(disk, "size=8m")
        second = _run([urls, "--pool", "2", "-o", out])
        assert second.returncode == 0, second.stdout + second.stderr
        records = _manifest(os.path.join(out, "manifest.jsonl"))
        assert sorted(r["url"] for r in records) == sorted(set(r["url"] for r in records))
        assert len(records) == 30
        assert _journal_states(out) == {"ok": 30}
        assert _parts(out) == []


def test_a_journal_or_manifest_that_hits_a_full_disk_stops_the_run_cleanly(server, tmp_path):
    """The disk fills while results are being recorded (not while a body is written): the API
    raises StorageError after the summary is made, the manifest keeps whole lines, a rerun
    finishes."""
    from fetcher import fetch
    from fetcher.errors import StorageError

    urls = _urls(server, 400, size=10)
    with small_disk("2m") as disk:
        out = os.path.join(disk, "out")
        filler = os.path.join(disk, "filler")
        seen = []
        # Made before the run, unbuffered: on a loaded machine more than 50 files may land before the
        # 50th result, and once the disk is full no new file (nor a buffered flush) can be made.
        handle = open(filler, "wb", buffering=0)  # noqa: SIM115 - closed below, after the run

        def fill_after_some(result):
            seen.append(result)
            if len(seen) == 50:  # leave no room at all: the next journal commit or manifest flush fails
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                except OSError:
                    pass

        results = fetch(urls, out=out, pool=4, on_result=fill_after_some)
        with pytest.raises(StorageError):
            for _ in results:
                pass
        handle.close()
        manifest = os.path.join(out, "manifest.jsonl")
        whole = _manifest(manifest if os.path.exists(manifest) else manifest + ".part")
        assert len(whole) <= len(seen) < 400
        os.remove(filler)
        # Room for the rerun: 2 MiB holds the 400 files (a 4 KiB page each), the manifest and the
        # journal's WAL with nothing to spare (0 KiB free after a passing rerun), and the WAL's size
        # at the end varies from run to run: a loaded run filled the disk again at its last file.
        remount(disk, "size=8m")
        again = list(fetch(urls, out=out, pool=4))
        assert len(again) == 400 and all(r.ok for r in again)
        assert _journal_states(out) == {"ok": 400}


# -- input -------------------------------------------------------------------------------


def test_a_huge_line_is_reported_in_a_few_characters_and_never_held(server, tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as handle:
        handle.write((server.url("/files/a.bin") + "\n").encode())
        handle.write(b"http://x/" + b"a" * (50 * 1024 * 1024) + b"\n")
        handle.write((server.url("/files/b.bin") + "\n").encode())
    out = str(tmp_path / "out")
    # Run under a small parent that reports the child's peak memory (RUSAGE_CHILDREN of its own).
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
             "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", probe, *fetcher_command([str(path), "-o", out])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 2000, len(result.stderr)  # not 50 MB of 'a'
    records = _manifest(os.path.join(out, "manifest.jsonl"))
    bad = [r for r in records if r["status"] == "failed"]
    assert len(records) == 3 and len(bad) == 1
    assert "52,428,8" in bad[0]["url"] + bad[0]["error"]["message"]  # its length is told
    assert len(json.dumps(bad[0])) < 1000
    assert os.path.getsize(os.path.join(out, ".fetcher", "journal.sqlite3")) < 1 << 20
    maxrss_mib = int(result.stdout.rsplit("MAXRSS", 1)[1]) / 1024
    assert maxrss_mib < 100, maxrss_mib  # a 50 MB line held even once would pass this


def test_a_binary_file_as_input_says_it_is_not_a_text_file(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 40)
    result = _run([str(path), "-o", str(tmp_path / "out")])
    assert result.returncode == 2
    assert_one_clear_line(result.stderr, "fetcher: error:", "not a text file")
    assert len(result.stderr.splitlines()) == 1


def test_status_after_an_interrupted_run_says_how_much_of_the_input_it_had_read(server, tmp_path):
    """The journal knows a URL only once the input was read that far: status says so."""
    urls = write_list(tmp_path, _urls(server, 600))
    out = str(tmp_path / "out")
    process = subprocess.Popen(fetcher_command([urls, "-o", out, "--pool", "1", "-q"]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.path.exists(os.path.join(out, "manifest.jsonl.part")):
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 130, err
    status = _run(["status", "-o", out])
    assert status.returncode == 0
    assert "its input has about 600 lines; it had read" in status.stdout, status.stdout
