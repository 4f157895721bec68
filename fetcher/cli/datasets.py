"""The flags for building image datasets: input columns, image checks, resizing, shards, opt-outs.

Parsed here, checked in ``Options.create`` (dataset_options.py),
documented in README.md ("Building an image dataset"). Nothing heavy is imported.
"""

from __future__ import annotations

import argparse

from fetcher.cli.common import non_negative_int, positive_int


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset flags of ``fetcher``; every one defaults to today's plain download."""
    group = parser.add_argument_group("image datasets (pip install 'fetcher-dl[datasets]')")
    group.add_argument("--url-column", default="url", metavar="NAME",
                       help="the column of a CSV, TSV, JSONL or parquet input that holds the URL, in any case "
                            "(default: url)")
    group.add_argument("--caption-column", metavar="NAME",
                       help="with --output-format webdataset: the input column written as KEY.txt")
    group.add_argument("--verify-image", action="store_true",
                       help="decode every image with Pillow; a truncated or corrupt one fails (kind bad-image)")
    group.add_argument("--min-image-size", type=non_negative_int, default=0, metavar="PX",
                       help="fail an image whose smaller side is under PX pixels (kind image-too-small)")
    group.add_argument("--max-image-area", type=non_negative_int, default=0, metavar="PX",
                       help="fail an image of more than PX pixels, width x height (kind image-too-large)")
    group.add_argument("--max-aspect-ratio", type=float, default=0.0, metavar="R",
                       help="fail an image whose longer side is over R times its shorter (kind bad-aspect-ratio)")
    group.add_argument("--resize", type=non_negative_int, default=0, metavar="PX",
                       help="resize every image as --resize-mode says, and store it re-encoded")
    group.add_argument("--resize-mode", default="keep_ratio", metavar="MODE",
                       help="keep_ratio: the smaller side becomes PX (default); center_crop: then the middle "
                            "PX x PX; border: the larger side becomes PX, padded to a black square")
    group.add_argument("--encode-format", default="", metavar="FMT",
                       help="jpg, png or webp: the stored images' format (default: jpg when resizing, "
                            "else as downloaded)")
    group.add_argument("--encode-quality", type=positive_int, default=95, metavar="Q",
                       help="JPEG and WebP quality, 1-100 (default: 95)")
    group.add_argument("--ignore-opt-out", action="store_true",
                       help="fetch files whose server says X-Robots-Tag: noai or noimageai (refused by default, "
                            "kind opted-out)")
    group.add_argument("--output-format", default="files", metavar="FMT",
                       help="files (default) or webdataset: OUT/00000.tar, ... with KEY.EXT and KEY.json "
                            "per sample")
    group.add_argument("--shard-size", type=positive_int, default=10_000, metavar="N",
                       help="samples per webdataset shard (default: 10000)")
    group.add_argument("--manifest-format", default="jsonl", metavar="FMT",
                       help="jsonl (default) or parquet (OUT/manifest.parquet, written at the end)")


def dataset_options(args: argparse.Namespace) -> dict[str, object]:
    """The Options fields of the dataset flags, as parsed."""
    return {name: getattr(args, name) for name in (
        "url_column", "caption_column", "verify_image", "min_image_size", "max_image_area", "max_aspect_ratio",
        "resize", "resize_mode", "encode_format", "encode_quality", "ignore_opt_out", "output_format",
        "shard_size", "manifest_format")}
