"""File names from untrusted text: a ``filename`` column, a server's Content-Disposition,
a Content-Type. Pure functions, no disk access.

``naming.py`` builds URL-derived names from a strict ASCII alphabet. Names a
person or a server chose are kept closer to what they wrote (Unicode letters,
spaces), because that is why they were asked for; only what is dangerous goes:
path separators, ``..``, drive letters, control and bidi-override characters,
Windows device names and reserved characters, leading dots (hidden files) and
trailing dots or spaces (which Windows silently drops). ``join_within`` stays
the last guard either way.
"""

from __future__ import annotations

import functools
import mimetypes
import posixpath
import re
import unicodedata
from urllib.parse import unquote

WINDOWS_DEVICES = frozenset({
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
})
MAX_COMPONENT_BYTES = 200  # well under the usual 255, leaving room for " (12)" and ".part"
MAX_DEPTH = 32
MAX_EXT = 10

_RESERVED = re.compile(r'[<>:"/\\|?*]')
_SEPARATORS = re.compile(r"[/\\]")
# Categories dropped from user names: controls, format characters (bidi overrides
# such as U+202E can disguise "gpj.exe" as "exe.jpg"), line/paragraph separators,
# lone surrogates (undecodable input bytes), unassigned and private-use.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

# Types whose extension mimetypes gets wrong or machine-dependent (".jpe", ".jfif").
_PREFERRED_EXT = {
    "image/jpeg": "jpg", "image/jpg": "jpg", "image/pjpeg": "jpg", "image/png": "png",
    "image/gif": "gif", "image/webp": "webp", "image/avif": "avif", "image/heic": "heic",
    "image/heif": "heif", "image/jxl": "jxl", "image/svg+xml": "svg", "image/bmp": "bmp",
    "image/x-ms-bmp": "bmp", "image/tiff": "tif", "image/x-icon": "ico",
    "image/vnd.microsoft.icon": "ico", "text/html": "html", "text/plain": "txt",
    "text/csv": "csv", "application/json": "json", "application/pdf": "pdf",
    "application/zip": "zip", "application/gzip": "gz", "application/xml": "xml", "text/xml": "xml",
    "video/mp4": "mp4", "video/webm": "webm", "audio/mpeg": "mp3", "audio/ogg": "ogg",
}
# Types that say nothing about the content: no extension is better than ".bin".
_UNINFORMATIVE = frozenset({"application/octet-stream", "binary/octet-stream", "application/unknown",
                            "application/x-download", "application/force-download"})


@functools.cache
def _mime_types() -> mimetypes.MimeTypes:
    """Built-in table only, never /etc/mime.types: the same response gets the same name on every
    machine. Made when first asked: a third of this module's import time, for a rare guess."""
    return mimetypes.MimeTypes()


def clean_component(text: str, limit: int = MAX_COMPONENT_BYTES) -> str:
    """Reduce a person's or server's text to one harmless path component (may be ``""``)."""
    text = unicodedata.normalize("NFC", text)
    text = "".join("_" if unicodedata.category(ch) in _BAD_CATEGORIES else ch for ch in text)
    text = _RESERVED.sub("_", text)
    text = " ".join(text.split())  # tabs, runs of spaces, odd white space → one space
    text = text.strip(" .")  # no hidden files; Windows drops trailing dots and spaces
    if text.split(".")[0].strip().lower() in WINDOWS_DEVICES:
        text = "_" + text
    return _fit_bytes(text, limit)


def _fit_bytes(text: str, limit: int) -> str:
    """Shorten to ``limit`` UTF-8 bytes, keeping a short extension."""
    if len(text.encode("utf-8")) <= limit:
        return text
    stem, ext = posixpath.splitext(text)
    if len(ext) > MAX_EXT + 1:
        stem, ext = text, ""
    room = limit - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return stem + ext


def clean_user_path(text: str) -> str:
    """Make a ``filename`` column value a safe relative path (may be ``""``).

    Both ``/`` and ``\\`` separate folders; empty, ``.`` and ``..`` parts are
    dropped, so ``../../etc/passwd`` becomes ``etc/passwd`` and ``/abs/x``
    becomes ``abs/x``; a drive letter ``C:`` becomes a folder ``C_``.
    """
    parts = [clean_component(part) for part in _SEPARATORS.split(text)]
    kept = [part for part in parts if part]
    return "/".join(kept[-MAX_DEPTH:])  # absurdly deep paths keep their last folders


def extension_for_type(content_type: str | None) -> str:
    """The extension (no dot) for a Content-Type, ``""`` when it says nothing useful.

    ``image/jpeg`` → ``jpg``, ``image/svg+xml; charset=utf-8`` → ``svg``,
    ``application/octet-stream`` → ``""``.
    """
    if not content_type:
        return ""
    mime = content_type.split(";", 1)[0].strip().lower()
    if not mime or mime in _UNINFORMATIVE:
        return ""
    if mime in _PREFERRED_EXT:
        return _PREFERRED_EXT[mime]
    guessed = _mime_types().guess_extension(mime, strict=False) or ""
    ext = guessed.lstrip(".").lower()
    return ext if re.fullmatch(r"[a-z0-9]{1,%d}" % MAX_EXT, ext) else ""


_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def disposition_filename(header: str | None) -> str | None:
    """The safe base name a Content-Disposition header proposes, or None.

    RFC 6266: ``filename*=UTF-8''...`` (RFC 8187) wins over ``filename=``. Any
    folder part is dropped, as the RFC asks of recipients, so ``../../etc/passwd``
    gives ``passwd``, ``C:\\x`` gives ``x`` and ``/abs`` gives ``abs``.
    """
    if not header:
        return None
    _, _, rest = header.partition(";")  # the disposition type itself does not matter
    params: dict[str, str] = {}
    for key, value in _PARAM.findall(";" + rest):
        params.setdefault(key.lower(), value.strip())
    name = _extended_value(params.get("filename*")) or _plain_value(params.get("filename"))
    parts = [part for part in _SEPARATORS.split(name or "") if part.strip(" .")]
    if not parts:
        return None
    return clean_component(parts[-1]) or None


def _extended_value(value: str | None) -> str | None:
    """Decode an RFC 8187 ``charset'lang'percent-encoded`` value (UTF-8 or ISO-8859-1 only)."""
    if not value:
        return None
    pieces = value.strip('"').split("'", 2)
    if len(pieces) != 3 or pieces[0].lower() not in ("utf-8", "iso-8859-1"):
        return None
    return unquote(pieces[2], encoding=pieces[0].lower(), errors="replace")


def _plain_value(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    # http.client decodes headers as ISO-8859-1; servers often send raw UTF-8.
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return value
