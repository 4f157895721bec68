"""The commands: ``fetcher``, ``fetcher status``, ``fetcher serve``, ``fetcher work``.

Its one job: flags → options → a run, and the exit status; the only layer,
with the collector, that prints. It may import every subpackage below it; nothing
imports it. Nothing heavy is imported before the flags are parsed, so the gevent
backend can monkey-patch first.
"""

from fetcher.cli.main import main

__all__ = ["main"]
