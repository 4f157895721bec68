"""Opt-outs from AI training that a server sends with a response: ``X-Robots-Tag: noai`` / ``noimageai``.

Honoured by default, as img2dataset does (``--ignore-opt-out`` turns it off): the
response is refused on its headers, before its body is read, with kind
``opted-out``, never retried. A directive may name a crawler
(``X-Robots-Tag: googlebot: noai``); then it applies only when that name is the
product token of our User-Agent (``fetcher`` in ``fetcher/1.0 ...``); one without
a name applies to everyone. Repeated headers arrive joined with ``", "``.
"""

from __future__ import annotations

from collections.abc import Mapping

OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})


def opted_out(headers: Mapping[str, str], user_agent: str) -> str | None:
    """The opt-out directive that applies to us in ``headers``, or None."""
    value = headers.get("X-Robots-Tag")
    if not value:
        return None
    ours = user_agent.split("/", 1)[0].strip().lower()
    agent: str | None = None  # the crawler the directives that follow are for (None: everyone)
    for item in value.split(","):
        name, colon, directive = item.partition(":")
        if colon and " " not in name.strip() and name.strip().lower() not in OPT_OUT_DIRECTIVES:
            agent, item = name.strip().lower(), directive
        directive = item.strip().lower()
        if directive in OPT_OUT_DIRECTIVES and agent in (None, ours):
            return directive
    return None
