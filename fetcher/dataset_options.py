"""The image-dataset options (issue 16), checked once, beside ``options.py``.

What the flags may say; the work itself is in ``download/images.py`` (checks
and resizing, in the worker), ``download/optout.py``, ``sources/parquet.py`` and
``run/shards.py`` (webdataset output, in the coordinating process).
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


def wants_images(options: Options) -> bool:
    """Whether any image option is on, or webdataset output (then every body goes through ``download.images``).

    A webdataset sample is an image whose width and height its row records (img2dataset's layout),
    so its header is read even when nothing else is asked: a body that is no image fails (bad-image).
    """
    return bool(options.output_format == "webdataset" or options.verify_image or options.min_image_size or options.max_image_area
                or options.max_aspect_ratio or options.resize or options.encode_format)


def check(options: Options) -> None:
    """Raise ConfigError naming the first bad dataset option."""
    _check_images(options)
    _check_output(options)


def adjust(options: Options) -> Options:
    """Webdataset output stages every image as ``staging/SHA1.EXT`` (see ``run/shards.py``)."""
    return replace(options, naming=STAGE_NAMING) if options.output_format == "webdataset" else options


def _check_images(options: Options) -> None:
    if options.resize_mode not in RESIZE_MODES:
        raise ConfigError(f"resize-mode must be one of {', '.join(RESIZE_MODES)}, not {options.resize_mode!r}")
    if options.encode_format and options.encode_format not in ENCODE_FORMATS:
        raise ConfigError(f"encode-format must be one of {', '.join(ENCODE_FORMATS)}, "
                          f"not {options.encode_format!r}")
    if not 1 <= options.encode_quality <= 100:
        raise ConfigError(f"encode-quality must be 1 to 100, not {options.encode_quality!r}")
    for name in ("min_image_size", "max_image_area", "max_aspect_ratio", "resize"):
        if getattr(options, name) < 0:
            raise ConfigError(f"{name.replace('_', '-')} must be 0 or more, not {getattr(options, name)!r}")
    if options.max_aspect_ratio and options.max_aspect_ratio < 1:
        raise ConfigError(f"max-aspect-ratio is longer side / shorter side: at least 1, "
                          f"not {options.max_aspect_ratio!r}")
    if wants_images(options) and importlib.util.find_spec("PIL") is None:
        raise ConfigError(f"image options need Pillow, which is not installed: {INSTALL_HINT}")


def _check_output(options: Options) -> None:
    if options.output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"output-format must be one of {', '.join(OUTPUT_FORMATS)}, not {options.output_format!r}")
    if options.manifest_format not in MANIFEST_FORMATS:
        raise ConfigError(f"manifest-format must be one of {', '.join(MANIFEST_FORMATS)}, "
                          f"not {options.manifest_format!r}")
    if options.shard_size < 1:
        raise ConfigError(f"shard-size must be at least 1, not {options.shard_size!r}")
    if options.caption_column is not None and options.output_format != "webdataset":
        raise ConfigError("--caption-column applies to webdataset output (--output-format webdataset); "
                          "with files, every column is in the manifest's input")
    if options.output_format == "webdataset":
        if options.in_memory:
            raise ConfigError("webdataset output writes shards: it cannot be combined with in-memory fetching")
        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError(f"webdataset output writes a parquet per shard, and pyarrow is not installed: "
                              f"{INSTALL_HINT}")
        if options.naming not in ("url", STAGE_NAMING):
            raise ConfigError("--naming does not apply to webdataset output: samples are named by their key")
