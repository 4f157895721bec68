"""placeholder"""
from __future__ import annotations
from typing import TYPE_CHECKING
from fetcher.errors import ConfigError
if TYPE_CHECKING:
    from fetcher.options import Options

OUTPUT_FORMATS = ("files", "webdataset")
MANIFEST_FORMATS = ("jsonl", "parquet")


def check_options(options: Options) -> None:
    if options.output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"output-format must be one of {', '.join(OUTPUT_FORMATS)}, not {options.output_format!r}")
    if options.manifest_format not in MANIFEST_FORMATS:
        raise ConfigError(f"manifest-format must be one of {', '.join(MANIFEST_FORMATS)}, "
                          f"not {options.manifest_format!r}")
