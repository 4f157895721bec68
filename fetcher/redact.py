"""One rule for secrets: what is masked wherever a record or a message is made, and how a URL
with credentials is still known across reruns without storing them.

Masked (``MASK``, as wget prints ``http://alice:*password*@...``):

- the password of a URL's userinfo: ``http://alice:s3cret@host/`` -> ``http://alice:***@host/``;
  a userinfo with no password is masked whole (``https://***@host/``), because then the user
  name is the credential (``https://TOKEN@github.com/...``);
- the values of the ``Authorization``, ``Proxy-Authorization`` and ``Cookie`` headers given
  to a run (``remember_header``): found in a message, they are replaced too.

``mask`` is applied where a record or message is made (``Result.to_record``, the journal, the
collector's lines, ``fetcher status``), so a new call site cannot forget it; it costs one
substring test when a text has no ``@`` and no remembered secret.

``UrlKeys`` gives the journal a stable identity for a URL with credentials: the masked URL,
readable in ``fetcher status``, plus a MAC (keyed BLAKE2b) of the full URL under a random key kept
in ``OUT/.fetcher/urlkey`` (mode 0600). Keyed, not a plain hash: everything but the password is
in the masked URL, so a plain hash would let anyone with a copy of the journal test password
guesses offline. Two URLs that differ only in their password stay two URLs, as they always were.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fetcher.errors import ConfigError

MASK = "***"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
KEY_FILE = "urlkey"
KEY_MARK = "#mac="  # canonical URLs never have a fragment, so a key can never equal a real URL
_MIN_SECRET = 4  # shorter header values are not scrubbed from messages: "a" would mask every "a"

# scheme:// then the userinfo: everything up to the netloc's last "@" (a password may hold a raw "@",
# and a bad input line may hold a space). Masking a little too much in a message is harmless.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)((?:[^/?#\r\n@]*@)+)")
# A userinfo without a scheme, as in a bad input line "alice:s3cret@host/x" (a bare "user@host"
# without a colon is left alone: it reads as a mail address as often as a credential; so does
# "mailto:me@host", whose "mailto" is a scheme, not a user).
_BARE_USERINFO = re.compile(r"(?<![\w.+-])(?!(?:mailto|sips?|xmpp|im|pres):)([^\s/?#@:'\"]+):[^\s/?#@]+@(?=[^\s@])",
                            re.IGNORECASE)
_BARE_MASKED = rf"\1:{MASK}@"
_remembered: set[str] = set()


def _masked_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group(2)[:-1].partition(":")
    return f"{match.group(1)}{user}:{MASK}@" if colon else f"{match.group(1)}{MASK}@"


def mask(text: str) -> str:
    """``text`` with every URL password (or lone user name) and every remembered secret masked."""
    if "@" in text:
        text = _masked_at(text)
    if _remembered:
        for value in _remembered:
            if value in text:
                text = text.replace(value, MASK)
    return text


@lru_cache(maxsize=1024)
def _masked_at(text: str) -> str:
    # Cached: one URL with credentials is masked several times in a row (key, record, line).
    if "://" in text:
        return _USERINFO.sub(_masked_userinfo, text)
    return _BARE_USERINFO.sub(_BARE_MASKED, text)


# What a cut can leave of a credential: a URL whose netloc runs to the end, or "user:passw".
_OPEN_NETLOC = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*$")
_OPEN_BARE = re.compile(r"(?<![\w.+-])([^\s/?#@:'\"]+):[^\s/?#@]*$")


def cut(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, with a userinfo the cut would split hidden.

    Masking after the cut would miss it (its ``@`` is gone), and masking a huge
    line before it costs too much; so the tail of the cut is judged alone.
    """
    head = text[:limit]
    if len(text) <= limit:
        return head
    return _OPEN_BARE.sub(rf"\1:{MASK}", _OPEN_NETLOC.sub(rf"\1{MASK}", head))


def mask_optional(text: str | None) -> str | None:
    return None if text is None else mask(text)


def mask_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """A Result's ``extra`` with the text values of its input columns masked (values, never JSON text)."""
    columns = extra.get("input")
    if not isinstance(columns, dict):
        return extra
    return {**extra, "input": {k: mask(v) if isinstance(v, str) else v for k, v in columns.items()}}


def has_userinfo(url: str) -> bool:
    """Whether the netloc of the http(s) URL ``url`` holds a userinfo (not a URL in its query)."""
    return "@" in url and "@" in urlsplit(url).netloc


def strip_credentials(url: str) -> str:
    """``url`` without its userinfo (for a request whose Authorization header wins over it)."""
    if not has_userinfo(url):
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def is_secret_header(name: str) -> bool:
    return name.strip().lower() in SECRET_HEADERS


def remember_header(name: str, value: str) -> None:
    """Note a run's header: a secret one's value is masked in every message from now on."""
    if is_secret_header(name):
        _remember(value)
        # "Bearer X", "Basic X": the credential alone may turn up in a message too.
        scheme, _, credential = value.partition(" ")
        if credential and scheme.isalpha():
            _remember(credential.strip())


def remember_proxy(url: str) -> None:
    """Note a proxy URL's credentials (``--proxy``, ``http_proxy``...): masked in every message from
    now on, also as they travel in a ``Proxy-Authorization: Basic`` header."""
    from base64 import b64encode
    from urllib.parse import unquote

    if "@" not in url:
        return
    user, colon, password = urlsplit(url).netloc.rpartition("@")[0].partition(":")
    if colon:
        _remember(password)
        _remember(unquote(password))
        _remember(b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode())
    elif user:  # a user name alone is the credential, as in a URL (see MASK above)
        _remember(unquote(user))


def _remember(value: str) -> None:
    if len(value) >= _MIN_SECRET:
        _remembered.add(value)


def shown_key(key: str) -> str:
    """A journal key as people see it: the masked URL, without its MAC."""
    return mask(key.split(KEY_MARK, 1)[0])


class UrlKeys:
    """Journal identities of URLs in one output folder (see the module docstring).

    Args:
        folder: where the key file lives (``OUT/.fetcher``); it is made the
            first time a URL with credentials is seen, so most folders never get one.
    """

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, KEY_FILE)
        self._secret: bytes | None = None

    def key(self, url: str) -> str:
        """``url`` itself when it holds no credentials (so older journals match), else
        the masked URL plus the MAC of the full one."""
        masked = mask(url)
        if masked == url:
            return url
        # Keyed BLAKE2b is a MAC by design, as HMAC is, at a fraction of the cost of HMAC through
        # OpenSSL 3 (which fetches its digest anew on every call: ~15 us against ~1 us here).
        digest = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), key=self._load(), digest_size=16)
        return f"{masked}{KEY_MARK}{digest.hexdigest()}"

    def _load(self) -> bytes:
        if self._secret is None:
            self._secret = _read_or_make_key(self.path)
        return self._secret


def _read_or_make_key(path: str) -> bytes:
    """The folder's URL key; made (mode 0600, never readable by others, even briefly) if missing."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            with open(path, encoding="ascii") as handle:
                key = bytes.fromhex(handle.read().strip())
        except (OSError, ValueError) as exc:
            key = b""
            reason = str(exc)
        else:
            reason = "it is empty"
        if not key:
            raise ConfigError(f"cannot read the URL key {path!r} ({reason}); remove it to make a new one: "
                              "URLs with credentials are then fetched again") from None
        return key
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        key = os.urandom(32)  # what secrets.token_bytes is; secrets (and random) cost 6 ms of start-up
        handle.write(key.hex() + "\n")
    return key
