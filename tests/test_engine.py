"""The engine reads its input lazily and keeps a bounded number of tasks in flight."""

from __future__ import annotations

from fetcher.run.job import Job
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
    job = Job(options, Progress(None, enabled=False), journal=False, quiet=True,  # the journal reads in batches
              on_result=lambda r: pulled_at_first_result.append(pulled))
    for _ in job.results(tasks()):
        pass
    summary = job.summary
    assert summary is not None
    assert summary.ok == 200
    assert pulled_at_first_result[0] <= 11  # the window, plus the one being looked at
    assert server.stats.max_active <= 4
