"""Options declared once (issue 25): the table, the parts, the keywords, the flags and the worker form agree."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fetcher import redact
from fetcher.cli.distributed import _serve_parser, _work_parser
from fetcher.cli.main import build_parser
from fetcher.errors import ConfigError
from fetcher.options import Options, prepare_run
from fetcher.options.parts import PARTS
from fetcher.options.table import KEYWORDS, TABLE

# Flags of a command that are not options of a run: what to read, how loud, and the broker's own.
COMMAND_ONLY = {"help", "version", "input", "server", "quiet", "verbose", "log", "retry_failed", "bind", "broker",
                "authkey_file", "queue", "redis_password_file", "lease_timeout", "prefetch", "rpc_timeout",
                "give_up_after"}


def test_every_field_of_every_part_is_declared_once_and_nothing_else_is() -> None:
    fields = {(part, f.name) for part, cls in PARTS.items() for f in dataclasses.fields(cls)}
    declared = [(spec.part, spec.dest) for spec in TABLE if spec.part]
    assert len(declared) == len(set(declared))
    assert set(declared) == fields
    assert {f.name for f in dataclasses.fields(Options)} == set(PARTS) | {"engine_flushes", "shards_here"}


@pytest.mark.parametrize("command, parser", [("fetcher", build_parser), ("serve", _serve_parser),
                                             ("work", _work_parser)])
def test_every_flag_is_an_option_of_the_table_or_of_the_command(command, parser) -> None:
    dests = {action.dest for action in parser()._actions}
    assert dests - KEYWORDS <= COMMAND_ONLY
    assert dests & KEYWORDS == {spec.dest for spec in TABLE if spec.flag and command in spec.flag.commands}


def test_the_keywords_are_the_tables_and_run_state_is_not_one() -> None:
    for hidden in ("auto", "cookies_text", "engine_flushes"):
        with pytest.raises(ConfigError, match=f"unknown option: {hidden}"):
            Options.create(**{hidden: "x"})
    with pytest.raises(ConfigError, match="unknown options: nope, per_hots"):
        Options.create(per_hots=2, nope=1)
    assert {"timeout", "per_host", "in_memory", "chunk_size", "headers"} <= KEYWORDS


def test_create_probes_nothing_and_prepare_run_resolves_auto() -> None:
    options = Options.create(backend="auto", client="auto")
    assert (options.transport.backend, options.transport.client) == ("auto", "auto")
    resolved, why = prepare_run(options)
    assert "auto" not in (resolved.transport.backend, resolved.transport.client)
    assert why.startswith("auto: --backend ")


def test_prepare_run_checks_what_auto_chose_against_the_other_options() -> None:
    options = Options.create(backend="auto", client="requests", processes=2)  # fine until auto has chosen
    try:
        resolved, _ = prepare_run(options)
    except ConfigError as exc:
        assert "processes applies to the process backend only" in str(exc)
    else:
        assert resolved.transport.backend == "process"  # a machine of several CPUs


def test_the_worker_form_holds_the_rules_and_comes_back_checked(tmp_path) -> None:
    server = Options.create(out=str(tmp_path / "srv"), pool=64, retries=7, per_host=2, accept="image/*",
                            headers=["Authorization: Bearer F0RM-TOKEN"], max_size="1M", timeout="3,9")
    form = json.loads(json.dumps(server.worker_form()))  # as the Redis broker carries it
    assert not {"out", "manifest", "backend", "pool", "processes", "in_flight", "input_format"} & set(form)
    worker = Options.from_worker_form({**form, "from_a_newer_version": 1}, out=str(tmp_path / "w"), pool=3)
    assert (worker.rules, worker.politeness) == (server.rules, server.politeness)
    assert worker.transport.pool == 3 and worker.output.out == str(tmp_path / "w")
    with pytest.raises(ConfigError, match="retries must be 0 or more"):
        Options.from_worker_form({**form, "retries": -1})


def test_replace_finds_each_options_part() -> None:
    options = Options.create().replace(pool=3, per_host=1, naming="hash")
    assert (options.transport.pool, options.politeness.per_host, options.output.naming) == (3, 1, "hash")
    assert options.rules == Options.create().rules


def test_creating_options_has_no_process_wide_effect() -> None:
    Options.create(headers=["X-Api-Key: cre4te-only"])
    assert "cre4te-only" in redact.mask("cre4te-only")
