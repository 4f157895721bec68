"""Every option of a run, declared once: its keyword, part, default, flag, help, check, and whether
it travels to ``fetcher work``'s workers.

From this table are derived: the flags and ``--help`` of ``fetcher``, ``fetcher serve`` and
``fetcher work`` (cli/flags.py), the keyword arguments of ``fetch()``/``Fetcher()`` and their
check (``Options.create``), each value's validation, and the form sent to workers
(``Options.worker_form``). Adding an option is one ``Spec`` here, a field in its part
(parts.py), and the code that uses it. A value's check is named from checks.py; those that
involve two options are in ``Options.check`` (and dataset.py), those of the machine in ``prepare_run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fetcher.options import checks
from fetcher.options.checks import DURABILITY, INPUT_FORMATS, ON_EXISTS, Check
from fetcher.options.network import parse_proxy, parse_servers, read_proxy
from fetcher.options.values import (expand_headers, non_negative_int, parse_accept, parse_headers, parse_timeout,
                                    positive_int, sizes)

LOCAL, SERVE, WORK = "fetcher", "serve", "work"  # the commands whose flags come from here
BOTH = (LOCAL, SERVE)
# Sections of a command's flags, added where each parser wants them (cli/flags.py).
RUN, RULES, NAMING, DATASET = "run", "rules", "naming", "dataset"
# --help groups
RETRY, POLITE, VALIDATION = "retries and deadlines", "politeness", "validation"
INPUT_NAMING = "input and naming"
NETWORK = "network (docs/network.md)"
DATASETS = "image datasets (pip install 'fetcher-dl[datasets]')"


@dataclass(frozen=True)
class Flag:
    """How an option is spelled on the command line, and by which commands."""

    names: tuple[str, ...]
    help: str
    commands: tuple[str, ...] = BOTH
    section: str = RULES
    group: str = ""  # a --help group; "": the command's own options
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # argparse type: its error names the flag and exits 2
    action: str | None = None  # store_true, append
    default: Any = None  # argparse's default where it is text for ``parse`` (sizes, timeout)
    from_text: Callable[[Any], Any] | None = None  # what the CLI does first (--header @FILE)
    per_command: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # help/default per command


@dataclass(frozen=True)
class Spec:
    """One option: ``dest`` is its keyword (``fetch(per_host=2)``) and its field in ``part``."""

    dest: str
    part: str  # "": a keyword that sets other options (``timeout`` sets connect_ and read_timeout)
    default: Any
    flag: Flag | None = None  # None: the Python API only
    parse: Callable[[Any], Any] | None = None  # a given value -> the stored one (ConfigError if bad)
    check: Check | None = None  # the stored value is valid (ConfigError naming it if not)
    travels: bool = True  # sent to workers (fetcher serve -> work): their fetching rules
    spread: Callable[[Any], dict[str, Any]] | None = None  # for part "": the options it sets


def _timeouts(value: Any) -> dict[str, Any]:
    connect, read = parse_timeout(value)
    return {"connect_timeout": connect, "read_timeout": read}


def _default_help(text: str, default: Any) -> dict[str, Any]:
    return {"help": text, "default": default}


def _dataset(dest: str, initial: Any, text: str, check: Check | None = None, travels: bool = True,
             part: str = "dataset", **flag: Any) -> Spec:
    """An option of the image-dataset flags (``fetcher`` and ``serve``, whose workers decode; checked in
    dataset.py too)."""
    names = ("--" + dest.replace("_", "-"),)
    return Spec(dest, part, initial, check=check, travels=travels,
                flag=Flag(names, text, commands=BOTH, section=DATASET, group=DATASETS, default=initial, **flag))


DATASET_SPECS = (
    _dataset("url_column", "url", "the column of a CSV, TSV, JSONL or parquet input that holds the URL, in any "
             "case (default: url)", travels=False, part="source", metavar="NAME"),
    _dataset("caption_column", None, "with --output-format webdataset: the input column written as KEY.txt",
             travels=False, part="source", metavar="NAME"),
    _dataset("verify_image", False, "decode every image with Pillow; a truncated or corrupt one fails "
             "(kind bad-image)", action="store_true"),
    _dataset("min_image_size", 0, "fail an image whose smaller side is under PX pixels (kind image-too-small)",
             check=checks.at_least_zero, type=non_negative_int, metavar="PX"),
    _dataset("max_image_area", 0, "fail an image of more than PX pixels, width x height (kind image-too-large)",
             check=checks.at_least_zero, type=non_negative_int, metavar="PX"),
    _dataset("max_aspect_ratio", 0.0, "fail an image whose longer side is over R times its shorter "
             "(kind bad-aspect-ratio)", check=checks.aspect_ratio, type=float, metavar="R"),
    _dataset("resize", 0, "resize every image as --resize-mode says, and store it re-encoded",
             check=checks.at_least_zero,
             type=non_negative_int, metavar="PX"),
    _dataset("resize_mode", "keep_ratio", "keep_ratio: the smaller side becomes PX (default); center_crop: then "
             "the middle PX x PX; border: the larger side becomes PX, padded to a black square",
             check=checks.resize_mode, metavar="MODE"),
    _dataset("encode_format", "", "jpg, png or webp: the stored images' format (default: jpg when resizing, "
             "else as downloaded)", check=checks.encode_format, metavar="FMT"),
    _dataset("encode_quality", 95, "JPEG and WebP quality, 1-100 (default: 95)", check=checks.encode_quality,
             type=positive_int, metavar="Q"),
    _dataset("ignore_opt_out", False, "fetch files whose server says X-Robots-Tag: noai or noimageai (refused "
             "by default, kind opted-out)", action="store_true"),
    _dataset("output_format", "files", "files (default) or webdataset: img2dataset's layout, OUT/00000.tar "
             "(KEY.EXT, KEY.json per sample), 00000.parquet (every row), 00000_stats.json, ...",
             check=checks.output_format, travels=False, metavar="FMT"),
    _dataset("shard_size", 10_000, "rows per webdataset shard, failures included (default: 10000)",
             check=checks.shard_size,
             travels=False, type=positive_int, metavar="N"),
    _dataset("manifest_format", "jsonl", "jsonl (default) or parquet (OUT/manifest.parquet, written at the end)",
             check=checks.manifest_format, travels=False, part="output", metavar="FMT"),
)


# The fetching rules first (fetcher and serve), then what only some commands have.
TABLE: tuple[Spec, ...] = (
    # -- what runs the downloads (its flags are added first: the command's own options) --
    Spec("backend", "transport", "thread", travels=False, flag=Flag(
        ("--backend",), "how downloads run concurrently: {backends}, or auto (default): the fastest this "
        "machine has", commands=(LOCAL, WORK), section=RUN, metavar="NAME", default="auto",
        per_command={WORK: _default_help("how downloads run here: {backends}, or auto: the fastest "
                                                  "for the server's --client (default: thread)", "thread")})),
    Spec("pool", "transport", 8, check=checks.pool, travels=False, flag=Flag(
        ("--pool",), "number of concurrent downloads (default: 8)", commands=(LOCAL, WORK), section=RUN,
        metavar="N", type=positive_int, default=8,
        per_command={WORK: _default_help("concurrent downloads on this worker (default: 8)", 8)})),
    Spec("processes", "transport", 0, check=checks.processes, travels=False, flag=Flag(
        ("--processes",), "--backend process: worker processes the pool is spread over "
        "(default: one per CPU, at most the pool)", commands=(LOCAL,), section=RUN, metavar="N",
        type=positive_int, default=0)),
    Spec("out", "output", "downloads", travels=False, parse=lambda v: "downloads" if v is None else v, flag=Flag(
        ("-o", "--out"), "output folder (default: ./downloads)", commands=(LOCAL, SERVE, WORK), section=RUN,
        metavar="DIR", default="downloads",
        per_command={SERVE: _default_help("folder of the run's journal, authkey and manifest "
                                          "(default: ./downloads)", "downloads"),
                     WORK: _default_help("folder the files go to (default: ./downloads)", "downloads")})),
    Spec("manifest", "output", None, travels=False, flag=Flag(
        ("--manifest",), "where to write the JSONL manifest (default: OUT/manifest.jsonl)", section=RUN,
        metavar="PATH", per_command={SERVE: _default_help("where to write the manifest "
                                                          "(default: OUT/manifest.jsonl)", None)})),
    # -- retries and deadlines --
    Spec("timeout", "", None, spread=_timeouts, flag=Flag(
        ("--timeout",), "connect and read timeout in seconds: one number for both, or CONNECT,READ "
        "(default: 10,30)", group=RETRY, metavar="S", default="10,30")),
    Spec("connect_timeout", "rules", 10.0, check=checks.timeout),
    Spec("read_timeout", "rules", 30.0, check=checks.timeout),
    Spec("retries", "rules", 3, check=checks.plain_non_negative, flag=Flag(
        ("--retries",), "retries after a connection error, timeout, truncated body, 408, 425, 429 or 5xx "
        "(default: 3)", group=RETRY, type=non_negative_int, default=3, metavar="N")),
    Spec("backoff", "rules", 0.5, check=checks.backoff, flag=Flag(
        ("--backoff",), "first retry delay, doubled on each retry, with jitter (default: 0.5)", group=RETRY,
        type=float, default=0.5, metavar="S")),
    Spec("backoff_cap", "rules", 30.0, check=checks.backoff, flag=Flag(
        ("--backoff-cap",), "longest backoff between two retries (default: 30)", group=RETRY, type=float,
        default=30.0, metavar="S")),
    Spec("max_retry_after", "rules", 300.0, check=checks.at_least_zero, flag=Flag(
        ("--max-retry-after",), "longest Retry-After honoured; a host is paused that long at most "
        "(default: 300)", group=RETRY, type=float, default=300.0, metavar="S")),
    Spec("max_time", "rules", 0.0, check=checks.at_least_zero, flag=Flag(
        ("--max-time",), "deadline for one whole download, connect included (default: none)", group=RETRY,
        type=float, default=0.0, metavar="S")),
    Spec("min_speed", "rules", 0, parse=sizes("min_speed"), check=checks.at_least_zero, flag=Flag(
        ("--min-speed",), "cut a download slower than BYTES/s over --min-speed-time (e.g. 1K; default: off)",
        group=RETRY, default="0", metavar="BYTES")),
    Spec("min_speed_time", "rules", 10.0, check=checks.min_speed_time, flag=Flag(
        ("--min-speed-time",), "window for --min-speed (default: 10)", group=RETRY, type=float, default=10.0,
        metavar="S")),
    # -- politeness and the request's shape --
    Spec("per_host", "politeness", 8, check=checks.at_least_zero, flag=Flag(
        ("--per-host",), "most concurrent requests to one host, across all workers; 0: no cap (default: 8)",
        group=POLITE, type=non_negative_int, default=8, metavar="N")),
    Spec("delay", "politeness", 0.0, check=checks.at_least_zero, flag=Flag(
        ("--delay",), "least seconds between two requests to one host (default: 0)", group=POLITE, type=float,
        default=0.0, metavar="S")),
    Spec("robots", "politeness", False, travels=False, flag=Flag(
        ("--robots",), "obey robots.txt (RFC 9309): fetched once per site before its first request; a disallowed "
        "URL is recorded with error kind robots, never requested; Crawl-delay spaces requests to the site "
        "(default: robots.txt is never fetched)", group=POLITE, action="store_true", default=False)),
    Spec("user_agent", "politeness", "", flag=Flag(
        ("--user-agent",), "User-Agent header (default: fetcher/VERSION)", group=POLITE, default="",
        metavar="TEXT")),
    Spec("headers", "politeness", (), parse=parse_headers, flag=Flag(
        ("--header",), "extra request header; repeat for more. @FILE reads headers from FILE, one per "
        "line, so a token stays off the command line (which ps shows)", group=POLITE, action="append",
        default=[], metavar="'NAME: VALUE' | @FILE", from_text=expand_headers)),
    Spec("cookies", "politeness", None, check=checks.cookies, flag=Flag(
        ("--cookies",), "Netscape/Mozilla cookies.txt file to send cookies from", group=POLITE, metavar="FILE")),
    Spec("insecure", "politeness", False, flag=Flag(
        ("--insecure",), "do not verify TLS certificates (dangerous; off by default)", group=POLITE,
        action="store_true", default=False)),
    # -- network (docs/network.md) --
    Spec("proxy", "transport", "", parse=parse_proxy, flag=Flag(
        ("--proxy",), "send every request through this proxy: http://, https://, socks5:// or socks5h:// (the "
        "proxy resolves names), optionally USER:PASSWORD@HOST:PORT; @FILE reads the URL from FILE, so a "
        "password stays off the command line. Default: http_proxy, https_proxy, all_proxy and no_proxy, as "
        "curl reads them", group=NETWORK, default="", metavar="URL | @FILE", from_text=read_proxy)),
    Spec("limit_rate", "transport", 0, parse=sizes("limit_rate"), check=checks.at_least_zero, flag=Flag(
        ("--limit-rate",), "cap the run's download bandwidth, all its processes together, in bytes per second: "
        "e.g. 500K, 10M, 1G (powers of 1024); each fetcher work caps itself (default: no cap)", group=NETWORK,
        default="0", metavar="RATE")),
    Spec("dns_servers", "transport", (), parse=parse_servers, travels=False, flag=Flag(
        ("--dns-servers",), "DNS servers the run's resolver asks instead of /etc/resolv.conf's", group=NETWORK,
        default="", metavar="IP[:PORT],...")),
    # The API's default is off (callers often bring their own session, or mock the network); the CLI's is on.
    Spec("dns_cache", "transport", False, travels=False, flag=Flag(
        ("--no-dns-cache",), "let each worker's client resolve names itself instead of one resolver for the run "
        "(which resolves hosts ahead, once, and fails an unresolvable host's URLs at once, kind dns); off anyway "
        "behind a proxy", group=NETWORK, action="store_false", default=True)),
    # -- validation --
    Spec("max_size", "rules", 0, parse=sizes("max_size"), check=checks.at_least_zero, flag=Flag(
        ("--max-size",), "largest body accepted, e.g. 10M or 1G, counted after decompression (default: none)",
        group=VALIDATION, default="0", metavar="SIZE")),
    Spec("min_size", "rules", 0, parse=sizes("min_size"), check=checks.at_least_zero, flag=Flag(
        ("--min-size",), "smallest body accepted (default: 0)", group=VALIDATION, default="0", metavar="SIZE")),
    Spec("accept", "rules", (), parse=parse_accept, flag=Flag(
        ("--accept",), "accepted Content-Types, e.g. 'image/*,application/pdf'; images and PDFs must "
        "also start with the right magic bytes (default: anything)", group=VALIDATION, default="",
        metavar="TYPES")),
    Spec("max_redirects", "rules", 10, check=checks.at_least_zero, flag=Flag(
        ("--max-redirects",), "redirects followed per URL (default: 10)", group=VALIDATION,
        type=non_negative_int, default=10, metavar="N")),
    # -- the flush order, the client --
    Spec("durability", "output", "batch", check=checks.one_of(DURABILITY, "durability"), flag=Flag(
        ("--durability",), "what survives a power loss: batch (default: files flushed to the disk in "
        "batches before their names and journal rows), full (each file flushed on its "
        "own before its rename), none (no flush: a rerun re-checks files after a reboot)", default="batch",
        metavar="LEVEL")),
    Spec("client", "transport", "requests", check=checks.client, flag=Flag(
        ("--client",), "HTTP transport: requests, or curl: libcurl through pycurl, much less CPU per "
        "request; or auto: curl where pycurl imports, else requests (default: auto for "
        "a local run, requests for serve's workers)", default="requests", metavar="NAME",
        # A local run picks the fastest pair this machine has unless told (benchmarks/run.py and wan.py:
        # multi + curl beat thread + requests on every dataset); serve's workers keep requests.
        per_command={LOCAL: {"default": "auto"}})),
    Spec("http_version", "transport", "", check=checks.http_version, flag=Flag(
        ("--http-version",), "1.1, or 2 (--client curl only: HTTP/2 where the server's TLS offers it, "
        "one connection per host carrying many requests; curl's default)", default="", metavar="V")),
    Spec("in_flight", "transport", 0, check=checks.plain_non_negative, travels=False),
    Spec("chunk_size", "transport", 256 * 1024, check=checks.chunk_size),
    Spec("in_memory", "output", False),
    # -- input and naming --
    Spec("input_format", "source", "auto", check=checks.one_of(INPUT_FORMATS, "input format"), travels=False,
         flag=Flag(
        ("--input-format",), "auto, txt, csv, tsv, jsonl or parquet (default: auto, from the extension: "
        ".txt .csv .tsv .jsonl .ndjson, each optionally .gz, .parquet; stdin is txt)", section=NAMING,
        group=INPUT_NAMING, default="auto", metavar="FORMAT")),
    Spec("naming", "output", "url", check=checks.naming, flag=Flag(
        ("--naming",), "url (HOST/STEM-HASH.EXT, default), hash (SHA1.EXT), content-disposition "
        "(the server's name, made safe, plus the hash), or a template with "
        "{host} {path} {name} {index} {sha1} {hash} {ext} that contains "
        "{hash} or {sha1}, e.g. '{host}/{path}-{hash}.{ext}'", section=NAMING, group=INPUT_NAMING,
        default="url", metavar="SCHEME")),
    Spec("on_exists", "output", "skip", check=checks.one_of(ON_EXISTS, "on-exists"), flag=Flag(
        ("--on-exists",), "when a file is already under its name: skip (default; no request "
        "when the name is known beforehand), overwrite, or rename (NAME (1).EXT)", section=NAMING,
        group=INPUT_NAMING, default="skip", metavar="ACTION")),
    *DATASET_SPECS,
)

BY_DEST: dict[str, Spec] = {spec.dest: spec for spec in TABLE}
KEYWORDS = frozenset(BY_DEST)  # what fetch(), Fetcher() and Options.create accept
