"""What is measured: fetcher configurations and the reference tools, as command lines.

Adding a fetcher configuration is one line in ``FETCHER_CONFIGS`` (or one
``--fetcher '...'`` flag): the words are fetcher's own arguments, the first
being the backend.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from bench_data import Dataset

# (dataset, empty output folder which is also the cwd, pool) -> argv
CommandBuilder = Callable[[Dataset, str, int], list[str]]


@dataclass(frozen=True)
class FetcherConfig:
    """One way of running fetcher: ``BACKEND [more fetcher arguments]``."""

    label: str
    args: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> FetcherConfig:
        words = shlex.split(spec)
        if not words:
            raise ValueError("an empty fetcher configuration")
        return cls(label="fetcher " + " ".join(words), args=("--backend", *words))


FETCHER_CONFIGS: tuple[FetcherConfig, ...] = (
    FetcherConfig.parse("thread"),
    FetcherConfig.parse("process"),  # one worker per CPU, threads with requests inside
    FetcherConfig.parse("gevent"),
    FetcherConfig.parse("thread --client curl"),  # the libcurl transport, an easy handle per thread
    FetcherConfig.parse("multi --client curl"),  # libcurl's multi interface, one thread
    FetcherConfig.parse("process --client curl"),  # a multi loop in each of one worker per CPU
    FetcherConfig.parse("gevent --client curl"),  # one multi handle on gevent's event loop
    FetcherConfig.parse("auto --client auto"),  # what fetcher picks itself (fetcher/auto.py)
)


@dataclass(frozen=True)
class Job:
    """A row of the table: a label and how to build its command line."""

    label: str
    command: CommandBuilder
    is_reference: bool = False  # the row every ratio is taken against (curl)
    version_argv: tuple[str, ...] = ()  # prints the tool's version, for the report header


def fetcher_job(config: FetcherConfig, launcher: list[str]) -> Job:
    def command(dataset: Dataset, out: str, pool: int) -> list[str]:
        # Every URL of a dataset is on one host: lift fetcher's polite per-host cap
        # (default 8) to the pool, as curl, wget2 and aria2c open that many too.
        return [*launcher, dataset.url_list, *config.args, "--pool", str(pool),
                "--per-host", str(pool), "-o", out, "--quiet"]

    return Job(config.label, command)


def curl_job(binary: str) -> Job:
    def command(dataset: Dataset, out: str, pool: int) -> list[str]:
        # -q first: ignore ~/.curlrc. Outputs in the config are relative to the cwd (= out).
        # --no-progress-meter, not --silent: curl 7.88 still draws its parallel meter with -s.
        return [binary, "-q", "--parallel", "--parallel-max", str(pool), "--no-progress-meter", "--show-error",
                "--fail", "--config", dataset.curl_config]

    return Job("curl --parallel", command, is_reference=True, version_argv=(binary, "--version"))


def wget2_job(binary: str) -> Job:
    def command(dataset: Dataset, out: str, pool: int) -> list[str]:
        return [binary, "--no-config", "--quiet", "--progress=none", f"--max-threads={pool}",
                "--directory-prefix", out, "--input-file", dataset.url_list]

    return Job("wget2", command, version_argv=(binary, "--version"))


def aria2c_job(binary: str) -> Job:
    def command(dataset: Dataset, out: str, pool: int) -> list[str]:
        # No preallocation and no renaming: write each file once, as the others do.
        return [binary, "--no-conf", "--quiet=true", "-j", str(pool), "--dir", out,
                "--input-file", dataset.url_list, "--file-allocation=none",
                "--auto-file-renaming=false", "--allow-overwrite=true", "--summary-interval=0"]

    return Job("aria2c", command, version_argv=(binary, "--version"))


def tool_env() -> dict[str, str]:
    """The environment every tool runs in: no proxy, so all traffic stays on 127.0.0.1."""
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # Let fetcher's .pyc files be written once and reused (see PYTHONPYCACHEPREFIX in run.py).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# --- verification -----------------------------------------------------------

# fetcher names files STEM-<12 hex digits of the URL's hash>.EXT under a host folder.
_HASHED = re.compile(r"^(?P<stem>.+)-[0-9a-f]{12}(?P<ext>\.[^.]*)?$")
# fetcher's manifest and journal folder (.fetcher/: lock, SQLite journal), the filesystem's lost+found.
IGNORED_AT_TOP = {"manifest.jsonl", ".fetcher", "lost+found"}


def _source_name(filename: str, expected: dict[str, int]) -> str:
    if filename in expected:
        return filename
    match = _HASHED.match(filename)
    if match:
        return match["stem"] + (match["ext"] or "")
    return filename


def _error_line(stderr_tail: str) -> str:
    """The most telling line of a failed tool's stderr (curl interleaves a progress meter)."""
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line[line.lower().find("curl:"):] if "curl:" in line else line
    return lines[-1] if lines else ""


def _manifest_failures(out: str) -> str:
    """'N failed, e.g. KIND: MESSAGE' from fetcher's manifest, when there is one."""
    try:
        with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError):
        return ""
    failed = [r for r in records if r.get("status") != "ok"]
    if not failed:
        return ""
    error = failed[0].get("error") or {}
    return f"{len(failed)} failed in the manifest, e.g. {error.get('kind')}: {error.get('message')}"


def verify(out: str, dataset: Dataset, exit_code: int, timed_out: bool, stderr_tail: str) -> str | None:
    """None if the run delivered every file whole; otherwise why not, in one line."""
    if timed_out:
        return "timed out"
    if exit_code != 0:
        detail = _manifest_failures(out) or _error_line(stderr_tail)
        return f"exit {exit_code}" + (f": {detail[:200]}" if detail else "")
    seen: dict[str, int] = {}
    unexpected: list[str] = []
    for folder, dirs, files in os.walk(out):
        if folder == out:
            dirs[:] = [d for d in dirs if d not in IGNORED_AT_TOP]
            files = [f for f in files if f not in IGNORED_AT_TOP]
        for filename in files:
            name = _source_name(filename, dataset.files)
            if name not in dataset.files or name in seen:
                unexpected.append(os.path.relpath(os.path.join(folder, filename), out))
                continue
            seen[name] = os.path.getsize(os.path.join(folder, filename))
    problems = []
    missing = len(dataset.files) - len(seen)
    if missing:
        problems.append(f"{missing} of {dataset.count} files missing")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected files (e.g. {unexpected[0]})")
    wrong = [name for name, size in seen.items() if dataset.files[name] != size]
    if wrong:
        problems.append(f"{len(wrong)} files of the wrong size (e.g. {wrong[0]}: "
                        f"{seen[wrong[0]]} bytes, not {dataset.files[wrong[0]]})")
    return "; ".join(problems) or None
