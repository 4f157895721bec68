"""Which stream carries what, the pipe recipes as written, and --log (issue 23, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bash(script: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", 'fetcher() { "$PY" -m fetcher "$@"; }\n' + script], cwd=cwd, text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PY": sys.executable, "PYTHONPATH": ROOT})


def write_list(tmp_path, server, n: int = 6) -> list[str]:
    urls = [server.url(f"/files/p{i}.jpg") for i in range(n)] + [server.url("/status/404")]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    return urls


def test_verbose_lines_go_to_standard_output_and_nothing_per_url_to_standard_error(server, tmp_path):
    urls = write_list(tmp_path, server)
    done = bash("fetcher -v urls.txt -o downloads --backend thread", tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert sum(line.startswith("ok ") for line in lines) == 6 and sum(line.startswith("failed ") for line in lines) == 1
    assert lines[-1].startswith("Finished 7 URLs")
    assert not any(url in done.stderr for url in urls), done.stderr


def test_the_pipe_recipe_gets_three_url_lines_and_the_run_still_finishes(server, tmp_path):
    write_list(tmp_path, server)
    done = bash("fetcher -v urls.txt -o downloads | head -n 3; echo \"status ${PIPESTATUS[0]}\"", tmp_path)
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith(("ok ", "failed ")) for line in lines[:3]), lines
    assert lines[3] == "status 1"  # the run's own status: a 404 failed
    assert len((tmp_path / "downloads" / "manifest.jsonl").read_text().splitlines()) == 7


def test_failures_alone_and_the_summary_alone(server, tmp_path):
    write_list(tmp_path, server)
    failures = bash("fetcher -v urls.txt -o a | grep '^failed'", tmp_path).stdout.splitlines()
    assert len(failures) == 1 and "/status/404: http-status: HTTP 404" in failures[0]
    summary = bash("fetcher urls.txt -o b 2>/dev/null | tail -n 1", tmp_path).stdout
    assert summary.startswith("Finished 7 URLs") and summary.count("\n") == 1


def test_log_keeps_every_url_whatever_quiet_and_appends(server, tmp_path):
    write_list(tmp_path, server)
    first = bash("fetcher urls.txt -o downloads -q --log fetch.log", tmp_path)
    assert first.returncode == 1 and first.stdout == "" and first.stderr == ""
    second = bash("fetcher urls.txt -o downloads -q --log fetch.log", tmp_path)
    assert second.returncode == 1
    lines = (tmp_path / "fetch.log").read_text().splitlines()
    assert len(lines) == 16  # 7 URLs and a summary, twice
    assert sum(" ok " in line for line in lines) == 6 and sum(" skipped " in line for line in lines) == 6
    assert lines[7].split(" ", 1)[1].startswith("Finished 7 URLs") and lines[0][:2] == "20"


def test_a_log_that_cannot_be_opened_is_a_usage_error(server, tmp_path):
    write_list(tmp_path, server)
    done = bash("fetcher urls.txt -o downloads --log no/such/folder/fetch.log", tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("fetcher: error: cannot open the --log file")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "downloads" / "manifest.jsonl").exists()
