"""What every front end of the Python API shares (``fetch``, ``Fetcher``, and any other): the one
check of its keywords and what can fail before a run, and the run it makes.

Kept out of api.py so that module stays the public surface, and so that a new front end (an
asyncio one, say) builds its options and its run exactly as the others do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fetcher.backends import backend_class
from fetcher.download.durability import FLUSH_EVERY_N
from fetcher.errors import ConfigError
from fetcher.options import Options, prepare_run
from fetcher.run.outdir import check_output
from fetcher.run.progress import Progress
from fetcher.run.runner import Folder, Report, RunSpec, Workers, plan

if TYPE_CHECKING:
    from fetcher.backends.base import SessionFactory
    from fetcher.run.collector import Summary


def api_options(out: str | None, backend: str, pool: int, memory: bool, settings: dict[str, Any],
                session_factory: SessionFactory | None, writes_files: bool) -> Options:
    """The run's Options, every check that can fail before a run made now (ConfigError).

    ``Options.create`` is the one check of the keywords (options/table.py declares them).
    """
    options, _ = prepare_run(Options.create(**{"out": out or "downloads", "backend": backend, "pool": pool,
                                               "in_memory": memory, **settings}))
    if session_factory is not None and options.transport.client != "requests":
        raise ConfigError(f"session_factory builds requests Sessions, so it cannot be combined with "
                          f"client={options.transport.client!r}; drop one of them")
    # An unknown backend, or one that cannot run here (gevent unpatched), fails here, not in the run.
    backend_class(options.transport.backend, options.transport.client).check(options, session_factory)
    if writes_files:
        check_output(options.output.out, options.output.manifest_path)
    return options


def api_spec(options: Options, progress: bool, memory: bool, journal: bool | None,
             session_factory: SessionFactory | None, retry_failed: bool, repeat: bool = False,
             on_summary: Callable[[Summary], None] | None = None) -> RunSpec:
    """The API's run: quiet, the journal unless in memory (or ``journal=False``), a manifest unless in memory."""
    keep_journal = (not memory) if journal is None else journal and not memory
    report = Report(Progress(None, enabled=progress), quiet=True, on_summary=on_summary)
    folder = Folder(retry_failed, repeat=repeat) if keep_journal else None
    return plan(options, report, folder, manifest=not memory, workers=Workers(session_factory))


def look_ahead(ahead: int | None, window: int) -> int:
    """How many items ``map`` reads beyond the Result it handed back last.

    The default is 4 x the pool plus the most files one flush holds back
    (``FLUSH_EVERY_N``): a finished file's Result waits for its batch to reach the
    disk, and a smaller look-ahead would leave the pool idle meanwhile.

    Raises:
        ConfigError: ``ahead`` below 1 (0 used to mean the default without a word).
    """
    if ahead is None:
        return 4 * window + FLUSH_EVERY_N
    if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 1:
        raise ConfigError(f"ahead must be a whole number of at least 1, not {ahead!r}")
    return ahead
