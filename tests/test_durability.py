"""--durability: the order of the flushes in a real run (strace), and what a rerun trusts."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from fetcher.download import durability
from fetcher.api import fetch
from fetcher.errors import ConfigError
from fetcher.run.journal import Journal, journal_path
from fetcher.options import Options
from ci import missing
from proc_helpers import read_manifest
from conftest import HAVE_PYCURL

RUN_TIMEOUT_S = 120
TRACED = "write,pwrite64,writev,pwritev,fsync,fdatasync,syncfs,rename,renameat,renameat2,link,linkat"
FOLDERS = ("a", "b/c", "b/c/d")


# -- strace: installed by the test set-up where it is missing ----------------------------------


def _strace() -> str:
    """The strace binary: installed with apt-get when missing and root; skipped only outside CI."""
    found = shutil.which("strace")
    if found:
        return found
    if os.geteuid() == 0:
        for command in (["apt-get", "install", "-y", "-q", "strace"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "strace"]):
            subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=600, check=False)
            found = shutil.which("strace")
            if found:
                return found
    missing("strace is missing, and installing it needs root (apt-get install strace)")


@pytest.fixture(scope="session")
def strace() -> str:
    return _strace()


# -- reading a trace ---------------------------------------------------------------------------


@dataclass
class Call:
    name: str
    args: str
    start: int  # line of the trace where the call began
    end: int  # line where it returned
    result: int = 0

    @property
    def fd_path(self) -> str | None:
        found = re.match(r"\d+<([^>]*)>", self.args)
        return found.group(1) if found else None

    @property
    def strings(self) -> list[str]:
        return re.findall(r'"((?:[^"\\]|\\.)*)"', self.args)


@dataclass
class Trace:
    calls: list[Call] = field(default_factory=list)

    @classmethod
    def read(cls, path: str) -> Trace:
        trace, pending = cls(), {}
        line_re = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$")
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle):
                found = line_re.match(line.rstrip("\n"))
                if not found:
                    continue
                pid, resumed_name, resumed_rest, name, rest = found.groups()
                if resumed_name:
                    call = pending.pop((pid, resumed_name), None)
                    if call is None:
                        continue
                    call.args += resumed_rest
                    call.end = number
                else:
                    call = Call(name, rest, number, number)
                    if rest.endswith("<unfinished ...>"):
                        call.args = rest[: -len("<unfinished ...>")]
                        pending[(pid, name)] = call
                        trace.calls.append(call)
                        continue
                returned = re.search(r"\)\s+=\s+(-?\d+)", call.args)
                call.result = int(returned.group(1)) if returned else -1
                if call not in trace.calls:
                    trace.calls.append(call)
        trace.calls = [call for call in trace.calls if call.result >= 0]
        return trace

    def renames(self, destination: str) -> list[Call]:
        return [c for c in self.calls if c.name in ("rename", "renameat", "renameat2") and len(c.strings) == 2
                and c.strings[1] == destination]

    def flushes_of(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.name in ("fsync", "fdatasync") and c.fd_path == path]

    def syncfs_calls(self) -> list[Call]:
        return [c for c in self.calls if c.name == "syncfs"]

    def writes_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.name in ("write", "pwrite64", "writev", "pwritev") and c.fd_path == path]

    def wal_commit_naming(self, wal: str, marker: str) -> Call:
        """The sync of the WAL that commits the first frame holding ``marker`` (a row's bytes)."""
        frames = [c for c in self.writes_to(wal) if marker in c.args]
        assert frames, f"no journal frame holds {marker!r}"
        syncs = [c for c in self.flushes_of(wal) if c.start > frames[0].end]
        assert syncs, f"the journal frame holding {marker!r} was never synced (synchronous=FULL)"
        # Synced by its own commit, not only by a checkpoint (synchronous=NORMAL syncs the WAL there and
        # nowhere else): either a later commit writes the WAL after that sync, or the checkpoint that
        # follows (its first write to the database file) comes after a second sync of the WAL.
        checkpoint = min((c.start for c in self.writes_to(wal.removesuffix("-wal")) if c.start > frames[0].end),
                         default=None)
        before_checkpoint = [c for c in syncs if checkpoint is None or c.end < checkpoint]
        assert any(c.start > syncs[0].end for c in self.writes_to(wal)) or len(before_checkpoint) >= 2, \
            f"the journal frame holding {marker!r} was synced only by a checkpoint (synchronous=NORMAL?)"
        return syncs[0]


def _check_order(trace: Trace, out: str, names: list[str], level: str) -> None:
    """For every file: data flushed, then renamed, then its folders flushed, then the journal commit."""
    wal = os.path.join(out, ".fetcher", "journal.sqlite3-wal")
    for name in names:
        target = os.path.join(out, name)
        part = target + ".part"
        renames = trace.renames(target)
        assert len(renames) == 1, f"{name}: renames {renames}"
        rename = renames[0]
        assert rename.strings[0] == part
        last_write = max(c.end for c in trace.writes_to(part))
        data_flushes = trace.flushes_of(part) if level == "full" else trace.syncfs_calls()
        assert any(last_write < c.start and c.end < rename.start for c in data_flushes), \
            f"{name}: no {'fdatasync of the .part' if level == 'full' else 'syncfs'} between its last write " \
            f"and its rename"
        # The completed row holds the name and then the path (the same text), adjacent in the record.
        commit = trace.wal_commit_naming(wal, name + name)
        folder = os.path.dirname(target)
        while len(folder) >= len(out):
            assert any(rename.end < c.start and c.end < commit.start for c in trace.flushes_of(folder)), \
                f"{name}: {folder} not fsynced between the rename and the journal commit naming it"
            folder = os.path.dirname(folder)


def _traced_run(strace: str, server, tmp_path, level: str, backend: list[str]) -> tuple[Trace, str, list[str]]:
    out = str(tmp_path / "out")
    names = [f"{folder}/f{i}.jpg" for folder in FOLDERS for i in range(4)]
    listing = tmp_path / "urls.csv"
    rows = [f"{server.url('/files/' + name.replace('/', '-') + f'?size={1000 + i * 700}')},{name}\n"
            for i, name in enumerate(names)]
    listing.write_text("url,filename\n" + "".join(rows))
    log = str(tmp_path / "trace.txt")
    command = [strace, "-f", "-y", "-qq", "-e", f"trace={TRACED}", "-e", "signal=none", "-s", "9000", "-o", log,
               sys.executable, "-m", "fetcher", str(listing), "-o", out, "--durability", level, "-q", *backend]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    records = read_manifest(os.path.join(out, "manifest.jsonl"))
    assert sorted(r["path"] for r in records) == sorted(names) and all(r["status"] == "ok" for r in records)
    return Trace.read(log), out, names


BACKENDS = [
    pytest.param("batch", ["--backend", "thread", "--pool", "4"], id="batch-thread"),
    pytest.param("batch", ["--backend", "process", "--pool", "4", "--processes", "2"], id="batch-process"),
    pytest.param("full", ["--backend", "thread", "--pool", "4"], id="full-thread"),
    pytest.param("batch", ["--backend", "multi", "--client", "curl", "--pool", "4"], id="batch-multi",
                 marks=pytest.mark.skipif(not HAVE_PYCURL, reason="needs pycurl")),
    pytest.param("full", ["--backend", "process", "--client", "curl", "--pool", "4", "--processes", "2"],
                 id="full-process-curl", marks=pytest.mark.skipif(not HAVE_PYCURL, reason="needs pycurl")),
]


@pytest.mark.parametrize(("level", "backend"), BACKENDS)
def test_every_file_is_flushed_before_its_name_and_its_folder_before_its_journal_row(
        strace, server, tmp_path, level, backend) -> None:
    trace, out, names = _traced_run(strace, server, tmp_path, level, backend)
    _check_order(trace, out, names, level)
    # The manifest too: data before its name, its folder after.
    manifest = os.path.join(out, "manifest.jsonl")
    rename = trace.renames(manifest)[0]
    assert any(c.end < rename.start for c in trace.flushes_of(manifest + ".part"))
    assert any(c.start > rename.end for c in trace.flushes_of(out))


def test_the_checker_sees_a_run_without_flushes(strace, server, tmp_path) -> None:
    """--durability none: the same trace fails the check (the test can fail)."""
    trace, out, names = _traced_run(strace, server, tmp_path, "none", ["--backend", "thread", "--pool", "4"])
    assert not trace.syncfs_calls() and not any(trace.flushes_of(os.path.join(out, n) + ".part") for n in names)
    with pytest.raises(AssertionError):
        _check_order(trace, out, names, "batch")


# -- the switch ---------------------------------------------------------------------------------


def test_an_unknown_level_is_a_usage_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="durability must be one of batch, full, none"):
        Options.create(durability="paranoid")
    from fetcher.cli import main

    assert main([str(tmp_path / "none.txt"), "--durability", "sometimes", "-o", str(tmp_path)]) == 2


@pytest.mark.parametrize("level", ["batch", "full", "none"])
def test_each_level_downloads_the_same_files(server, tmp_path, level) -> None:
    urls = [server.url(f"/files/x{i}.jpg?size={500 + i}") for i in range(30)]
    results = list(fetch(urls, out=str(tmp_path / "out"), pool=4, durability=level))
    assert sorted(r.bytes for r in results) == list(range(500, 530))
    assert all(r.ok and r.staged == 0 and os.path.getsize(tmp_path / "out" / r.path) == r.bytes for r in results)
    assert not [n for _, _, files in os.walk(tmp_path / "out") for n in files if n.endswith(".part")]
    journal = Journal(str(tmp_path / "out"))
    try:
        assert [row[1:] for row in journal.run_history()] == [(level, durability.boot_id())]
    finally:
        journal.close()


# -- what a rerun trusts ------------------------------------------------------------------------


def test_suspect_runs() -> None:
    boot, earlier = "boot-now", "boot-before"
    assert durability.suspect_runs([(1, "none", boot)], 9, boot) == set()  # no power lost since
    assert durability.suspect_runs([(1, "none", earlier)], 9, boot) == {1}
    assert durability.suspect_runs([(1, "batch", earlier), (2, "full", earlier)], 9, boot) == set()
    assert durability.suspect_runs([(1, None, None)], 9, boot) == {1}  # a journal older than the flag
    # A later durable run of the same boot began with a syncfs: what run 1 left was on disk by then.
    assert durability.suspect_runs([(1, "none", earlier), (2, "batch", earlier)], 9, boot) == set()
    assert durability.suspect_runs([(1, "none", earlier), (2, "batch", "another")], 9, boot) == {1}


def _edit_journal(out: str, sql: str) -> None:
    """Change the journal behind fetcher's back, as a crash or a power loss would leave it."""
    db = sqlite3.connect(journal_path(out), isolation_level=None)
    try:
        db.execute(sql)
    finally:
        db.close()


def _pretend_an_earlier_boot(out: str) -> None:
    """Make the journal's runs look as if they ran before a reboot (as after a power loss)."""
    _edit_journal(out, "UPDATE runs SET boot = 'an-earlier-boot', finished = NULL")


def test_after_a_reboot_files_of_a_none_run_are_read_back_and_a_cut_one_fetched_again(server, tmp_path) -> None:
    out = str(tmp_path / "out")
    urls = [server.url(f"/files/r{i}.jpg?size=2000") for i in range(4)]
    first = {r.url: r for r in fetch(urls, out=out, durability="none")}
    # What a power loss can leave of a run that never flushed: a final name on cut data, same size.
    damaged = os.path.join(out, first[urls[0]].path)
    with open(damaged, "r+b") as handle:
        handle.write(b"\0" * 100)
    _pretend_an_earlier_boot(out)
    second = {r.url: r for r in fetch(urls, out=out, durability="batch")}
    assert second[urls[0]].status.value == "ok" and second[urls[0]].attempts == 1  # fetched again
    assert all(second[u].status.value == "skipped" for u in urls[1:])  # read back, matched: no request
    assert second[urls[0]].sha256 == first[urls[0]].sha256


def test_after_a_reboot_a_batch_runs_files_are_trusted_by_size(server, tmp_path) -> None:
    out = str(tmp_path / "out")
    urls = [server.url(f"/files/t{i}.jpg?size=2000") for i in range(3)]
    first = {r.url: r for r in fetch(urls, out=out)}
    changed = os.path.join(out, first[urls[0]].path)
    with open(changed, "r+b") as handle:  # same size: a durable run's row is not read back
        handle.write(b"\0" * 100)
    _pretend_an_earlier_boot(out)
    second = list(fetch(urls, out=out))
    assert all(r.status.value == "skipped" for r in second)


def test_after_a_reboot_an_unrecorded_file_of_a_none_run_is_fetched_again(server, tmp_path) -> None:
    out = str(tmp_path / "out")
    urls = [server.url(f"/files/u{i}.jpg?size=3000") for i in range(2)]
    first = {r.url: r for r in fetch(urls, out=out, durability="none")}
    # The run's last commit lost: rows back to pending, the files still under their names.
    _edit_journal(out, "UPDATE urls SET state = 'pending', path = NULL")
    cut = os.path.join(out, first[urls[0]].path)
    with open(cut, "r+b") as handle:
        handle.truncate(1000)
    _pretend_an_earlier_boot(out)
    second = {r.url: r for r in fetch(urls, out=out)}
    assert all(r.status.value == "ok" and r.attempts == 1 and r.bytes == 3000 for r in second.values())


def test_unrecorded_files_of_an_interrupted_batch_run_are_recovered_without_a_request(server, tmp_path) -> None:
    out = str(tmp_path / "out")
    urls = [server.url(f"/files/v{i}.jpg?size=3000") for i in range(2)]
    list(fetch(urls, out=out))
    _edit_journal(out, "UPDATE urls SET state = 'pending', path = NULL")
    _pretend_an_earlier_boot(out)
    second = list(fetch(urls, out=out))
    assert all(r.status.value == "skipped" and r.attempts == 0 and r.bytes == 3000 for r in second)


def test_staged_is_the_last_field_of_a_result() -> None:
    """flusher.py rebuilds a named Result from its fields without the last one, ``staged``."""
    import dataclasses

    from fetcher.models import Result

    assert dataclasses.fields(Result)[-1].name == "staged"


# -- a flush the disk refuses -------------------------------------------------------------------


def _refuse_syncfs(monkeypatch, code: int) -> None:
    import errno as errno_module

    from fetcher.run import flusher

    def refused(path: str) -> bool:
        raise OSError(code, errno_module.errorcode[code], path)

    monkeypatch.setattr(flusher, "syncfs", refused)


def test_a_flush_the_disk_refuses_fails_its_files_and_claims_none(server, tmp_path, monkeypatch) -> None:
    import errno as errno_module

    _refuse_syncfs(monkeypatch, errno_module.EIO)
    out = tmp_path / "out"
    urls = [server.url(f"/files/e{i}.jpg?size=1500") for i in range(6)]
    results = list(fetch(urls, out=str(out), pool=3))
    assert [r.error.kind for r in results if r.error] == ["io"] * 6
    assert all("cannot flush the file to disk" in r.error.message for r in results if r.error)
    left = [n for _, _, files in os.walk(out) for n in files if not n.startswith(("journal", "lock", "manifest"))]
    assert left == []  # no final name, no .part


def test_a_full_disk_at_the_flush_stops_the_run(server, tmp_path, monkeypatch) -> None:
    import errno as errno_module

    from fetcher.errors import StorageError

    _refuse_syncfs(monkeypatch, errno_module.ENOSPC)
    urls = [server.url(f"/files/s{i}.jpg?size=1500") for i in range(4)]
    with pytest.raises(StorageError, match="cannot flush the file to disk"):
        list(fetch(urls, out=str(tmp_path / "out"), pool=2))


def test_a_none_run_of_this_boot_is_trusted_as_before(server, tmp_path) -> None:
    """No power was lost since (a kill -9 at most): the page cache holds what it wrote; no read-back."""
    out = str(tmp_path / "out")
    urls = [server.url(f"/files/w{i}.jpg?size=2000") for i in range(2)]
    first = {r.url: r for r in fetch(urls, out=out, durability="none")}
    with open(os.path.join(out, first[urls[0]].path), "r+b") as handle:
        handle.write(b"\0" * 100)  # same size: only a read-back would see it
    _edit_journal(out, "UPDATE runs SET finished = NULL")  # killed, same boot
    assert all(r.status.value == "skipped" for r in fetch(urls, out=out, durability="none"))
