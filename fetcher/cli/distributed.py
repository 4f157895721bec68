"""``fetcher serve``, ``fetcher work`` and ``fetcher status ADDRESS``: argparse → fetcher.distributed.

Kept out of cli/main.py so that module stays about the local command; it shares
cli/common.py's parser class and fetching-rule flags, and errors.ExitStatus, so a rule means the
same on ``fetcher`` and ``fetcher serve``. The address picks the broker:
``HOST:PORT`` is the manager broker (``serve`` itself), ``redis://``,
``rediss://`` or ``unix://`` a Redis server. This module does the printing;
fetcher.distributed reports events and outcomes as data.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fetcher.cli.common import Parser, add_run_reporting, open_log, prepare_backend
from fetcher.cli.flags import add_flags, flag_values
from fetcher.distributed.protocol import DEFAULT_PORT, parse_address
from fetcher.errors import ConfigError, ExitStatus
from fetcher.options.table import DATASET, NAMING, RULES, RUN, SERVE, WORK

if TYPE_CHECKING:
    from fetcher.distributed.broker import BrokerSpec
    from fetcher.distributed.events import Outcome, WorkerEvent
    from fetcher.distributed.server import Served

PASSWORD_HELP = ("Redis only: file holding the Redis password (default: $FETCHER_REDIS_PASSWORD; "
                 "never on the command line or in the URL, which ps shows)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _note(prog: str) -> Any:
    return lambda line: print(f"{prog}: {line}", file=sys.stderr, flush=True)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends ``serve`` and ``work`` as Ctrl-C does: workers told, leases returned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- broker addresses and credentials ----------------------------------------------------


def add_broker_credentials(parser: argparse.ArgumentParser, serving: bool = False) -> None:
    """--authkey-file (manager broker), --queue and --redis-password-file (Redis broker)."""
    parser.add_argument("--authkey-file", metavar="PATH",
                        help="manager broker only: file holding the shared key (default: $FETCHER_AUTHKEY"
                             + (", else one made in OUT/.fetcher/authkey)" if serving else ")"))
    parser.add_argument("--queue", default="fetcher", metavar="NAME",
                        help="Redis only: the run's name in Redis, so several runs can share one (default: fetcher)")
    parser.add_argument("--redis-password-file", metavar="PATH", help=PASSWORD_HELP)


def broker_spec(address: str, args: argparse.Namespace, note: Any) -> BrokerSpec:
    """The broker a worker or ``status`` talks to: ``HOST:PORT`` (manager) or a Redis URL."""
    from fetcher.distributed.broker import ManagerSpec
    from fetcher.distributed.redis.common import is_redis_url, redis_spec

    if is_redis_url(address):
        return redis_spec(address, args.queue, args.redis_password_file, note)
    from fetcher.distributed.manager import auth

    return ManagerSpec(parse_address(address), auth.worker_key(args.authkey_file, note))


# -- serve -------------------------------------------------------------------------------


def _serve_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fetcher serve", description="Hold a URL list's work for `fetcher work` processes "
                     "on any hosts; write the manifest when every URL is final.",
                     epilog="Exit status: 0 all succeeded, 1 some URLs failed, 2 usage error, 3 stopped: the "
                            "output's disk is full or read-only, 130 interrupted. "
                            "Redis password: $FETCHER_REDIS_PASSWORD or --redis-password-file, never argv.")
    parser.add_argument("input", help="URL list, as for `fetcher` (text, CSV, TSV or JSONL, each "
                                          "optionally .gz, or parquet)")
    parser.add_argument("--bind", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST[:PORT]",
                        help=f"manager broker: address workers connect to (default: 127.0.0.1:{DEFAULT_PORT}, "
                             "this host only; 0.0.0.0 exposes it to the network: read the security note)")
    parser.add_argument("--broker", metavar="URL",
                        help="a Redis server to hold the leases instead: redis://[USER@]HOST:PORT/DB, "
                             "rediss://... (TLS) or unix:///PATH/redis.sock; needs pip install 'fetcher-dl[redis]'")
    add_flags(parser, SERVE, RUN)
    add_broker_credentials(parser, serving=True)
    parser.add_argument("--lease-timeout", type=_positive_float, default=60.0, metavar="S",
                        help="seconds before a URL leased to a silent worker is handed to another (default: 60)")
    add_flags(parser, SERVE, RULES)
    add_run_reporting(parser, "restart")
    add_flags(parser, SERVE, NAMING)
    add_flags(parser, SERVE, DATASET)  # the image checks and resizing run on the workers, where they download
    return parser


def serve_main(argv: list[str]) -> int:
    from fetcher.distributed.server import ServeConfig, serve
    from fetcher.options import Options, prepare_run
    from fetcher.run.progress import Progress
    from fetcher.sources.opening import open_input

    args = _serve_parser().parse_args(argv)
    note = _note("fetcher serve")
    options, _ = prepare_run(Options.create(**flag_values(args, SERVE)))  # workers get the cookies via the broker
    from fetcher.run.outdir import check_output

    check_output(options.output.out, options.output.manifest_path)  # before the key is written there
    spec, stored = _serve_spec(args, options.output.out, note)
    if options.politeness.insecure:
        note("warning: --insecure: no worker verifies TLS certificates; anyone between a worker and a "
             "site can change what it downloads")
    opened = open_input(args.input, options)  # the same set-up as fetcher INPUT's
    total = opened.total
    log = open_log(args.log)
    progress = Progress(total, enabled=not args.quiet and sys.stderr.isatty(), log=log)

    def above_the_bar(line: str) -> None:  # the bar is on screen by now: never glue a line to it
        progress.note(f"fetcher serve: {line}")

    def listening(where: str) -> None:
        if not args.quiet:
            _print_welcome(above_the_bar, where, spec, stored)
        elif args.broker is None and parse_address(args.bind)[1] == 0:
            above_the_bar(f"listening on {where}")  # a port picked by the system is known only from this line

    try:
        with _sigterm_interrupts():
            config = ServeConfig(spec, args.lease_timeout, args.verbose, args.quiet, args.retry_failed)
            served = serve(opened.items, options, progress, config, total=total, on_listening=listening,
                           on_event=above_the_bar)  # "fetcher serve: worker w1 joined ...", as its other lines
        summary = served.summary
        lines: list[str] = []
        if not args.quiet or log is not None:
            lines.extend(closing_lines(served))
            if served.dropped:
                lines.append(f"dropped {served.dropped} malformed broker messages (not ours, or damaged); "
                             "the run went on")
        for line in lines:
            progress.log(line)
    finally:
        if log is not None:
            log.close()
    if not args.quiet:
        print("\n".join(lines))
    return summary.exit_code


def closing_lines(served: Served) -> list[str]:
    """serve's summary: the run, then each worker's manifest records (they add up to the manifest)."""
    pools = [w["pool"] for w in served.workers if w["pool"]]
    many = len(served.workers)
    pool = f"{' + '.join(map(str, pools)) or '?'} on {many} worker{'s' if many != 1 else ''}"
    lines = [served.summary.describe("remote", pool)]
    for w in served.workers:
        lines.append(f"  worker {w['id']} ({w['backend']}, pool {w['pool']}): "
                     f"{_records(served.records.get(w['id']))}{' (gone before the end)' if w['gone'] else ''}, "
                     f"files in {w['host']}:{w['out']}")
    if served.records.get(None):
        lines.append(f"  no worker: {_records(served.records[None])} (input lines that are not URLs, or URLs "
                     "that ended before any worker had them)")
    return lines


def _records(counts: Counter[str] | None) -> str:
    counts = counts or Counter()
    total = sum(counts.values())
    return (f"{total} record{'s' if total != 1 else ''} ({counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['skipped']} skipped)")


def _serve_spec(args: argparse.Namespace, out: str, note: Any) -> tuple[BrokerSpec, str | None]:
    """The broker ``serve`` opens, and where its generated authkey is kept (manager broker, none given)."""
    from fetcher.distributed.manager import auth
    from fetcher.distributed.broker import ManagerSpec
    from fetcher.distributed.redis.common import redis_spec

    if args.broker is not None:
        if args.authkey_file is not None:
            raise ConfigError("--authkey-file is for the manager broker; Redis authenticates with its own "
                              "user and password")
        return redis_spec(args.broker, args.queue, args.redis_password_file, note), None
    bind = parse_address(args.bind)
    key, stored = auth.server_key(args.authkey_file, out, note)
    return ManagerSpec(bind, key), stored


def _print_welcome(note: Any, where: str, spec: BrokerSpec, stored: str | None) -> None:
    from fetcher.distributed.broker import RedisSpec

    if isinstance(spec, RedisSpec):
        note(f"serving through Redis at {where}")
        note(f"start workers with: fetcher work {spec.url} --queue {spec.queue} -o DIR")
        return
    note(f"listening on {where}")
    if not where.startswith("127.") and not where.startswith("localhost"):
        note("warning: reachable from other hosts; calls are pickles, so anyone with the key can run code "
             "here: use it on a network you trust, or tunnel it (ssh -L), or use --broker redis://")
    if stored is not None:
        note(f"authkey kept in {stored} (mode 0600); copy that file to each worker host, then run there:")
        note(f"  fetcher work {where} --authkey-file PATH -o DIR      (or FETCHER_AUTHKEY=\"$(cat PATH)\")")
    else:
        note(f"start workers with the same key: fetcher work {where} -o DIR")


# -- work --------------------------------------------------------------------------------


def _work_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fetcher work", description="Fetch URLs leased from a `fetcher serve` run "
                     "into a local folder, until the server says the run is over.",
                     epilog="Exit status: 0 the run is over, 1 the broker could not be reached, "
                            "2 usage error or wrong authkey/password, 130 interrupted (here or at the server). "
                            "Redis password: $FETCHER_REDIS_PASSWORD or --redis-password-file, never argv.")
    parser.add_argument("server", metavar="ADDRESS",
                        help=f"HOST:PORT of a manager-broker `fetcher serve` (port default: {DEFAULT_PORT}), or "
                             "the Redis server of a `fetcher serve --broker`: redis://[USER@]HOST:PORT/DB, "
                             "rediss://... or unix:///PATH")
    add_flags(parser, WORK, RUN, only=("backend", "pool"))
    parser.add_argument("--prefetch", type=int, default=None, metavar="N",
                        help="URLs leased beyond the pool, so it never waits for the server; also the "
                             "batch size of lease calls (default: pool/4, at least 1; 0: lease one by one)")
    add_flags(parser, WORK, RUN, only=("out",))
    add_broker_credentials(parser)
    parser.add_argument("--rpc-timeout", type=_positive_float, default=10.0, metavar="S",
                        help="deadline of every call to the broker (default: 10)")
    parser.add_argument("--give-up-after", type=_positive_float, default=600.0, metavar="S",
                        help="exit 1 after this long without reaching the broker (default: 600)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def work_main(argv: list[str]) -> int:
    args = _work_parser().parse_args(argv)
    if args.prefetch is not None and args.prefetch < 0:
        raise ConfigError(f"--prefetch must be 0 or more, not {args.prefetch}")
    prepare_backend(args.backend)  # before anything imports requests: gevent patches first
    from fetcher.backends import get_backend
    from fetcher.distributed.worker import Worker, WorkerConfig

    get_backend(args.backend)  # an unknown name is a usage error now, not after connecting
    note = _note("fetcher work")
    spec = broker_spec(args.server, args, note)
    prefetch = max(1, args.pool // 4) if args.prefetch is None else args.prefetch
    config = WorkerConfig(spec, args.out, args.backend, args.pool, prefetch, args.rpc_timeout, args.give_up_after)

    def show(event: WorkerEvent) -> None:
        if event.important or not args.quiet:
            note(event.message)

    with _sigterm_interrupts():
        return exit_status(Worker(config, on_event=show).run())


def exit_status(outcome: Outcome) -> int:
    """A worker's outcome as its exit status (errors.ExitStatus: the one definition)."""
    from fetcher.distributed.events import Outcome

    return {Outcome.DONE: ExitStatus.OK, Outcome.UNREACHABLE: ExitStatus.FAILED,
            Outcome.STOPPED: ExitStatus.INTERRUPTED, Outcome.INTERRUPTED: ExitStatus.INTERRUPTED}[outcome]


# -- status ADDRESS ----------------------------------------------------------------------


def remote_status(args: argparse.Namespace) -> int:
    """``fetcher status ADDRESS``: a running run's counts and connected workers."""
    from fetcher.distributed.brokers import worker_sessions
    from fetcher.errors import LinkError

    spec = broker_spec(args.server, args, _note("fetcher status"))
    try:
        session = worker_sessions(spec)(5.0)
        try:
            stats = session.stats()
        finally:
            session.close()
    except LinkError as exc:
        print(f"fetcher: error: {exc}", file=sys.stderr)
        return ExitStatus.FAILED
    for line in describe_stats(spec.where, stats):
        print(line)
    return ExitStatus.OK


def describe_stats(where: str, stats: dict[str, Any]) -> list[str]:
    final, counts = stats["final"], stats["counts"]
    total = stats["total"]
    done = sum(final.values())
    lines = [f"server {where} (run {stats['run_id']}, {stats['state']}): "
             f"{done}{'' if total is None else f' of about {total}'} URLs final: "
             + ", ".join(f"{final.get(s, 0)} {s}" for s in ("ok", "failed", "skipped"))
             + f"; {stats['leased']} leased now, {stats['queued']} queued",
             f"leases: {counts.get('leased', 0)} handed out in all, {counts.get('expired', 0)} expired "
             f"(timeout {stats['lease_timeout']:g} s), {counts.get('released', 0)} returned; "
             f"{counts.get('duplicates', 0)} late duplicates ignored",
             f"workers connected: {len(stats['workers'])}"]
    shards = stats.get("shards")
    if isinstance(shards, dict):
        lines.insert(2, f"webdataset shards: {shards.get('done', 0)} finished; in progress: "
                        f"{shards.get('filling', 0)} filling, {shards.get('sealed', 0)} being written, "
                        f"{shards.get('committing', 0)} being renamed ({shards.get('rows_held', 0)} rows held "
                        f"until their shard is finished); {shards.get('stale', 0)} late shards refused")
    for w in stats["workers"]:
        lines.append(f"  {w['id']}: {w['backend']} pool {w['pool']}, holding {w['held']}, {w['done']} results sent, "
                     f"files in {w['host']}:{w['out']}, last call {w['seen_s_ago']:g} s ago")
    return lines
