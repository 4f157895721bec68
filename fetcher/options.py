"""Run options: one frozen object, validated once, shared by the CLI and the API."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from fetcher.errors import ConfigError
from fetcher.redact import remember_header

MEMORY_CAP = 100 * 1024 * 1024  # in-memory bodies, unless max_size says otherwise
DEFAULT_USER_AGENT = "fetcher/{version}"
INPUT_FORMATS = ("auto", "txt", "csv", "tsv", "jsonl", "parquet")
ON_EXISTS = ("skip", "overwrite", "rename")
DURABILITY = ("batch", "full", "none")  # durability.LEVELS, without importing it here
CLIENTS = ("requests", "curl")  # --client: the HTTP transports (transports/)
CURL_INSTALL_HINT = "pip install pycurl (or: pip install 'fetcher-dl[curl]')"


MAX_PROCESSES = 256  # worker processes of the process backend; the pool itself may be far larger


@dataclass(frozen=True, slots=True)
class Options:
    """Everything that shapes a run.

    The worker side (``fetch_one``) reads only the fetch fields; the coordinating
    side reads the rest. Build one with ``Options.create(**kwargs)`` so values are
    checked and normalised in one place.
    """

    out: str = "downloads"
    manifest: str | None = None
    backend: str = "thread"
    client: str = "requests"  # the HTTP transport: requests | curl (transports/)
    auto: str = ""  # what --backend/--client auto chose, and why (auto.py); "": nothing was auto
    http_version: str = ""  # "": the client's default (curl: 2 over TLS, else 1.1) | "1.1" | "2" (curl only)
    pool: int = 8
    processes: int = 0  # process backend: worker processes sharing the pool; 0: one per CPU
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 300.0
    chunk_size: int = 256 * 1024  # largest read; a read returns what has arrived, so small bodies take one
    in_flight: int = 0  # 0 means "a few times the pool"
    # deadlines
    max_time: float = 0.0  # whole download, 0: none
    min_speed: int = 0  # bytes/s over min_speed_time, 0: off
    min_speed_time: float = 10.0
    # validation
    max_size: int = 0  # decoded bytes, 0: no cap
    min_size: int = 0
    accept: tuple[str, ...] = ()
    max_redirects: int = 10
    # politeness
    per_host: int = 8  # 0: no cap
    delay: float = 0.0
    # request shape
    user_agent: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a token: never printed
    cookies: str | None = None
    cookies_text: str | None = field(default=None, repr=False)  # serve -> workers: the file's content
    insecure: bool = False
    # network (docs/network.md): "" takes http_proxy/https_proxy/all_proxy/no_proxy from the environment
    proxy: str = field(default="", repr=False)  # may hold a password: never printed
    limit_rate: int = 0  # bytes/s for the whole run, all its processes (download/ratelimit.py); 0: no cap
    # One resolver for the run (run/dns.py); off: each client resolves names itself. On by default in the
    # CLI (--no-dns-cache); off in the API, whose callers often bring their own session or mock the network.
    dns_cache: bool = False
    dns_servers: tuple[str, ...] = ()  # IP[:PORT] of the DNS servers to ask instead of /etc/resolv.conf's
    robots: bool = False  # obey robots.txt (run/robots.py): fetched once per origin before its first request
    # Python API: bodies in Result.content instead of files (capped by max_size, else MEMORY_CAP)
    in_memory: bool = False
    # input and naming
    input_format: str = "auto"  # auto: from the file's extension; stdin is txt
    naming: str = "url"  # url | hash | content-disposition | a template (naming.parse_naming)
    on_exists: str = "skip"  # skip | overwrite | rename (placement.py)
    durability: str = "batch"  # batch | full | none: what survives a power loss (durability.py)
    url_column: str = "url"  # the column of a CSV/TSV/JSONL/parquet input that holds the URL
    # image datasets (issue 16): checked in dataset_options.py
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
    caption_column: str | None = None  # input column written as KEY.txt in a shard
    manifest_format: str = "jsonl"  # jsonl | parquet

    @classmethod
    def create(cls, **kwargs: Any) -> Options:
        """Validate and normalise options; raise ConfigError naming the bad one."""
        timeout = kwargs.pop("timeout", None)
        if timeout is not None:
            kwargs["connect_timeout"], kwargs["read_timeout"] = parse_timeout(timeout)
        for key in ("max_size", "min_size", "min_speed", "limit_rate"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = parse_size(kwargs[key], key)
        if isinstance(kwargs.get("accept"), str):
            kwargs["accept"] = tuple(p.strip().lower() for p in kwargs["accept"].split(",") if p.strip())
        if isinstance(kwargs.get("headers"), (list, tuple)):
            kwargs["headers"] = tuple(parse_header(h) if isinstance(h, str) else tuple(h)
                                      for h in kwargs["headers"])
        elif isinstance(kwargs.get("headers"), dict):
            kwargs["headers"] = tuple(kwargs["headers"].items())
        if "auto" in (kwargs.get("backend"), kwargs.get("client")):
            from fetcher.auto import choose

            kwargs["backend"], kwargs["client"], kwargs["auto"] = choose(kwargs.get("backend", "thread"),
                                                                         kwargs.get("client", "requests"))
        if isinstance(kwargs.get("dns_servers"), str):
            kwargs["dns_servers"] = tuple(p.strip() for p in kwargs["dns_servers"].split(",") if p.strip())
        if kwargs.get("proxy"):
            kwargs["proxy"] = parse_proxy(kwargs["proxy"])
        _remember_environment_proxies()
        options = replace(cls(), **kwargs)
        options._check()
        for name, value in options.headers:  # a secret header's value is masked in every message
            remember_header(name, value)
        from fetcher.dataset_options import adjust

        options = adjust(options)  # webdataset output stages its images under names of its own
        if not options.user_agent:
            from fetcher import __version__

            options = replace(options, user_agent=DEFAULT_USER_AGENT.format(version=__version__))
        return replace(options, out=os.path.abspath(options.out))

    def _check(self) -> None:
        if not isinstance(self.pool, int) or self.pool < 1:
            raise ConfigError(f"pool must be a whole number of at least 1, not {self.pool!r}")
        if self.pool > 10_000:
            raise ConfigError(f"pool of {self.pool} is more than the 10000 this machine can hold")
        if not isinstance(self.processes, int) or self.processes < 0:
            raise ConfigError(f"processes must be a whole number, 0 for one per CPU, not {self.processes!r}")
        if self.processes > MAX_PROCESSES:
            raise ConfigError(f"processes of {self.processes} is more than the {MAX_PROCESSES} worker processes "
                              f"fetcher starts (each costs ~25 MiB; a larger --pool needs no more of them)")
        if self.processes and self.backend != "process":
            raise ConfigError(f"processes applies to the process backend only, not to {self.backend!r}")
        if self.retries < 0:
            raise ConfigError(f"retries must be 0 or more, not {self.retries!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("timeouts must be greater than 0 seconds")
        if self.backoff < 0 or self.backoff_cap < 0:
            raise ConfigError("backoff must be 0 seconds or more")
        if self.in_flight < 0:
            raise ConfigError(f"in_flight must be 0 or more, not {self.in_flight!r}")
        for name in ("max_time", "min_speed", "max_size", "min_size", "per_host", "delay", "limit_rate",
                     "max_retry_after", "max_redirects"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be 0 or more, not {getattr(self, name)!r}")
        if self.min_speed_time <= 0:
            raise ConfigError("min-speed-time must be greater than 0 seconds")
        if self.max_size and self.min_size > self.max_size:
            raise ConfigError(f"min-size {self.min_size} is larger than max-size {self.max_size}")
        if self.chunk_size < 1:
            raise ConfigError("chunk_size must be at least 1 byte")
        if self.cookies is not None and not os.path.isfile(self.cookies):
            raise ConfigError(f"cookies file {self.cookies!r} does not exist")
        self._check_inputs_and_naming()
        self._check_client()
        from fetcher import dataset_options

        dataset_options.check(self)

    def _check_client(self) -> None:
        if self.client not in CLIENTS:
            raise ConfigError(f"client must be one of {', '.join(CLIENTS)}, not {self.client!r}")
        if self.http_version not in ("", "1.1", "2"):
            raise ConfigError(f"--http-version must be 1.1 or 2, not {self.http_version!r}")
        if self.client == "requests" and self.proxy.startswith("socks"):
            import importlib.util

            if importlib.util.find_spec("socks") is None:
                raise ConfigError("a SOCKS proxy with --client requests needs PySocks: pip install PySocks "
                                  "(or use --client curl)")
        if self.client != "curl":
            if self.http_version == "2":
                raise ConfigError("--http-version 2 needs --client curl (requests speaks HTTP/1.1 only)")
            return
        import importlib.util

        if importlib.util.find_spec("pycurl") is None:
            raise ConfigError(f"--client curl needs pycurl, which is not installed: {CURL_INSTALL_HINT}")

    def _check_inputs_and_naming(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"input format must be one of {', '.join(INPUT_FORMATS)}, "
                              f"not {self.input_format!r}")
        if self.on_exists not in ON_EXISTS:
            raise ConfigError(f"on-exists must be one of {', '.join(ON_EXISTS)}, not {self.on_exists!r}")
        if self.durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}, not {self.durability!r}")
        # naming.py is pure (it imports only errors and filenames), so this import stays cheap.
        from fetcher.files.naming import parse_naming

        parse_naming(self.naming)

    def will_retry(self, attempt: int, retryable: bool) -> bool:
        """Whether a failed ``attempt`` is tried again: the scheduler's rule, which fetch_one also
        follows to keep a ``.part`` only for a retry that will come."""
        return retryable and attempt <= self.retries

    @property
    def memory_cap(self) -> int:
        """The size cap that applies: ``max_size``, or MEMORY_CAP for in-memory bodies without one."""
        return self.max_size or (MEMORY_CAP if self.in_memory else 0)

    @property
    def window(self) -> int:
        """How many tasks may be submitted and unfinished at once (backpressure).

        Equal to the pool by default: a task reaches a backend only when a worker
        can start it, so a Retry-After pause or a per-host cap applies to every
        task that has not started, not only to those still in the scheduler.
        """
        return self.in_flight or self.pool

    @property
    def manifest_path(self) -> str:
        return os.path.abspath(self.manifest) if self.manifest else os.path.join(self.out, "manifest.jsonl")


def parse_timeout(value: float | str | tuple[float, float]) -> tuple[float, float]:
    """Read ``10``, ``"10"`` or ``"5,30"`` (connect, read) as a (connect, read) pair."""
    if isinstance(value, tuple):
        parts = [str(v) for v in value]
    else:
        parts = str(value).split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"timeout must be seconds, or CONNECT,READ seconds; got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) <= 0:
        raise ConfigError(f"timeout must be one or two positive numbers of seconds; got {value!r}")
    return numbers[0], numbers[1]


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: int | str, what: str = "size") -> int:
    """Read ``10M``, ``1.5G``, ``512k``, ``4096`` or ``10MiB`` as bytes (powers of 1024)."""
    if isinstance(value, int):
        return value
    text = value.strip().lower().removesuffix("ib").removesuffix("b").removesuffix("/s")
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _SIZE_UNITS else (text, "")
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(f"{what.replace('_', '-')} must be a size like 500K, 10M or 1G; got {value!r}") from None
    if amount < 0:
        raise ConfigError(f"{what.replace('_', '-')} must be 0 or more; got {value!r}")
    return int(amount * _SIZE_UNITS[unit])


def _remember_environment_proxies() -> None:
    """The environment's proxy passwords are masked in messages, as ``--proxy``'s are."""
    import urllib.request

    from fetcher.redact import remember_proxy

    for name, url in urllib.request.getproxies_environment().items():
        if name != "no":
            remember_proxy(url)


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_PROXY_PORTS = {"https": 443}  # else 1080, as curl -x assumes for a proxy without a port


def parse_proxy(value: str) -> str:
    """A ``--proxy`` URL checked and given its port: ``SCHEME://[USER:PASSWORD@]HOST[:PORT]``.

    The port is written out (curl's default: 1080, or 443 for ``https://``), so both clients
    connect to the same place. An error never shows the value: it may hold a password.
    """
    from urllib.parse import urlsplit

    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError("--proxy must look like SCHEME://[USER:PASSWORD@]HOST[:PORT] with a port of "
                          "1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES or "://" not in text:
        raise ConfigError(f"--proxy must start with one of {', '.join(s + '://' for s in PROXY_SCHEMES)}; "
                          f"got {(scheme + '://') if scheme else 'no scheme'}")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("--proxy must look like SCHEME://[USER:PASSWORD@]HOST[:PORT], nothing after the port")
    from fetcher.redact import remember_proxy

    remember_proxy(text)
    netloc = parts.netloc.rpartition("@")
    host = netloc[2] if port is not None else f"{netloc[2]}:{_PROXY_PORTS.get(scheme, 1080)}"
    return f"{scheme}://{netloc[0]}{netloc[1]}{host}"


def parse_header(text: str) -> tuple[str, str]:
    """``"Referer: https://x/"`` -> ``("Referer", "https://x/")``."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name) or "\r" in value or "\n" in value:
        # Never the value itself: it may be a token (a missing colon leaves no name to judge by).
        shown = f"{name}: ..." if sep else f"{len(text)} characters without a colon"
        raise ConfigError(f"header must look like 'Name: value'; got {shown!r}")
    return name, value.strip()
