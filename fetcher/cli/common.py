"""What the ``fetcher`` command and its ``serve`` and ``work`` subcommands share.

The argument parser that reports a usage error as one line, the flags of the
fetching rules and of run reporting, and small helpers. Nothing heavy is
imported here either: the gevent backend must monkey-patch before requests loads.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

from fetcher.errors import ConfigError

_T = TypeVar("_T")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, then exits 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}" if least
                                             else f"must be 0 or more, not {value}")
        return value
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def add_run_reporting(parser: argparse.ArgumentParser, rerun: str) -> None:
    """--no-retry-failed, -q and -v: shared by ``fetcher`` and ``fetcher serve``."""
    parser.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                        help=f"on a {rerun}, keep URLs that failed before as failed instead of trying them again")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    noise.add_argument("-v", "--verbose", action="store_true", help="print a line for every URL, not only failures")


def add_fetching_rules(parser: argparse.ArgumentParser) -> None:
    # Over 40 lines: one declaration per flag, in --help's order; splitting it would only scatter them.
    retry = parser.add_argument_group("retries and deadlines")
    retry.add_argument("--timeout", default="10,30", metavar="S",
                       help="connect and read timeout in seconds: one number for both, or CONNECT,READ "
                            "(default: 10,30)")
    retry.add_argument("--retries", type=non_negative_int, default=3, metavar="N",
                       help="retries after a connection error, timeout, truncated body, 408, 425, 429 or 5xx "
                            "(default: 3)")
    retry.add_argument("--backoff", type=float, default=0.5, metavar="S",
                       help="first retry delay, doubled on each retry, with jitter (default: 0.5)")
    retry.add_argument("--backoff-cap", type=float, default=30.0, metavar="S",
                       help="longest backoff between two retries (default: 30)")
    retry.add_argument("--max-retry-after", type=float, default=300.0, metavar="S",
                       help="longest Retry-After honoured; a host is paused that long at most (default: 300)")
    retry.add_argument("--max-time", type=float, default=0.0, metavar="S",
                       help="deadline for one whole download, connect included (default: none)")
    retry.add_argument("--min-speed", default="0", metavar="BYTES",
                       help="cut a download slower than BYTES/s over --min-speed-time (e.g. 1K; default: off)")
    retry.add_argument("--min-speed-time", type=float, default=10.0, metavar="S",
                       help="window for --min-speed (default: 10)")
    polite = parser.add_argument_group("politeness")
    polite.add_argument("--per-host", type=non_negative_int, default=8, metavar="N",
                        help="most concurrent requests to one host, across all workers; 0: no cap (default: 8)")
    polite.add_argument("--delay", type=float, default=0.0, metavar="S",
                        help="least seconds between two requests to one host (default: 0)")
    polite.add_argument("--robots", action="store_true",
                        help="obey robots.txt (RFC 9309): fetched once per site before its first request; a "
                             "disallowed URL is recorded with error kind robots, never requested; Crawl-delay "
                             "spaces requests to the site (default: robots.txt is never fetched)")
    polite.add_argument("--user-agent", default="", metavar="TEXT",
                        help="User-Agent header (default: fetcher/VERSION)")
    polite.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE' | @FILE",
                        help="extra request header; repeat for more. @FILE reads headers from FILE, one per "
                             "line, so a token stays off the command line (which ps shows)")
    polite.add_argument("--cookies", metavar="FILE", help="Netscape/Mozilla cookies.txt file to send cookies from")
    polite.add_argument("--insecure", action="store_true",
                        help="do not verify TLS certificates (dangerous; off by default)")
    network = parser.add_argument_group("network (docs/network.md)")
    network.add_argument("--proxy", default="", metavar="URL | @FILE",
                         help="send every request through this proxy: http://, https://, socks5:// or "
                              "socks5h:// (the proxy resolves names), optionally USER:PASSWORD@HOST:PORT; "
                              "@FILE reads the URL from FILE, so a password stays off the command line. "
                              "Default: http_proxy, https_proxy, all_proxy and no_proxy, as curl reads them")
    network.add_argument("--limit-rate", default="0", metavar="RATE",
                         help="cap the run's download bandwidth, all its processes together, in bytes per "
                              "second: e.g. 500K, 10M, 1G (powers of 1024); each fetcher work caps itself "
                              "(default: no cap)")
    network.add_argument("--dns-servers", default="", metavar="IP[:PORT],...",
                         help="DNS servers the run's resolver asks instead of /etc/resolv.conf's")
    network.add_argument("--no-dns-cache", dest="dns_cache", action="store_false",
                         help="let each worker's client resolve names itself instead of one resolver for the "
                              "run (which resolves hosts ahead, once, and fails an unresolvable host's URLs at "
                              "once, kind dns); off anyway behind a proxy")
    check = parser.add_argument_group("validation")
    check.add_argument("--max-size", default="0", metavar="SIZE",
                       help="largest body accepted, e.g. 10M or 1G, counted after decompression (default: none)")
    check.add_argument("--min-size", default="0", metavar="SIZE", help="smallest body accepted (default: 0)")
    check.add_argument("--accept", default="", metavar="TYPES",
                       help="accepted Content-Types, e.g. 'image/*,application/pdf'; images and PDFs must "
                            "also start with the right magic bytes (default: anything)")
    check.add_argument("--max-redirects", type=non_negative_int, default=10, metavar="N",
                       help="redirects followed per URL (default: 10)")
    parser.add_argument("--durability", default="batch", metavar="LEVEL",
                        help="what survives a power loss: batch (default: files flushed to the disk in "
                             "batches before their names and journal rows), full (each file flushed on its "
                             "own before its rename), none (no flush: a rerun re-checks files after a reboot)")
    parser.add_argument("--client", default="requests", metavar="NAME",
                        help="HTTP transport: requests, or curl: libcurl through pycurl, much less CPU per "
                             "request; or auto: curl where pycurl imports, else requests (default: auto for "
                             "a local run, requests for serve's workers)")
    parser.add_argument("--http-version", default="", metavar="V",
                        help="1.1, or 2 (--client curl only: HTTP/2 where the server's TLS offers it, "
                             "one connection per host carrying many requests; curl's default)")


def rule_options(args: argparse.Namespace) -> dict[str, object]:
    """The Options fields of the fetching-rule flags, as parsed."""
    return {
        "timeout": args.timeout, "retries": args.retries, "backoff": args.backoff,
        "backoff_cap": args.backoff_cap, "max_retry_after": args.max_retry_after,
        "max_time": args.max_time, "min_speed": args.min_speed, "min_speed_time": args.min_speed_time,
        "per_host": args.per_host, "delay": args.delay, "user_agent": args.user_agent,
        "headers": expand_headers(args.header), "cookies": args.cookies, "insecure": args.insecure,
        "max_size": args.max_size, "min_size": args.min_size, "accept": args.accept,
        "max_redirects": args.max_redirects, "client": args.client, "durability": args.durability,
        "http_version": args.http_version, "proxy": read_proxy(args.proxy),
        "robots": args.robots, "limit_rate": args.limit_rate, "dns_cache": args.dns_cache,
        "dns_servers": args.dns_servers,
    }


def read_proxy(value: str) -> str:
    """``--proxy``'s URL: the value itself, or the first line of FILE for ``@FILE`` (never shown in an error)."""
    if not value.startswith("@"):
        return value
    try:
        with open(value[1:], encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the proxy from {value[1:]!r}: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if len(lines) != 1:
        raise ConfigError(f"{value[1:]} must hold one proxy URL on one line, not {len(lines)} lines")
    return lines[0]


def expand_headers(values: list[str]) -> list[str | tuple[str, str]]:
    """``--header`` values, each ``@FILE`` replaced by the headers in FILE (curl's ``-H @FILE``).

    FILE has one ``Name: value`` per line; blank lines and lines starting with
    ``#`` are skipped. An error names the file and line, never the line's text.
    """
    from fetcher.options import parse_header

    headers: list[str | tuple[str, str]] = []
    for value in values:
        if not value.startswith("@"):  # "@" cannot start a header name (RFC 9110 token)
            headers.append(value)
            continue
        try:
            with open(value[1:], encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read headers from {value[1:]!r}: {getattr(exc, 'strerror', None) or exc}"
                              ) from None
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    headers.append(parse_header(line))
                except ConfigError:
                    raise ConfigError(f"{value[1:]} line {number}: a header must look like 'Name: value'"
                                      ) from None
    return headers


def add_input_and_naming_arguments(parser: argparse.ArgumentParser) -> None:
    """--input-format, --naming, --on-exists (checked in Options.create)."""
    group = parser.add_argument_group("input and naming")
    group.add_argument("--input-format", default="auto", metavar="FORMAT",
                       help="auto, txt, csv, tsv, jsonl or parquet (default: auto, from the extension: "
                            ".txt .csv .tsv .jsonl .ndjson, each optionally .gz, .parquet; stdin is txt)")
    group.add_argument("--naming", default="url", metavar="SCHEME",
                       help="url (HOST/STEM-HASH.EXT, default), hash (SHA1.EXT), content-disposition "
                            "(the server's name, made safe, plus the hash), or a template with "
                            "{host} {path} {name} {index} {sha1} {hash} {ext} that contains "
                            "{hash} or {sha1}, e.g. '{host}/{path}-{hash}.{ext}'")
    group.add_argument("--on-exists", default="skip", metavar="ACTION",
                       help="when a file is already under its name: skip (default; no request "
                            "when the name is known beforehand), overwrite, or rename (NAME (1).EXT)")


def prepare_backend(name: str) -> None:
    """Process-wide setup first, before anything imports requests (gevent monkey-patches here)."""
    from fetcher.backends import prepare_process

    prepare_process(name)


def chain(first: _T | None, rest: Iterator[_T]) -> Iterator[_T]:
    """``first`` (already read, to open the input early) and then ``rest``."""
    if first is not None:
        yield first
        yield from rest


def count_lines(path: str, input_format: str = "txt") -> int | None:
    """An upper bound on the URL count for the bar; None for stdin or a slow source."""
    if path == "-" or not os.path.isfile(path):
        return None
    if input_format == "parquet":
        from fetcher.sources.parquet import count_rows

        return count_rows(path)
    count = 0
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":  # gzip: counting would mean decompressing it all
            return None
        handle.seek(0)
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count or None
