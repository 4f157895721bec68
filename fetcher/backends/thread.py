"""The thread backend: ``pool`` daemon threads, each with its own Session.

Why not ``ThreadPoolExecutor``: its workers are joined at interpreter exit, so
one download stalled in a socket read would hold Ctrl-C hostage for a whole
read timeout. Daemon threads let a cancelled run return at once; fetch_one's
atomic writes mean an abandoned thread can never leave a partial file under a
final name.
"""

from __future__ import annotations

import queue
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

from fetcher.backends.base import Backend, run_task
from fetcher.models import FetchTask
from fetcher.transports.factory import make_session

if TYPE_CHECKING:
    import requests

CANCEL_GRACE_S = 2.0


class ThreadBackend(Backend):
    name = "thread"

    def _start(self) -> None:
        self._tasks: queue.SimpleQueue[FetchTask | None] = queue.SimpleQueue()
        self._cancel = threading.Event()
        factory = self.session_factory or partial(make_session, self.options, 1)
        # Sessions are made here, not in the threads, so a failing factory raises
        # to the caller instead of silently killing a worker.
        self._threads = [
            threading.Thread(target=self._work, args=(factory(),), name=f"fetcher-{i}", daemon=True)
            for i in range(self.options.transport.pool)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: FetchTask) -> None:
        self._tasks.put(task)

    def _work(self, session: requests.Session) -> None:
        try:
            while (task := self._tasks.get()) is not None:
                if self._cancel.is_set():
                    continue
                self._deliver(run_task(task, session, self.options, self._cancel))
        finally:
            session.close()

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            self._cancel.set()
        for _ in self._threads:
            self._tasks.put(None)
        deadline = time.monotonic() + CANCEL_GRACE_S if cancel else None
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
