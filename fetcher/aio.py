"""The asyncio API: ``AsyncFetcher`` and ``afetch``, on the caller's running event loop.

::

    async with AsyncFetcher(out="downloads", pool=16) as f:
        result = await f.fetch("https://example.com/a.jpg")
        async for result in f.map(urls):          # as they complete
            ...

    async for result in afetch(urls, out="downloads"):
        ...

The same run as ``fetch()``, ``Fetcher`` and the CLI (run/runner.py: rules, retries,
politeness, journal, manifest, durability), on no thread of its own: libcurl's
multi handle is driven by the loop (backends/asyncio_curl.py) and the engine's
steps by one task of it (run/aio_driver.py). See docs/async.md.

Over 300 lines, as api.py is, on purpose: the public async surface is one module, beside
the sync one it mirrors; the work is in run/aio_driver.py and backends/asyncio_curl.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

from fetcher.api import Task, _Converter
from fetcher.backends.base import SessionFactory
from fetcher.errors import ConfigError, Interrupted
from fetcher.models import FetchTask, Result
from fetcher.options import CURL_INSTALL_HINT
from fetcher.run.aio_driver import Asked, LoopDriver
from fetcher.run.api_run import api_options, api_spec, look_ahead
from fetcher.run.collector import Summary

__all__ = ["AsyncFetcher", "afetch"]


class AsyncFetcher:
    """Downloads on the running event loop, as URLs are asked for, until closed.

    Takes the keyword arguments of ``fetch()`` and ``Fetcher``, with the same names and
    defaults (``retries=``, ``per_host=``, ``memory=True``, any CLI option by its
    Options name), except what the loop decides: ``backend`` is ``"multi"`` (libcurl's
    multi interface, the one an event loop can drive; ``"auto"`` means it too) and
    ``client`` is ``"curl"``. Use it as an async context manager: leaving the block
    waits for every URL asked for, or, if the block raised (or its task was
    cancelled), stops every transfer at once, keeping resumable ``.part`` files.

    Raises:
        ConfigError: a bad option, pycurl missing (the message says what to install),
            or (entering the block) the output folder in use by another run.
    """

    def __init__(self, out: str | None = "downloads", *, backend: str = "multi", pool: int = 8,
                 memory: bool = False, progress: bool = False, journal: bool | None = None,
                 session_factory: SessionFactory | None = None, on_result: Callable[[Result], None] | None = None,
                 keep_results: bool = True, retry_failed: bool = True, **settings: Any) -> None:
        options = api_options(out, _engine(backend, settings, session_factory), pool, memory,
                              {**settings, "client": "curl"}, session_factory, writes_files=not memory)
        self._summary: Summary | None = None
        self._spec = api_spec(options, progress, memory, journal, None, retry_failed, repeat=True,
                              on_summary=self._ended_with)
        self._converter = _Converter(options.output.naming)
        self._keep = keep_results
        self._asked = Asked(on_result)
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._wake: Callable[[], None] = _nothing

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> AsyncFetcher:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            await self.cancel()
        else:
            await self.aclose()

    async def start(self) -> None:
        """Start the run and wait for its setup (``async with`` does it).

        Raises:
            ConfigError: the output folder is in use, or cannot be written.
        """
        self._ensure_started()
        assert self._started is not None
        await asyncio.shield(self._started)

    async def aclose(self) -> Summary | None:
        """No more URLs; wait until every one asked for is done; return the Summary.

        Raises what ended the run early (StorageError: the disk filled up).
        """
        self._asked.closed = True
        self._wake()
        await self._ended()
        if self._error is not None:
            raise self._error
        return self._summary

    async def cancel(self) -> None:
        """Stop now: no new request starts, transfers in flight end, unresolved futures are cancelled."""
        self._cancel.set()
        self._asked.closed = True
        self._wake()
        await self._ended()

    @property
    def summary(self) -> Summary | None:
        """Counts of the run, once it has ended."""
        return self._summary

    # -- asking ------------------------------------------------------------------------

    async def fetch(self, item: str | Task) -> Result:
        """Download one URL (or Task) and return its Result; a failure is a Result with ``ok`` False.

        Cancelling the awaiting task leaves the download running (cancel the AsyncFetcher to stop it).
        """
        return await self._ask(*self._convert(item), keep=False)

    def submit(self, item: str | Task) -> asyncio.Future[Result]:
        """Queue a URL (or Task); return a future of its Result, which ``results()`` also yields
        (unless ``keep_results=False``).

        Raises:
            RuntimeError: after ``aclose()``, or with no running loop.
            TypeError: ``item`` is neither a string nor a Task.
        """
        return self._ask(*self._convert(item), keep=self._keep)

    async def map(self, items: Iterable[str | Task] | AsyncIterable[str | Task], *,
                  ahead: int | None = None) -> AsyncIterator[Result]:
        """Each unique item's Result as it completes; ``items`` (an iterable or async iterable)
        is read at most ``ahead`` items beyond what has come back (default: 4 x the pool, plus
        the most files one flush holds back, ``durability.FLUSH_EVERY_N``: a finished file's Result
        waits for its batch to reach the disk, and a look-ahead smaller than a batch would leave
        the pool idle meanwhile).

        Leaving the loop early stops reading ``items``; what was asked for still finishes
        unless the AsyncFetcher is cancelled (leaving its ``async with`` on an exception does it).
        """
        limit = look_ahead(ahead, self._spec.options.transport.window)
        source = _items(items)
        done: deque[asyncio.Future[Result]] = deque()
        signal: list[asyncio.Future[None]] = []
        seen: set[bytes] = set()  # digests of the URLs asked for: one Result per unique item
        pending: set[asyncio.Future[Result]] = set()

        def landed(future: asyncio.Future[Result]) -> None:
            done.append(future)
            if signal and not signal[0].done():
                signal[0].set_result(None)

        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    item = await anext(source, _NO_ITEM)
                    if item is _NO_ITEM:
                        exhausted = True
                        break
                    work, meta = self._convert(item)
                    digest = hashlib.blake2b(work.url.encode(), digest_size=16).digest()
                    if digest not in seen:
                        seen.add(digest)
                        future = self._ask(work, meta, keep=False)
                        pending.add(future)
                        future.add_done_callback(landed)
                if done:
                    future = done.popleft()
                    pending.discard(future)
                    yield self._outcome(future)
                elif exhausted and not pending:
                    return
                else:
                    signal[:] = [asyncio.get_running_loop().create_future()]
                    await signal[0]
        finally:
            for future in pending:
                future.cancel()  # its download goes on; nobody waits for this Result here

    async def results(self) -> AsyncIterator[Result]:
        """The Results of ``submit()``ted items as they complete, until every one so far is done."""
        asked = self._asked
        while True:
            if asked.kept:
                yield asked.kept.popleft()
                continue
            if not asked.kept_due or self._task is None or self._task.done():
                return
            asked.changed = asyncio.get_running_loop().create_future()
            await asked.changed

    # -- the run -----------------------------------------------------------------------

    def _convert(self, item: str | Task) -> tuple[FetchTask | Result, Any]:
        if self._error is not None:
            raise self._error  # the run could not start or stopped (a folder in use, a full disk)
        if self._asked.closed:
            raise RuntimeError("cannot ask a closed AsyncFetcher for more")
        return self._converter.convert(item)

    def _ask(self, work: FetchTask | Result, meta: Any, keep: bool) -> asyncio.Future[Result]:
        self._ensure_started()
        future, new = self._asked.ask(work, meta, keep)
        if new:
            self._wake()
        return future

    def _ensure_started(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._started = loop.create_future()
            self._task = loop.create_task(self._run(), name="fetcher-engine")

    async def _run(self) -> None:
        asked = self._asked
        driver = LoopDriver(self._spec, asked.resolve)
        self._wake = driver.wake
        started = self._started
        assert started is not None
        try:
            await driver.run(asked.feed(), asked.wait_for_more, self._cancel, lambda: started.set_result(None))
        except Interrupted:
            pass  # our own cancel: the futures left are cancelled below
        except BaseException as exc:  # noqa: BLE001 - handed to the caller: start(), aclose(), fetch()
            self._error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._summary is not None:
                self._summary.duplicates += asked.shared
            if not started.done():
                started.set_exception(self._error or Interrupted("cancelled before it started"))
                started.exception()  # retrieved: start() may never be awaited (submit() alone)
            asked.abandon(self._error)

    def _ended_with(self, summary: Summary) -> None:
        self._summary = summary

    def _outcome(self, future: asyncio.Future[Result]) -> Result:
        if future.cancelled():  # the AsyncFetcher was cancelled under this map
            raise Interrupted("the AsyncFetcher was cancelled")
        return future.result()

    async def _ended(self) -> None:
        if self._task is not None:
            await asyncio.wait([self._task])  # not its exception: _run keeps it in _error


def afetch(items: Iterable[str | Task] | AsyncIterable[str | Task], out: str | None = "downloads",
           **settings: Any) -> AsyncIterator[Result]:
    """Download ``items`` on the running loop; ``async for`` yields each unique item's Result as it
    completes. ``AsyncFetcher(out, **settings).map(items)`` inside its ``async with``.

    Raises:
        ConfigError: at once, for a bad keyword (as ``AsyncFetcher``); when the iteration
            starts, for an output folder in use.
    """
    return _fetched(AsyncFetcher(out, **settings), items)


async def _fetched(fetcher: AsyncFetcher, items: Iterable[str | Task] | AsyncIterable[str | Task],
                   ) -> AsyncIterator[Result]:
    async with fetcher:
        async for result in fetcher.map(items):
            yield result


_NO_ITEM: Any = object()


async def _items(items: Iterable[str | Task] | AsyncIterable[str | Task]) -> AsyncIterator[str | Task]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _engine(backend: str, settings: dict[str, Any], session_factory: SessionFactory | None) -> str:
    """The backend of every AsyncFetcher, after the checks that are its own (ConfigError)."""
    if importlib.util.find_spec("pycurl") is None:
        raise ConfigError(f"AsyncFetcher drives libcurl on your event loop and needs pycurl, which is not "
                          f"installed: {CURL_INSTALL_HINT}")
    if backend not in ("multi", "auto"):
        raise ConfigError(f"AsyncFetcher runs libcurl's multi interface on your event loop: backend must be "
                          f"'multi' (or 'auto'), not {backend!r}; fetch() and Fetcher run the others")
    if settings.get("client", "curl") not in ("curl", "auto"):
        raise ConfigError(f"AsyncFetcher's client is libcurl: client must be 'curl' (or 'auto'), "
                          f"not {settings['client']!r}")
    if session_factory is not None:
        raise ConfigError("AsyncFetcher makes its own libcurl handles: it takes no session_factory (a "
                          "requests Session would block your loop); set headers=, cookies= or user_agent=")
    return "multi"


def _nothing() -> None:
    pass
