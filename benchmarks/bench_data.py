"""The datasets: deterministic file sizes from a seeded RNG, written under one web root.

Every file name is unique across all datasets (``s00001.bin``, ``L00001.bin``,
``m00001.bin``), so a download is matched to its source by base name whatever
folder layout a tool uses.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

KIB, MIB = 1024, 1024 * 1024
SEED = 8  # issue 8
BLOCK = 2 * MIB  # one random block; files are slices or repeats of it


@dataclass(frozen=True)
class DatasetSpec:
    """How to draw a dataset: ``count`` files of sizes in [low, high]."""

    name: str
    prefix: str
    count: int
    low: int
    high: int
    distribution: str  # "uniform", "log-uniform" or "fixed" (always ``high``)

    def describe(self) -> str:
        span = (_human(self.high) if self.distribution == "fixed"
                else f"{_human(self.low)}–{_human(self.high)} {self.distribution}")
        return f"{self.count:,} × {span}"


FULL_SPECS = (
    DatasetSpec("small", "s", 5000, 4 * KIB, 64 * KIB, "uniform"),
    DatasetSpec("large", "L", 8, 64 * MIB, 64 * MIB, "fixed"),
    # Like the images of a web page: mostly thumbnails, a tail of photos.
    DatasetSpec("mixed", "m", 2000, 2 * KIB, 2 * MIB, "log-uniform"),
)
QUICK_SPECS = (
    DatasetSpec("small", "s", 1000, 4 * KIB, 64 * KIB, "uniform"),
    DatasetSpec("large", "L", 2, 64 * MIB, 64 * MIB, "fixed"),  # same file size: RSS comparable
    DatasetSpec("mixed", "m", 400, 2 * KIB, 2 * MIB, "log-uniform"),
)


@dataclass(frozen=True)
class Dataset:
    """A dataset on disk and the lists every tool reads."""

    spec: DatasetSpec
    files: dict[str, int]  # base name → size in bytes
    url_list: str  # one URL a line (fetcher, wget2, aria2c)
    curl_config: str  # url/output pairs for ``curl --config``, outputs relative to the cwd

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def _human(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def draw_sizes(spec: DatasetSpec, seed: int = SEED) -> list[int]:
    """The sizes of a dataset: the same on every machine and every run."""
    rng = random.Random(f"{seed}:{spec.name}")  # str seeds hash deterministically (SHA-512)
    if spec.distribution == "fixed":
        return [spec.high] * spec.count
    if spec.distribution == "uniform":
        return [rng.randint(spec.low, spec.high) for _ in range(spec.count)]
    low, high = math.log(spec.low), math.log(spec.high)
    return [int(math.exp(rng.uniform(low, high))) for _ in range(spec.count)]


def _write_file(path: str, size: int, block: bytes, start: int) -> None:
    view = memoryview(block)
    with open(path, "wb") as handle:
        if size <= len(block) - start:
            handle.write(view[start:start + size])
            return
        left = size
        while left > 0:  # bounded: each pass writes min(left, BLOCK) > 0 bytes
            step = min(left, len(block))
            handle.write(view[:step])
            left -= step


def build_dataset(spec: DatasetSpec, web_root: str, lists_dir: str, base_url: str) -> Dataset:
    """Write the files under ``web_root/NAME/`` and the URL lists under ``lists_dir``."""
    folder = os.path.join(web_root, spec.name)
    os.makedirs(folder, exist_ok=True)
    block = random.Random(f"{SEED}:block").randbytes(BLOCK)
    files: dict[str, int] = {}
    for i, size in enumerate(draw_sizes(spec), start=1):
        name = f"{spec.prefix}{i:05d}.bin"
        # Different offsets make neighbouring files differ; the content itself is irrelevant.
        _write_file(os.path.join(folder, name), size, block, (i * 4099) % (BLOCK // 2))
        files[name] = size
    url_list = os.path.join(lists_dir, f"{spec.name}.txt")
    curl_config = os.path.join(lists_dir, f"{spec.name}.curl")
    with open(url_list, "w", encoding="ascii") as urls, open(curl_config, "w", encoding="ascii") as cfg:
        for name in files:
            url = f"{base_url}/{spec.name}/{name}"
            urls.write(url + "\n")
            cfg.write(f'url = "{url}"\noutput = "{name}"\n')
    return Dataset(spec, files, url_list, curl_config)
