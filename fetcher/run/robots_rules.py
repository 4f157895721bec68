"""robots.txt as RFC 9309 reads it: the group for one product token, and its longest-matching rule.

The standard library's ``urllib.robotparser`` predates the RFC (first match wins, no ``*`` or
``$``); scrapy's protego implements the RFC but matches a group's name anywhere in the
User-Agent at a word boundary, so a ``fetch`` group would bind a ``fetcher`` crawler. This
module follows the RFC's text (section 2):

- A group is one or more ``user-agent`` lines followed by its rules; the crawler's group is
  every group whose name equals its product token, case-insensitively (groups of the same name
  are merged); else the ``*`` groups; else none, and everything is allowed.
- The rule with the longest pattern (in octets, after percent-encoding is normalised) that
  matches the URL's path and query wins; on a tie ``allow`` wins. ``*`` matches any run of
  characters and a final ``$`` the end of the URL. An empty ``disallow`` is no rule.
- ``/robots.txt`` itself is always allowed; at most ``MAX_BYTES`` of a file are read.

``crawl-delay`` is not in the RFC, but is widely written: the largest delay of the chosen
groups, in seconds, is kept for the scheduler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

MAX_BYTES = 500 * 1024  # RFC 9309 2.5: crawlers must parse at least 500 KiB
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_TOKEN = re.compile(r"[A-Za-z_*-]+")


def product_token(user_agent: str) -> str:
    """The product token a User-Agent names its crawler by: ``fetcher/1.0 (+url)`` -> ``fetcher``."""
    found = _TOKEN.match(user_agent.strip())
    return found.group(0).lower() if found else ""


def normalise(text: str) -> str:
    """Percent-encoding made comparable: non-ASCII and spaces encoded as UTF-8, escapes of
    unreserved characters decoded, the other escapes in upper case (RFC 9309 2.2.2)."""
    text = quote(text, safe="".join(chr(c) for c in range(33, 127) if chr(c) != "%"), encoding="utf-8",
                 errors="surrogateescape") if not text.isascii() or " " in text else text
    if "%" not in text:
        return text

    def unescape(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _ESCAPE.sub(unescape, text)


@dataclass(frozen=True, slots=True)
class _Rule:
    allow: bool
    pattern: str  # normalised
    regex: re.Pattern[str] | None  # None: a plain prefix

    def matches(self, target: str) -> bool:
        if self.regex is None:
            return target.startswith(self.pattern)
        return self.regex.match(target) is not None


def _rule(allow: bool, value: str) -> _Rule:
    pattern = normalise(value)
    if "*" not in pattern and not pattern.endswith("$"):
        return _Rule(allow, pattern, None)
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    regex = ".*".join(re.escape(part) for part in body.split("*")) + (r"\Z" if anchored else "")
    return _Rule(allow, pattern, re.compile(regex, re.DOTALL))


@dataclass
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[_Rule] = field(default_factory=list)
    crawl_delay: float | None = None


@dataclass(frozen=True)
class RobotsRules:
    """The rules that apply to one crawler on one host.

    Build with ``parse``; ``ALLOW_ALL`` stands for a robots.txt that is missing (4xx).
    """

    rules: tuple[_Rule, ...] = ()
    crawl_delay: float | None = None

    @classmethod
    def parse(cls, content: bytes | str, user_agent: str) -> RobotsRules:
        """The rules of ``content`` (a robots.txt body) for the crawler whose User-Agent is ``user_agent``."""
        if isinstance(content, bytes):
            content = content[:MAX_BYTES].decode("utf-8", "replace")
        groups = _groups(content.lstrip("\ufeff"))
        token = product_token(user_agent)
        chosen = [g for g in groups if token and token != "*" and token in g.agents]
        if not chosen:
            chosen = [g for g in groups if "*" in g.agents]
        delays = [g.crawl_delay for g in chosen if g.crawl_delay is not None]
        # Longest pattern first, allow before disallow on a tie: the first match decides.
        rules = sorted((r for g in chosen for r in g.rules), key=lambda r: (-len(r.pattern), not r.allow))
        return cls(tuple(rules), max(delays) if delays else None)

    def allows(self, target: str) -> bool:
        """Whether the path and query ``target`` (``/a/b?c``) may be fetched."""
        if target == "/robots.txt" or not self.rules:
            return True
        target = normalise(target)
        for rule in self.rules:
            if rule.matches(target):
                return rule.allow
        return True


ALLOW_ALL = RobotsRules()


def _groups(text: str) -> list[_Group]:
    groups: list[_Group] = []
    current: _Group | None = None
    in_agents = False  # the previous record was a user-agent line: a new one joins the same group
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("user-agent", "useragent", "user agent"):
            if current is None or not in_agents:
                current = _Group()
                groups.append(current)
            current.agents.append(value.lower() if value == "*" else product_token(value))
            in_agents = True
            continue
        if current is None:  # rules before the first user-agent line belong to no group
            continue
        if key in ("allow", "disallow"):
            in_agents = False
            if value:
                current.rules.append(_rule(key == "allow", value))
        elif key == "crawl-delay":
            in_agents = False
            current.crawl_delay = _seconds(value, current.crawl_delay)
        # other records (sitemap, host, ...) belong to no group and end none
    return groups


def _seconds(value: str, earlier: float | None) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return earlier
    if not seconds >= 0 or seconds == float("inf"):  # NaN, negative, infinite: ignored
        return earlier
    return seconds
