"""The image-dataset options (issue 16): what they may be together, and where webdataset stages files.

Their flags and single-value checks are in table.py; the work itself is in
``download/images.py`` (checks and resizing, in the worker), ``download/optout.py``,
``sources/parquet.py`` and ``run/shards.py`` (webdataset output, in the coordinating process).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import TYPE_CHECKING

from fetcher.errors import ConfigError

if TYPE_CHECKING:
    from fetcher.options import Options

RESIZE_MODES = ("keep_ratio", "center_crop", "border")
ENCODE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}  # --encode-format -> Pillow's format name
OUTPUT_FORMATS = ("files", "webdataset")
MANIFEST_FORMATS = ("jsonl", "parquet")
STAGE_FOLDER = "staging"
STAGE_NAMING = STAGE_FOLDER + "/{sha1}.{ext}"  # where webdataset samples wait for their shard
INSTALL_HINT = "pip install 'fetcher-dl[datasets]' (pyarrow and Pillow; '.[datasets]' in a checkout)"


def check_together(options: Options) -> None:
    """Raise ConfigError naming the first dataset option that does not fit the others."""
    dataset = options.dataset
    if options.source.caption_column is not None and dataset.output_format != "webdataset":
        raise ConfigError("--caption-column applies to webdataset output (--output-format webdataset); "
                          "with files, every column is in the manifest's input")
    if dataset.output_format == "webdataset":
        if options.output.in_memory:
            raise ConfigError("webdataset output writes shards: it cannot be combined with in-memory fetching")
        if options.output.naming not in ("url", STAGE_NAMING):
            raise ConfigError("--naming does not apply to webdataset output: samples are named by their key")


def check_machine(options: Options) -> None:
    """Webdataset output needs pyarrow here, image options Pillow."""
    if options.dataset.output_format == "webdataset" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(f"webdataset output writes a parquet per shard, and pyarrow is not installed: "
                          f"{INSTALL_HINT}")
    if options.dataset.wants_images and importlib.util.find_spec("PIL") is None:
        raise ConfigError(f"image options need Pillow, which is not installed: {INSTALL_HINT}")


def adjust(options: Options) -> Options:
    """Webdataset output stages every image as ``staging/SHA1.EXT`` (see ``run/shards.py``)."""
    if options.dataset.output_format != "webdataset":
        return options
    return replace(options, output=replace(options.output, naming=STAGE_NAMING))
