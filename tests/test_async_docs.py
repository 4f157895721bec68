"""Every Python block of docs/async.md runs, against the loopback server, and prints what it says.

tests/test_docs_examples.py runs the blocks as written too, but those marked
``<!-- stand-in: NAME -->``: Scrapy and Playwright are not installed for the tests
(Scrapy's cookie handling may fetch the public-suffix list from the internet;
Playwright needs a browser build), so their blocks run here against stand-ins, small
fakes of the few calls they make, which fetch the real pages from the loopback server.
(The Scrapy block was also run once for real, with Scrapy 2.19 on its asyncio reactor, in a
network namespace holding only the loopback: 12 images saved, ``closed`` awaited.) What is checked is fetcher's side: the
AsyncFetcher they open, feed and close on the running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import sys
import types
import urllib.request
from typing import Any
from urllib.parse import urljoin

import pytest

from conftest import NEEDS_PYCURL

pytestmark = NEEDS_PYCURL
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "async.md")


def doc_text() -> str:
    with open(DOC, encoding="utf-8") as handle:
        return handle.read()


def examples() -> dict[str, str]:
    return dict(re.findall(r"<!-- (?:example|stand-in): ([\w-]+) -->\n```python\n(.*?)```", doc_text(), flags=re.S))


def run_example(name: str, server, tmp_path, monkeypatch, namespace: dict[str, Any] | None = None) -> str:
    code = examples()[name].replace("https://example.com", server.base_url)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"docs/async.md:{name}", "exec"), namespace if namespace is not None else {})  # noqa: S102
    return printed.getvalue()


def test_every_python_block_is_a_named_example_with_a_test():
    blocks = re.findall(r"```python\n", doc_text())
    assert len(blocks) == len(examples())
    tested = {name.removeprefix("test_").replace("_", "-") for name in globals() if name.startswith("test_")}
    assert set(examples()) <= tested


def test_async_list(server, tmp_path, monkeypatch):
    assert run_example("async-list", server, tmp_path, monkeypatch).strip() == "20 saved, 1 failed"
    assert len(list((tmp_path / "downloads").rglob("photo*.jpg"))) == 20


def test_async_scraper(server, tmp_path, monkeypatch):
    assert run_example("async-scraper", server, tmp_path, monkeypatch).strip() == "12 images saved"
    assert server.stats.requests["/gallery/0"] == 1  # the cycle back to the start is not followed
    assert len(list((tmp_path / "scraped").rglob("*.png"))) == 12


def test_async_cancel(server, tmp_path, monkeypatch):
    printed = run_example("async-cancel", server, tmp_path, monkeypatch).split("\n")
    assert printed[:2] == ["cancelled", "4 complete"]
    for i in range(4):  # each second request asked for the rest only
        first, second = server.stats.ranges[f"/ranged/big{i}.bin"]
        assert first is None and second is not None and second != "bytes=0-"
    assert not list((tmp_path / "big").rglob("*.part"))


def test_async_uvloop(server, tmp_path, monkeypatch):
    assert run_example("async-uvloop", server, tmp_path, monkeypatch).strip() == "200 True"


# -- Scrapy, as far as the spider sees it ----------------------------------------------------


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the loopback server
        return response.read().decode()


class FakeResponse:
    """What the spider reads of a Scrapy response: css() for two selectors, urljoin, follow."""

    def __init__(self, url: str, html: str) -> None:
        self.url, self.html = url, html

    def css(self, query: str) -> Any:
        pattern = {"img::attr(src)": r'<img src="([^"]+)"', "a::attr(href)": r'<a href="([^"]+)"'}[query]
        return types.SimpleNamespace(getall=lambda: re.findall(pattern, self.html))

    def urljoin(self, link: str) -> str:
        return urljoin(self.url, link)

    def follow(self, link: str, callback: Any) -> tuple[str, Any]:
        return self.urljoin(link), callback


def test_async_scrapy(server, tmp_path, monkeypatch):
    fake = types.ModuleType("scrapy")
    fake.Spider = type("Spider", (), {"logger": logging.getLogger("spider")})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scrapy", fake)
    namespace: dict[str, Any] = {}
    run_example("async-scrapy", server, tmp_path, monkeypatch, namespace)
    spider = namespace["ImageSpider"]()
    assert spider.custom_settings["TWISTED_REACTOR"] == "twisted.internet.asyncioreactor.AsyncioSelectorReactor"

    async def crawl() -> None:  # Scrapy's engine, reduced to: fetch each page once, call parse, then closed
        queue, seen = list(spider.start_urls), set()
        while queue:
            url = queue.pop()
            if url in seen:
                continue
            seen.add(url)
            html = await asyncio.get_running_loop().run_in_executor(None, page, url)
            async for link, callback in spider.parse(FakeResponse(url, html)):
                assert callback == spider.parse
                queue.append(link)
        await spider.closed("finished")

    asyncio.run(crawl())
    assert spider.fetcher.summary.ok == 12
    assert len(list((tmp_path / "spider-images").rglob("*.png"))) == 12


# -- Playwright, as far as the script sees it --------------------------------------------------


class FakePage:
    """A page that "renders" by fetching the HTML; its images' src come back absolute, as a browser's do."""

    def __init__(self) -> None:
        self.url = ""
        self.context = types.SimpleNamespace(cookies=self._cookies)

    async def goto(self, url: str) -> None:
        self.url = url
        self.html = await asyncio.get_running_loop().run_in_executor(None, page, url)

    async def eval_on_selector_all(self, selector: str, script: str) -> list[str]:
        assert selector == "img"
        return [urljoin(self.url, src) for src in re.findall(r'<img src="([^"]+)"', self.html)]

    async def _cookies(self) -> list[dict[str, str]]:
        return [{"name": "session", "value": "abc"}]


@contextlib.asynccontextmanager
async def fake_playwright() -> Any:
    async def launch() -> Any:
        async def new_page() -> FakePage:
            return FakePage()

        async def close() -> None:
            pass

        return types.SimpleNamespace(new_page=new_page, close=close)

    yield types.SimpleNamespace(chromium=types.SimpleNamespace(launch=launch))


def test_async_playwright(server, tmp_path, monkeypatch):
    fake = types.ModuleType("playwright.async_api")
    fake.async_playwright = fake_playwright  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "playwright", types.ModuleType("playwright"))
    monkeypatch.setitem(sys.modules, "playwright.async_api", fake)
    namespace: dict[str, Any] = {}
    run_example("async-playwright", server, tmp_path, monkeypatch, namespace)
    summary = asyncio.run(namespace["save_images"]([server.url("/gallery/0"), server.url("/gallery/1")]))
    assert summary.ok == 6
    assert len(list((tmp_path / "rendered").rglob("*.png"))) == 6
