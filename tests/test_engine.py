"""The engine reads its input lazily and keeps a bounded number of tasks in flight."""

from __future__ import annotations

import dataclasses
import os

from fetcher.run.runner import Report, RunSpec, run_to_end
from fetcher.models import FetchTask
from fetcher.files.naming import name_for_url
from fetcher.options import Options
from fetcher.run.progress import Progress


def test_input_is_pulled_as_downloads_finish_not_all_at_once(server, out):
    pulled = 0
    pulled_at_first_result: list[int] = []

    def tasks():
        nonlocal pulled
        for i in range(200):
            pulled += 1
            url = server.url(f"/files/{i}.bin?size=100")
            yield FetchTask(url=url, name=name_for_url(url), index=i)

    options = Options.create(out=out, pool=4, in_flight=10, per_host=0)
    report = Report(Progress(None, enabled=False), quiet=True,
                    on_result=lambda r: pulled_at_first_result.append(pulled))
    summary = run_to_end(RunSpec(options, report, folder=None), tasks())  # no journal: it reads in batches
    assert summary.ok == 200
    assert pulled_at_first_result[0] <= 11  # the window, plus the one being looked at
    assert server.stats.max_active <= 4


def test_a_run_is_a_spec_and_its_steps_are_objects(tmp_path) -> None:
    """plan() puts in the spec only the steps the options ask for; run() never branches on a flag."""
    from fetcher.run.runner import Folder, plan
    from fetcher.run.shards import ParquetManifest, Shards

    report = Report(Progress(None, enabled=False), quiet=True)
    plain = plan(Options.create(out=str(tmp_path)), report)
    assert plain.steps == () and plain.folder == Folder() and plain.manifest.endswith("manifest.jsonl")
    dataset = plan(Options.create(out=str(tmp_path), output_format="webdataset", manifest_format="parquet"), report)
    assert [type(step) for step in dataset.steps] == [Shards, ParquetManifest]
    in_memory = plan(Options.create(in_memory=True), report, folder=None, manifest=False)
    assert (in_memory.steps, in_memory.manifest) == ((), None)


def test_a_step_sees_every_item_and_result_and_closes_after_the_manifest(server, tmp_path) -> None:
    """A step of the spec's own: admitted items, recorded Results, then close(completed) once the
    manifest is on disk (the parquet manifest relies on that order)."""
    from fetcher.run.runner import plan

    seen: dict[str, object] = {"items": 0, "results": 0}
    out = str(tmp_path / "out")

    class Counting:
        def open(self):
            return self

        def admit(self, items):
            for item in items:
                seen["items"] += 1
                yield item

        def add(self, result):
            seen["results"] += 1
            return result

        def close(self, completed):
            seen["completed"] = completed
            seen["manifest"] = os.path.exists(os.path.join(out, "manifest.jsonl"))

    options = Options.create(out=out, pool=2)
    spec = plan(options, Report(Progress(None, enabled=False), quiet=True))
    spec = dataclasses.replace(spec, steps=(Counting(),))
    tasks = (FetchTask(url=server.url(f"/files/s{i}.bin?size=10"), name=f"s{i}.bin", index=i) for i in range(5))
    summary = run_to_end(spec, tasks)
    assert summary.ok == 5
    assert seen == {"items": 5, "results": 5, "completed": True, "manifest": True}
