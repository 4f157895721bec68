"""The Python API: ``fetch()`` streams results, ``Fetcher`` takes URLs as they come.

Both run the same engine, rules, journal and manifest as the CLI; every CLI
option is a keyword argument with the same name and default (``--per-host`` is
``per_host=``, ``--timeout 5,30`` is ``timeout="5,30"``). Per-URL failures come
back as Results (``result.ok`` is False, ``result.error`` says why); misuse
raises ``fetcher.errors.ConfigError`` (also a ValueError).

Over 300 lines on purpose: the whole public surface (``Task``, ``fetch``, ``Fetcher``) is
one module, so ``help(fetcher.api)`` and a reader see it together; the work is in run/
(``run/api_run.py``: the keyword check and the run every front end of the API shares).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from fetcher.backends.base import SessionFactory
from fetcher.models import FetchTask, Item, Result
from fetcher.redact import remember_header
from fetcher.run.api_run import api_options, api_spec, look_ahead
from fetcher.run.collector import Summary
from fetcher.run.runner import RunSpec, run
from fetcher.sources.tasks import Line, TaskMaker

__all__ = ["Fetcher", "Task", "fetch"]


@dataclass(frozen=True)
class Task:
    """A URL with what to do with it; ``fetch``/``Fetcher.submit`` also take plain URL strings.

    Attributes:
        url: an http(s) URL.
        name: the file's path under the output folder (made safe; subfolders
            allowed), instead of a name derived from the URL.
        headers: extra request headers for this URL only.
        checksum: the expected ``"sha256:HEX"`` or ``"md5:HEX"``; a mismatch fails it.
        meta: anything; handed back unchanged as ``Result.meta`` (never sent to
            workers, never written to the manifest).
    """

    url: str
    name: str | None = None
    headers: Mapping[str, str] | None = None
    checksum: str | None = None
    meta: Any = None


class _Converter:
    """API items (URL strings or Tasks) → the engine's tasks, through the readers' own TaskMaker;
    ``meta`` stays on this side (it is never sent to workers)."""

    def __init__(self, naming: str) -> None:
        self._maker = TaskMaker(naming)
        self._index = 0

    def convert(self, item: str | Task) -> tuple[FetchTask | Result, Any]:
        if isinstance(item, str):
            public = Task(item)
        elif isinstance(item, Task):
            public = item
        else:
            raise TypeError(f"expected a URL string or fetcher.Task, not {type(item).__name__}")
        index, self._index = self._index, self._index + 1
        headers = tuple(public.headers.items()) if public.headers else None
        for name, value in headers or ():
            remember_header(name, value)  # a task's token is masked in messages, as --header's is
        line = Line(index + 1, public.url if isinstance(public.url, str) else repr(public.url), public.url,
                    public.name or None, public.checksum or None, headers=headers)
        return self._maker.make(line, index), public.meta


def fetch(urls: Iterable[str | Task | None], out: str | None = "downloads", *, backend: str = "thread",
          pool: int = 8, memory: bool = False, progress: bool = False, journal: bool | None = None,
          session_factory: SessionFactory | None = None, on_result: Callable[[Result], None] | None = None,
          retry_failed: bool = True, **settings: Any) -> Iterator[Result]:
    """Download ``urls`` concurrently and yield each Result as it finishes.

    Args:
        urls: URL strings or Tasks, any iterable, read lazily as workers free up.
            A generator may yield ``None`` for "nothing to fetch right now" (a
            crawl waiting for its own results): it is asked again after the
            next result, and the run ends when it has nothing while nothing is
            in flight.
        out: output folder; each file's path is ``result.path`` under it.
        backend: ``thread``, ``process``, ``gevent`` (needs a monkey-patched
            process) or ``multi`` (needs ``client="curl"``).
        pool: concurrent downloads (the process backend spreads them over
            ``processes`` workers, one per CPU by default).
        memory: bodies come back in ``result.content`` instead of files
            (capped by ``max_size``, else 100 MiB); no folder, journal or manifest.
        progress: draw a progress bar on stderr.
        journal: keep the folder's journal (skip what an earlier run finished,
            resume); default on when files are written, off with ``memory``.
        session_factory: a zero-argument callable returning the
            ``requests.Session`` each worker uses (auth, cookies, adapters); it
            must be picklable for the process backend.
        on_result: called with each Result, as well as yielding it.
        retry_failed: try again URLs an earlier run of this folder failed
            (the CLI's ``--no-retry-failed`` is ``retry_failed=False``).
        **settings: any other CLI option, by its Options name (``retries=5``,
            ``per_host=2``, ``max_size="10M"``, ``accept="image/*"``...).

    Each unique URL yields one Result; a repeated URL is fetched once.

    Raises:
        ConfigError: a bad option, an unknown backend, or a folder in use.
    """
    # Over 40 lines: the docstring documents every keyword; the body is five statements.
    options = api_options(out, backend, pool, memory, settings, session_factory, writes_files=not memory)
    spec = api_spec(options, progress, memory, journal, session_factory, retry_failed)
    return _stream(spec, urls, deduplicate=spec.folder is None, on_result=on_result)


def _stream(spec: RunSpec, urls: Iterable[str | Task | None], deduplicate: bool,
            on_result: Callable[[Result], None] | None) -> Iterator[Result]:
    converter = _Converter(spec.options.output.naming)
    metas: dict[str, Any] = {}
    seen: set[str] = set()

    def items() -> Iterator[Item]:
        for item in urls:
            if item is None:
                yield None
                continue
            work, meta = converter.convert(item)
            if deduplicate:  # the journal dedupes when there is one
                if work.url in seen:
                    continue
                seen.add(work.url)
            if meta is not None:
                metas[work.url] = meta
            yield work

    for result in run(spec, items()):
        meta = metas.pop(result.url, None)
        if meta is not None:
            result = replace(result, meta=meta)
        if on_result is not None:
            on_result(result)
        yield result


_END = object()


class Fetcher:
    """Downloads URLs as they are submitted, in the background, until closed.

    Use as a context manager; leaving the block waits for every submitted URL
    (or cancels them, if the block raised)::

        with Fetcher(out="downloads", pool=16) as f:
            future = f.submit("https://example.com/a.jpg")
            for result in f.results():   # as they complete, including URLs submitted meanwhile
                ...

    Takes the same keyword arguments as ``fetch``. ``submit`` returns a
    ``concurrent.futures.Future`` of the Result; submitting a URL that is still
    in flight shares its Result. ``results()`` keeps every Result until it has
    yielded it: if you use only futures or ``on_result``, pass
    ``keep_results=False``.
    """

    def __init__(self, out: str | None = "downloads", *, backend: str = "thread", pool: int = 8,
                 memory: bool = False, progress: bool = False, journal: bool | None = None,
                 session_factory: SessionFactory | None = None,
                 on_result: Callable[[Result], None] | None = None, keep_results: bool = True,
                 retry_failed: bool = True, **settings: Any) -> None:
        options = api_options(out, backend, pool, memory, settings, session_factory, writes_files=not memory)
        self._summary: Summary | None = None
        self._spec = api_spec(options, progress, memory, journal, session_factory, retry_failed, repeat=True,
                              on_summary=self._ended)
        self._converter = _Converter(options.output.naming)
        self._on_result = on_result
        self._keep = keep_results
        self._lock = threading.Condition()
        self._queue: deque[FetchTask | Result] = deque()
        self._waiting: dict[str, list[tuple[Future[Result], Any]]] = {}
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outstanding = 0
        self._shared = 0  # submissions of a URL already in flight: the summary's duplicates
        self._closed = False
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Fetcher:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.cancel()
        else:
            self.close()

    def start(self) -> None:
        """Start downloading (``submit`` and the context manager do it for you)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetcher-engine", daemon=True)
                self._thread.start()

    def close(self, wait: bool = True) -> Summary | None:
        """No more submissions; with ``wait``, block until every URL is done and return the Summary."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if wait and self._thread is not None:
            self._thread.join()
            if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
                raise self._error
        return self._summary

    def cancel(self) -> None:
        """Stop now: downloads in flight are abandoned, unfinished futures cancelled."""
        self._cancel.set()
        self.close(wait=True)

    @property
    def summary(self) -> Summary | None:
        """Counts of the run, once it has ended."""
        return self._summary

    def submit(self, item: str | Task) -> Future[Result]:
        """Queue a URL (or Task); return a Future of its Result.

        Raises:
            RuntimeError: after ``close()``.
            TypeError: ``item`` is neither a string nor a Task.
        """
        future: Future[Result] = Future()
        with self._lock:
            if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
                raise self._error  # the run could not start (a folder in use, say): say why, now
            if self._closed:
                raise RuntimeError("cannot submit to a closed Fetcher")
            work, meta = self._converter.convert(item)
            self._outstanding += 1
            waiters = self._waiting.get(work.url)
            if waiters is not None:  # in flight already: share its result, never download twice at once
                self._shared += 1
                waiters.append((future, meta))
            else:
                self._waiting[work.url] = [(future, meta)]
                self._queue.append(work)
                self._lock.notify_all()
        self.start()
        return future

    def map(self, items: Iterable[str | Task], *, ahead: int | None = None) -> Iterator[Result]:
        """Results in the order of ``items``, read at most ``ahead`` beyond the Result yielded last
        (default: 4 x the pool + ``durability.FLUSH_EVERY_N``, as ``AsyncFetcher.map``, which says why)."""
        submitted: deque[Future[Result]] = deque()
        limit = look_ahead(ahead, self._spec.options.transport.window)
        for item in items:
            submitted.append(self.submit(item))
            if len(submitted) >= limit:
                yield submitted.popleft().result()
        while submitted:
            yield submitted.popleft().result()

    def results(self) -> Iterator[Result]:
        """Results as they complete, until every URL submitted so far (or meanwhile) is done."""
        while True:
            with self._lock:
                if self._outstanding == 0 and self._done.empty():
                    return
            item = self._done.get()
            if item is _END:
                if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
                    raise self._error
                return
            yield item

    as_completed = results

    def _run(self) -> None:
        try:
            for result in run(self._spec, self._feed(), self._wait_for_more, self._cancel):
                self._resolve(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller in close()/results()
            if not self._cancel.is_set():
                with self._lock:
                    self._error = exc
        finally:
            if self._summary is not None:
                self._summary.duplicates += self._shared
            self._abandon()
            self._done.put(_END)

    def _ended(self, summary: Summary) -> None:
        self._summary = summary

    def _feed(self) -> Iterator[Item]:
        while True:
            with self._lock:
                if self._queue:
                    item: Item = self._queue.popleft()
                elif self._closed:
                    return
                else:
                    item = None
            yield item

    def _wait_for_more(self, timeout: float) -> bool:
        with self._lock:
            if not self._queue and not self._closed:
                self._lock.wait(timeout)
            return bool(self._queue) or not self._closed

    def _resolve(self, result: Result) -> None:
        with self._lock:
            waiters = self._waiting.pop(result.url, [])
            self._outstanding -= len(waiters)
        if not waiters:  # nobody asked for it by this URL (cannot happen; never drop a result)
            self._deliver(result)
        for future, meta in waiters:
            delivered = replace(result, meta=meta) if meta is not None else result
            self._deliver(delivered)
            future.set_result(delivered)

    def _deliver(self, result: Result) -> None:
        if self._on_result is not None:
            self._on_result(result)
        if self._keep:
            self._done.put(result)

    def _abandon(self) -> None:
        with self._lock:
            waiters = [w for ws in self._waiting.values() for w in ws]
            self._waiting.clear()
            self._outstanding = 0
        error = self._error if not isinstance(self._error, KeyboardInterrupt) else None
        for future, _ in waiters:
            # The run's own error, where there is one (future.result() raises it, not a bare
            # CancelledError); cancelled only when the caller cancelled.
            if error is not None and future.set_running_or_notify_cancel():
                future.set_exception(error)
            else:
                future.cancel()
