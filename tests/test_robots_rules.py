"""robots_rules against RFC 9309's own examples (sections 2.2.2, 5.1, 5.2) and the cases around them."""

from __future__ import annotations

import pytest

from fetcher.run.robots_rules import RobotsRules, product_token

RFC_5_1 = """\
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""


@pytest.mark.parametrize("agent, path, allowed", [
    ("FooBot/1.0", "/example/page.html", True),
    ("FooBot/1.0", "/example/allowed.gif", True),
    ("FooBot/1.0", "/example/other.html", False),
    ("foobot", "/", False),
    ("barbot", "/example/page.html", False),
    ("BazBot/2 (+http://x)", "/example/page.html", False),
    ("bazbot", "/example/other.html", True),
    ("quxbot", "/example/page.html", True),  # its group is empty: it does not fall back to *
    ("otherbot", "/x/pic.gif", False),
    ("otherbot", "/x/pic.gif?x", True),  # $ ends the URL
    ("otherbot", "/example/", False),
    ("otherbot", "/publications/", True),
    ("otherbot", "/robots.txt", True),
])
def test_rfc_9309_section_5_1(agent: str, path: str, allowed: bool) -> None:
    assert RobotsRules.parse(RFC_5_1, agent).allows(path) is allowed


def test_rfc_9309_section_5_2_the_longest_match_wins() -> None:
    rules = RobotsRules.parse("User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n",
                              "foobot")
    assert rules.allows("/example/page/")
    assert not rules.allows("/example/page/disallowed.gif")


def test_on_a_tie_allow_wins_and_an_empty_disallow_is_no_rule() -> None:
    assert RobotsRules.parse("User-agent: *\nDisallow: /a\nAllow: /a\n", "x").allows("/a/b")
    assert RobotsRules.parse("User-agent: *\nDisallow:\n", "x").allows("/anything")


@pytest.mark.parametrize("pattern, path, matches", [
    ("/foo/bar?baz=quz", "/foo/bar?baz=quz", True),
    ("/foo/bar/ツ", "/foo/bar/%E3%83%84", True),
    ("/foo/bar/%E3%83%84", "/foo/bar/ツ", True),
    ("/foo/bar/%62%61%7A", "/foo/bar/baz", True),
    ("/foo/bar/%e3%83%84", "/foo/bar/%E3%83%84", True),
    ("/a%2Fb", "/a/b", False),  # an escaped reserved character stays escaped
    ("/*/private", "/users/1/private/x", True),
    ("/*.php$", "/index.php", True),
    ("/*.php$", "/index.php5", False),
    ("/fish*", "/fish.html", True),
    ("/fish*", "/Fish.asp", False),  # paths are case-sensitive
])
def test_rfc_9309_section_2_2_2_and_special_characters(pattern: str, path: str, matches: bool) -> None:
    rules = RobotsRules.parse(f"User-agent: *\nDisallow: {pattern}\n", "x")
    assert rules.allows(path) is not matches


def test_the_product_token_must_equal_the_group_name_not_contain_it() -> None:
    text = "User-agent: fetch\nDisallow: /\n\nUser-agent: *\nDisallow: /star\n"
    rules = RobotsRules.parse(text, "fetcher/1.0 (+https://example.org/fetcher)")
    assert rules.allows("/x") and not rules.allows("/star")
    assert not RobotsRules.parse(text, "Fetch/2").allows("/x")


def test_groups_of_one_name_merge_and_comments_bom_and_stray_rules_are_handled() -> None:
    text = ("\ufeffDisallow: /before-any-group\n# a comment\nUser-agent: a # trailing\nDisallow: /one\n"
            "Sitemap: https://h/sitemap.xml\nUser-agent: b\nDisallow: /b-only\n\nUSER-AGENT: A\nDisallow: /two\n")
    rules = RobotsRules.parse(text.encode(), "a")
    assert not rules.allows("/one") and not rules.allows("/two")
    assert rules.allows("/before-any-group") and rules.allows("/b-only")


def test_crawl_delay_is_the_groups_largest_and_bad_values_are_ignored() -> None:
    text = "User-agent: *\nCrawl-delay: 2.5\n\nUser-agent: slow\nCrawl-delay: nan\nCrawl-delay: abc\n"
    assert RobotsRules.parse(text, "x").crawl_delay == 2.5
    assert RobotsRules.parse(text, "slow").crawl_delay is None


def test_product_token() -> None:
    assert product_token("Mozilla/5.0 (compatible; X)") == "mozilla"
    assert product_token("My_Bot-2/1.0") == "my_bot-"  # the RFC's token characters: letters, _ and -
    assert product_token("") == ""


def test_only_the_first_500_kib_are_read() -> None:
    body = b"User-agent: *\n" + b"# filler\n" * 60_000 + b"Disallow: /late\n"
    assert RobotsRules.parse(body, "x").allows("/late")
