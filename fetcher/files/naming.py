"""Safe, deterministic, collision-free file names for URLs.

A URL is untrusted input: its path may hold ``..``, absolute paths, device names,
control characters or names too long for the filesystem. ``--naming`` picks the
scheme (``parse_naming`` checks it once, at start):

- ``url`` (default): ``HOST/STEM-HASH.EXT``: one folder per host, a readable
  stem from the last path segment, and 12 hex digits of the URL's SHA-1 so that
  two URLs ending in ``image.jpg`` never overwrite each other.
- ``hash``: ``SHA1.EXT``, the full SHA-1 of the canonical URL (scrapy's media
  pipeline names files ``full/SHA1.EXT``; the template ``full/{sha1}.{ext}``
  gives exactly that).
- ``content-disposition``: like ``url``, but the stem (and extension) come from
  the server's Content-Disposition when it sends one; the hash stays, so two
  URLs that both answer ``report.pdf`` still get two files.
- a template such as ``{host}/{path}-{hash}.{ext}``. It must contain ``{hash}``
  or ``{sha1}`` (without a format spec): that is what makes it collision-free
  by construction, without remembering the names issued in a run.

When the URL has no extension (or a script one such as ``.php``), the name is
*provisional*: ``finalize_name`` completes it from the response's Content-Type
once headers arrive. ``files.paths.join_within`` is the last guard before anything
touches the disk.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from fetcher.errors import ConfigError
from fetcher.files.filenames import WINDOWS_DEVICES, clean_component, disposition_filename, extension_for_type

if TYPE_CHECKING:
    from fetcher.models import FetchTask

HASH_DIGITS = 12
MAX_STEM = 80
MAX_EXT = 10
MAX_COMPONENT = 200
MAX_PATH_DEPTH = 16

NAMING_MODES = ("url", "hash", "content-disposition")
TEMPLATE_FIELDS = ("host", "path", "name", "index", "sha1", "hash", "ext")
# Extensions of server-side scripts say nothing about what they return: for
# ``show.php?id=3`` the Content-Type decides (the URL's extension is the fallback).
SCRIPT_EXTENSIONS = frozenset({"php", "php3", "php4", "php5", "phtml", "asp", "aspx", "ashx",
                               "jsp", "jspx", "do", "action", "cgi", "pl", "cfm"})

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Naming:
    """A parsed ``--naming`` value: a mode, and the template when the mode is ``template``."""

    mode: str
    template: str = ""

    @property
    def uses_ext(self) -> bool:
        return self.mode != "template" or "{ext" in self.template


def url_digest(url: str) -> str:
    """The stable short hash of a URL used to keep names distinct."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:HASH_DIGITS]


def safe_component(text: str, limit: int = MAX_STEM) -> str:
    """Reduce any text to one harmless path component (may return ``""``)."""
    cleaned = _UNSAFE.sub("_", text).strip("._")[:limit].strip("._")
    if cleaned.split(".")[0].lower() in WINDOWS_DEVICES:
        cleaned = "_" + cleaned
    return cleaned


@lru_cache(maxsize=4096)
def host_folder(netloc_host: str | None, port: int | None) -> str:
    """The folder of a host (cached: a list holds many URLs per host).

    An IPv6 address (urllib's ``hostname``, without brackets) keeps its shape: ``[::1]:8080`` is
    ``ipv6_--1_8080``, where cleaning alone would give ``1_8080``, the folder of a host named ``1``.
    """
    host = (netloc_host or "").lower()
    if ":" in host:
        host = "ipv6_" + host.replace(":", "-")
    host = safe_component(host, limit=253) or "_"
    return f"{host}_{port}" if port else host


@lru_cache(maxsize=4096)
def _netloc_folder(netloc: str) -> str:
    """``host_folder`` of a netloc, whose host and port urllib would parse again per URL."""
    parts = SplitResult("", netloc, "", "", "")
    return host_folder(parts.hostname, parts.port)


def url_extension(url: str) -> str:
    """The URL path's extension, lower-case and safe, without the dot (``""`` if none)."""
    segment = posixpath.basename(unquote(urlsplit(url).path))
    return safe_component(posixpath.splitext(segment)[1].lstrip("."), limit=MAX_EXT).lower()


def name_for_url(url: str, ext: str | None = None) -> str:
    """Return ``HOST/STEM-HASH.EXT`` for an http(s) URL; never escapes its folder.

    ``ext`` replaces the URL's own extension when given (``""`` for none).
    """
    parts = urlsplit(url)
    segment = posixpath.basename(unquote(parts.path))
    stem, url_ext = posixpath.splitext(segment)
    if ext is None:
        ext = url_ext.lstrip(".")
    ext = safe_component(ext, limit=MAX_EXT).lower()
    return _url_name(url, parts.netloc, stem, ext)


def _url_name(url: str, netloc: str, stem: str, safe_ext: str) -> str:
    filename = f"{safe_component(stem) or 'index'}-{url_digest(url)}" + (f".{safe_ext}" if safe_ext else "")
    return f"{_netloc_folder(netloc)}/{filename}"


@lru_cache(maxsize=64)
def parse_naming(spec: str) -> Naming:
    """Check a ``--naming`` value once, at start.

    Raises:
        ConfigError: an unknown mode, a malformed template, an unknown field, or
            a template without ``{hash}``/``{sha1}``.
    """
    spec = spec.strip()
    if spec in NAMING_MODES:
        return Naming(spec)
    if "{" not in spec:
        raise ConfigError(f"unknown naming {spec!r}: use {', '.join(NAMING_MODES)}, or a template "
                          "such as '{host}/{name}-{hash}.{ext}'")
    try:
        parsed = list(string.Formatter().parse(spec))
    except ValueError as exc:
        raise ConfigError(f"naming template {spec!r} is malformed: {exc}") from None
    unique = False
    for _literal, field, spec_text, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or "{" in (spec_text or ""):
            raise ConfigError(f"naming template {spec!r}: unknown field {{{field}}}; "
                              f"fields are {', '.join('{%s}' % f for f in TEMPLATE_FIELDS)}")
        # A format spec could cut the digest short ({sha1:.2}); only a bare one counts.
        unique = unique or (field in ("hash", "sha1") and not spec_text and not conversion)
    if not unique:
        raise ConfigError(f"naming template {spec!r} must contain {{hash}} or {{sha1}} so that two "
                          "URLs can never get the same name (use a 'filename' input column to "
                          "choose names freely)")
    naming = Naming("template", spec)
    try:
        render_template(naming, "http://example.com/a/b.jpg", 0, "jpg")
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ConfigError(f"naming template {spec!r} cannot be rendered: {exc}") from None
    return naming


def initial_name(url: str, index: int, spec: str) -> tuple[str, bool]:
    """The name of a URL before any request, and whether it is provisional.

    A provisional name waits for the response headers (``finalize_name``): the
    URL has no usable extension and the scheme wants one, or the scheme is
    ``content-disposition``.
    """
    naming = parse_naming(spec)
    parts = urlsplit(url)
    stem, dot_ext = posixpath.splitext(posixpath.basename(unquote(parts.path)))
    ext = safe_component(dot_ext.lstrip("."), limit=MAX_EXT).lower()  # url_extension(url), from one split
    provisional = naming.mode == "content-disposition" or (
        naming.uses_ext and (not ext or ext in SCRIPT_EXTENSIONS))
    if naming.mode == "url":  # the default: name_for_url(url, ext) without splitting the URL again
        return _url_name(url, parts.netloc, stem, "" if provisional else ext), provisional
    return _render(naming, url, index, "" if provisional else ext), provisional


def finalize_name(task: FetchTask, content_type: str | None, content_disposition: str | None,
                  spec: str) -> str:
    """The final name of a task once its response headers are known.

    Called by fetch_one before the body is written. A name that was not
    provisional (the URL had an extension, or a ``filename`` column chose it) is
    returned unchanged. Otherwise the extension comes from Content-Type (falling
    back to the URL's script extension), and with ``content-disposition`` the
    server's file name, made safe, replaces the URL's stem.
    """
    if not task.provisional_name:
        return task.name
    naming = parse_naming(spec)
    ext = extension_for_type(content_type) or url_extension(task.url)
    if naming.mode == "content-disposition":
        offered = disposition_filename(content_disposition)
        if offered:
            return _disposition_name(task.url, offered, ext)
    return _render(naming, task.url, task.index, ext)


def _disposition_name(url: str, offered: str, fallback_ext: str) -> str:
    stem, ext = posixpath.splitext(offered)
    ext = safe_component(ext.lstrip("."), limit=MAX_EXT).lower() or fallback_ext
    stem = clean_component(stem, limit=MAX_STEM) or "index"
    parts = urlsplit(url)
    return f"{host_folder(parts.hostname, parts.port)}/{stem}-{url_digest(url)}" + (f".{ext}" if ext else "")


def _render(naming: Naming, url: str, index: int, ext: str) -> str:
    if naming.mode == "hash":
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()
        return digest + (f".{ext}" if ext else "")
    if naming.mode == "template":
        return render_template(naming, url, index, ext)
    return name_for_url(url, ext)


def render_template(naming: Naming, url: str, index: int, ext: str) -> str:
    """Fill a template and make every folder of the result safe.

    Field values are made safe first (``{path}`` keeps its ``/``); then each
    ``/``-separated part of the whole result is cleaned again, because the
    template's own text may hold anything. Empty parts (an empty ``{ext}``
    folder, ``..``) are dropped.
    """
    rendered = naming.template.format_map(_template_fields(url, index, ext))
    parts = [_fit(_clean_rendered(part)) for part in rendered.split("/")]
    return "/".join(part for part in parts if part)


def _template_fields(url: str, index: int, ext: str) -> dict[str, Any]:
    parts = urlsplit(url)
    segments = unquote(parts.path).split("/")
    name = safe_component(posixpath.splitext(segments[-1])[0]) or "index"
    folders = [folder for folder in (safe_component(s) for s in segments[:-1]) if folder]
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()
    return {
        "host": host_folder(parts.hostname, parts.port),
        "path": "/".join(folders[:MAX_PATH_DEPTH] + [name]),
        "name": name,
        "index": index,
        "sha1": digest,
        "hash": digest[:HASH_DIGITS],
        "ext": safe_component(ext, limit=MAX_EXT).lower(),
    }


def _clean_rendered(part: str) -> str:
    cleaned = _UNSAFE.sub("_", part).strip("._")
    if cleaned.split(".")[0].lower() in WINDOWS_DEVICES:
        cleaned = "_" + cleaned
    return cleaned


def _fit(part: str) -> str:
    """Shorten an over-long folder or file name; a digest of the whole keeps it distinct."""
    if len(part) <= MAX_COMPONENT:
        return part
    stem, ext = posixpath.splitext(part)
    if len(ext) > MAX_EXT + 1:
        stem, ext = part, ""
    digest = hashlib.sha1(part.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    return f"{stem[: MAX_COMPONENT - len(ext) - HASH_DIGITS - 1]}-{digest}{ext}"
