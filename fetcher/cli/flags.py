"""The flags of ``fetcher``, ``fetcher serve`` and ``fetcher work`` that are options, from the one table.

``add_flags`` declares a section of a command's flags as options/table.py says
(names, help, argparse type, default, --help group); ``flag_values`` reads them
back, by keyword, for ``Options.create``. Nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
from typing import Any

from fetcher.options.table import TABLE, Spec


def _specs(command: str, section: str, only: tuple[str, ...] | None = None) -> list[Spec]:
    return [spec for spec in TABLE if spec.flag is not None and command in spec.flag.commands
            and spec.flag.section == section and (only is None or spec.dest in only)]


def add_flags(parser: argparse.ArgumentParser, command: str, section: str,
              only: tuple[str, ...] | None = None) -> None:
    """Add ``command``'s flags of ``section`` (table.RUN, RULES, NAMING, DATASET) to ``parser``."""
    groups: dict[str, Any] = {}
    for spec in _specs(command, section, only):
        flag = spec.flag
        assert flag is not None
        settings: dict[str, Any] = {"help": flag.help, "default": flag.default, **flag.per_command.get(command, {})}
        if "{backends}" in settings["help"]:
            from fetcher.backends import BACKENDS

            settings["help"] = settings["help"].replace("{backends}", ", ".join(BACKENDS))
        for key in ("metavar", "type", "action"):
            if getattr(flag, key) is not None:
                settings[key] = getattr(flag, key)
        where: Any = parser
        if flag.group:
            where = groups.get(flag.group) or groups.setdefault(flag.group, parser.add_argument_group(flag.group))
        where.add_argument(*flag.names, dest=spec.dest, **settings)


def flag_values(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The options ``command``'s flags set, by keyword, as ``Options.create`` takes them."""
    values = {}
    for spec in TABLE:
        if spec.flag is not None and command in spec.flag.commands and hasattr(args, spec.dest):
            value = getattr(args, spec.dest)
            values[spec.dest] = spec.flag.from_text(value) if spec.flag.from_text is not None else value
    return values
