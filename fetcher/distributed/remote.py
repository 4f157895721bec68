"""The remote backend: distributed mode as the engine sees it.

``submit`` makes a task leasable by workers, ``wait`` returns the results they
completed. The engine, scheduler, journal and collector run unchanged on the
server: retries, per-host caps, delays and Retry-After pauses are decided
there, once, for every worker.

``capacity`` is what keeps politeness honest: a task leaves the scheduler only
when some worker has a free slot for it, as it does for a local pool, so a
host paused by a 429 is not handed a queue of tasks that were released before
the pause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fetcher.backends.base import Backend, SessionFactory
from fetcher.models import FetchTask as Task
from fetcher.models import Result

if TYPE_CHECKING:
    from fetcher.distributed.broker import ServeBroker
    from fetcher.options import Options


class RemoteBackend(Backend):
    name = "remote"

    def __init__(self, options: Options, session_factory: SessionFactory | None = None, *,
                 coordinator: ServeBroker, on_event: Callable[[str], None] | None = None) -> None:
        super().__init__(options, session_factory)
        self.coordinator = coordinator
        self._on_event = on_event
        self._outstanding = 0  # submitted, not yet returned by wait(): the engine's in-flight count

    def _start(self) -> None:
        pass  # the broker is opened by serve() before the run, so workers can connect early

    def submit(self, task: Task) -> None:
        self._outstanding += 1
        self.coordinator.offer(task)

    def wait(self, timeout: float | None) -> list[Result]:
        results = self.coordinator.collect(timeout)
        self._outstanding -= len(results)
        if self._on_event is not None:
            for line in self.coordinator.take_events():
                self._on_event(line)
        return results

    def capacity(self, window: int) -> int:
        return self._outstanding + self.coordinator.room()

    def shutdown(self, cancel: bool = False) -> None:
        self.coordinator.finish(interrupted=cancel)
