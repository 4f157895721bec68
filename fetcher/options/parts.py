"""The parts of a run's ``Options``: frozen, one per concern, each read by the code of that concern.

The defaults here are the table's (``table.py`` declares every option once, with
its flag, help and check); a part is changed with ``dataclasses.replace``, or the
root's ``Options.replace(name=value)``, which finds the part by the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """How downloads run: backend, HTTP client, concurrency."""

    backend: str = "thread"
    client: str = "requests"  # the HTTP transport: requests | curl (transports/); auto until prepare()
    http_version: str = ""  # "": the client's default (curl: 2 over TLS, else 1.1) | "1.1" | "2" (curl only)
    pool: int = 8
    processes: int = 0  # process backend: worker processes sharing the pool; 0: one per CPU
    in_flight: int = 0  # 0 means "the pool"
    chunk_size: int = 256 * 1024  # largest read; a read returns what has arrived, so small bodies take one
    # docs/network.md: "" takes http_proxy/https_proxy/all_proxy/no_proxy from the environment
    proxy: str = field(default="", repr=False)  # may hold a password: never printed
    limit_rate: int = 0  # bytes/s for the whole run, all its processes (download/ratelimit.py); 0: no cap
    dns_cache: bool = False  # one resolver for the run (run/dns.py); the CLI turns it on
    dns_servers: tuple[str, ...] = ()  # IP[:PORT] the run's resolver asks instead of /etc/resolv.conf's

    @property
    def window(self) -> int:
        """How many tasks may be submitted and unfinished at once (backpressure).

        Equal to the pool by default: a task reaches a backend only when a worker
        can start it, so a Retry-After pause or a per-host cap applies to every
        task that has not started, not only to those still in the scheduler.
        """
        return self.in_flight or self.pool


@dataclass(frozen=True, slots=True)
class RuleOptions:
    """Retries, deadlines and what a body must be to be accepted."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 300.0
    max_time: float = 0.0  # whole download, 0: none
    min_speed: int = 0  # bytes/s over min_speed_time, 0: off
    min_speed_time: float = 10.0
    max_size: int = 0  # decoded bytes, 0: no cap
    min_size: int = 0
    accept: tuple[str, ...] = ()
    max_redirects: int = 10

    def will_retry(self, attempt: int, retryable: bool) -> bool:
        """Whether a failed ``attempt`` is tried again: the scheduler's rule, which fetch_one also
        follows to keep a ``.part`` only for a retry that will come."""
        return retryable and attempt <= self.retries


@dataclass(frozen=True, slots=True)
class PolitenessOptions:
    """What each host sees: how often, how many at once, and the request's shape."""

    per_host: int = 8  # 0: no cap
    delay: float = 0.0
    robots: bool = False  # obey robots.txt (run/robots.py): fetched once per origin before its first request
    user_agent: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a token: never printed
    cookies: str | None = None
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """Where files and records go, under which names, and how durably."""

    out: str = "downloads"
    manifest: str | None = None
    in_memory: bool = False  # Python API: bodies in Result.content instead of files
    naming: str = "url"  # url | hash | content-disposition | a template (naming.parse_naming)
    on_exists: str = "skip"  # skip | overwrite | rename (placement.py)
    durability: str = "batch"  # batch | full | none: what survives a power loss (durability.py)
    manifest_format: str = "jsonl"  # jsonl | parquet

    @property
    def manifest_path(self) -> str:
        return os.path.abspath(self.manifest) if self.manifest else os.path.join(self.out, "manifest.jsonl")


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How the input is read."""

    input_format: str = "auto"  # auto: from the file's extension; stdin is txt
    url_column: str = "url"  # the column of a CSV/TSV/JSONL/parquet input that holds the URL
    caption_column: str | None = None  # input column written as KEY.txt in a shard


@dataclass(frozen=True, slots=True)
class DatasetOptions:
    """Image checks, resizing and webdataset shards (issue 16; checked in dataset.py)."""

    verify_image: bool = False
    min_image_size: int = 0  # px, smaller side; 0: off
    max_image_area: int = 0  # px, width x height; 0: off
    max_aspect_ratio: float = 0.0  # longer / shorter side; 0: off
    resize: int = 0  # px; 0: no resizing
    resize_mode: str = "keep_ratio"  # keep_ratio | center_crop | border
    encode_format: str = ""  # jpg | png | webp; "": as downloaded, or jpg when resizing
    encode_quality: int = 95
    ignore_opt_out: bool = False  # X-Robots-Tag: noai / noimageai are honoured unless this is set
    output_format: str = "files"  # files | webdataset
    shard_size: int = 10_000  # samples per webdataset shard

    @property
    def wants_images(self) -> bool:
        """Whether any image option is on, or webdataset output (then every body goes through ``download.images``).

        A webdataset sample is an image whose width and height its row records (img2dataset's layout),
        so its header is read even when nothing else is asked: a body that is no image fails (bad-image).
        """
        return bool(self.output_format == "webdataset" or self.verify_image or self.min_image_size
                    or self.max_image_area
                    or self.max_aspect_ratio or self.resize or self.encode_format)

    @property
    def decodes(self) -> bool:
        """Whether every image is decoded whole (checked, resized or re-encoded): CPU work per URL."""
        return bool(self.verify_image or self.resize or self.encode_format)


PARTS = {"transport": TransportOptions, "rules": RuleOptions, "politeness": PolitenessOptions,
         "output": OutputOptions, "source": SourceOptions, "dataset": DatasetOptions}
