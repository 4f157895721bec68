"""The default path's start-up (issue 29): what a run of ``fetcher LIST`` never imports.

Interpreter start-up is paid once per run, but on the benchmark's small-files set it
was a quarter of curl's whole run (0.12 s of CPU). These modules were most of it and
are needed only by options the default run does not use; each test fails if one
comes back at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import NEEDS_PYCURL

# module -> what needs it (and loads it then)
LAZY = {
    "importlib.metadata": "nothing at run time (auto's reason string named pycurl's version)",
    "urllib.request": "a *_proxy variable (transports/environment.py) or --cookies",
    "http.cookiejar": "--cookies (transports/factory.py)",
    "http.client": "the requests client",
    "email.utils": "a Retry-After HTTP-date (download/headers.py)",
    "requests": "the requests client",
    "tarfile": "webdataset shards (run/shards.py)",
    "fetcher.run.shards": "webdataset shards or a parquet manifest",
}

SCRIPT = """
import json, sys
from fetcher.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


@NEEDS_PYCURL
def test_a_default_run_imports_nothing_it_does_not_use(server, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text(server.url("/files/a.bin?size=5000") + "\n")
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    done = subprocess.run([sys.executable, "-c", SCRIPT % (tuple(LAZY),), str(urls), "-o", str(tmp_path / "out"),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=60, check=False)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0, done.stderr
    assert (tmp_path / "out").exists()
    assert {module: LAZY[module] for module in outcome["loaded"]} == {}
