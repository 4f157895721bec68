"""Decoded-image checks and resizing, done where the image was downloaded.

``fetch_one``'s finishing step calls ``finish_image`` on a complete, checked
body, before the file gets its final name; so with the process backend the
decoding and resizing are spread over every worker process, and a worker
holds at most one decoded image per download slot: never more images in
memory than the pool. Pillow is imported only here, and only when an image
option is on (it is the optional extra ``fetcher[datasets]``).

Failures are ``FetchFailure``s that are never retried (the bytes arrived whole;
fetching them again gives the same image):

- ``bad-image``: Pillow cannot identify or decode it (truncated, corrupt);
- ``image-too-small``: its smaller side is under ``--min-image-size``;
- ``image-too-large``: its area is over ``--max-image-area``, or over Pillow's
  decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89 megapixels);
- ``bad-aspect-ratio``: longer side / shorter side is over ``--max-aspect-ratio``.

Resizing has img2dataset's meanings: ``keep_ratio`` makes the smaller side
``--resize`` pixels; ``center_crop`` then crops the middle square;
``border`` makes the larger side ``--resize`` and pads to a black square.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import warnings
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from fetcher.options.dataset import ENCODE_FORMATS
from fetcher.errors import FetchFailure
from fetcher.models import ErrorKind

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from fetcher.options import Options



@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """What the image step found and, when it re-encoded, what is stored instead of the download.

    ``fields`` go into the manifest record; ``data`` and ``ext`` are the stored
    image and its extension (None: the downloaded bytes are stored as they are).
    """

    fields: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    ext: str | None = None


def finish_image(source: str | bytes, options: Options) -> ImageOutcome:
    """Open the image at path ``source`` (or in memory), check it, re-encode it if asked.

    Raises:
        FetchFailure: with one of the kinds in the module docstring (never retryable).
    """
    from PIL import Image, UnidentifiedImageError

    _bombs_are_errors(Image)
    stream: IO[bytes] | str = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(stream) as image:
            fields = {"width": image.width, "height": image.height, "image_format": image.format}
            _check_geometry(image.width, image.height, options)
            encode = options.dataset.resize > 0 or bool(options.dataset.encode_format)
            if not (options.dataset.verify_image or encode):
                return ImageOutcome(fields)  # the filters need only the header
            original = image.size  # the target size comes from these: a draft decode rounds its own scale
            if encode and options.dataset.resize and image.format == "JPEG":
                image.draft("RGB", _draft_size(image.size, options))  # decode at a reduced scale: less CPU, less memory
            image.load()  # decodes it all: a truncated or corrupt body fails here
            if not encode:
                return ImageOutcome(fields)
            data, ext = _encode(image, options, original)
    except FetchFailure:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FetchFailure(ErrorKind.IMAGE_TOO_LARGE, f"image over Pillow's decompression-bomb limit: {exc}") from None
    except UnidentifiedImageError:  # its message names the file it read: fetcher's own .part
        raise FetchFailure(ErrorKind.BAD_IMAGE, "cannot decode image: not an image format Pillow can read") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise FetchFailure(ErrorKind.BAD_IMAGE, f"cannot decode image: {type(exc).__name__}: {exc}") from None
    return ImageOutcome(fields, data, ext)


def _bombs_are_errors(image_module: Any) -> None:
    """A decompression-bomb *warning* becomes an error: a worker must not print, and the image is refused.

    Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises above. The
    filter is installed once per process, for that one warning category only.
    """
    global _BOMB_FILTER
    if not _BOMB_FILTER:
        warnings.filterwarnings("error", category=image_module.DecompressionBombWarning)
        _BOMB_FILTER = True


_BOMB_FILTER = False


def _check_geometry(width: int, height: int, options: Options) -> None:
    shorter, longer = min(width, height), max(width, height)
    if options.dataset.min_image_size and shorter < options.dataset.min_image_size:
        raise FetchFailure(ErrorKind.IMAGE_TOO_SMALL, f"image of {width}x{height} has a side under "
                           f"--min-image-size {options.dataset.min_image_size}")
    if options.dataset.max_image_area and width * height > options.dataset.max_image_area:
        raise FetchFailure(ErrorKind.IMAGE_TOO_LARGE, f"image of {width}x{height} is over "
                           f"--max-image-area {options.dataset.max_image_area}")
    if options.dataset.max_aspect_ratio and (shorter == 0 or longer / shorter > options.dataset.max_aspect_ratio):
        raise FetchFailure(ErrorKind.BAD_ASPECT_RATIO, f"image of {width}x{height} has an aspect ratio over "
                           f"--max-aspect-ratio {options.dataset.max_aspect_ratio:g}")


def target_size(width: int, height: int, size: int, mode: str) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is scaled to before any crop or border."""
    scale = size / (max(width, height) if mode == "border" else min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft_size(size: tuple[int, int], options: Options) -> tuple[int, int]:
    return target_size(size[0], size[1], options.dataset.resize, options.dataset.resize_mode)


def resize(image: PILImage.Image, size: int, mode: str, original: tuple[int, int] | None = None) -> PILImage.Image:
    """``image`` resized as ``--resize-mode`` says (see the module docstring).

    ``original``: the image's size before a JPEG draft decode scaled it down. The
    target size is computed from it: the draft rounds each side on its own (a
    139x226 JPEG drafts to 70x113), and scaling that would shift the aspect ratio.
    """
    from PIL import Image

    scaled = target_size(*(original or image.size), size, mode)
    # Box filtering (area averaging, OpenCV's INTER_AREA, what img2dataset downscales with) when
    # shrinking; Lanczos when enlarging (img2dataset's INTER_LANCZOS4).
    shrinking = scaled[0] < image.width
    image = image.resize(scaled, Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS)
    if mode == "center_crop":
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif mode == "border":
        canvas = Image.new(image.mode, (size, size))  # black, as img2dataset's default border
        canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        image = canvas
    return image


def _encode(image: PILImage.Image, options: Options, original: tuple[int, int]) -> tuple[bytes, str]:
    from PIL import Image

    ext = encoded_ext(options)
    fmt = ENCODE_FORMATS[ext]
    if image.mode not in ("RGB", "RGBA", "L"):
        alpha = "transparency" in image.info or image.mode in ("LA", "PA", "RGBa")
        image = image.convert("RGBA" if alpha else "RGB")
    if options.dataset.resize:
        image = resize(image, options.dataset.resize, options.dataset.resize_mode, original)
    if fmt == "JPEG" and image.mode == "RGBA":  # JPEG has no alpha: lay it on white, as img2dataset does
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    buffer = io.BytesIO()
    extra: dict[str, Any] = {} if fmt == "PNG" else {"quality": options.dataset.encode_quality}
    image.save(buffer, fmt, **extra)
    return buffer.getvalue(), ext


def sample_fits_in_memory(options: Options, content_length: str | None, encoded: bool) -> bool:
    """Whether a webdataset sample is downloaded into memory rather than a ``.part`` file.

    Only where this process writes the shards (``Options.shards_here``: the sample comes back in
    its Result), and only a body that is re-encoded (so never stored as downloaded), of a declared length
    (so the memory it takes is known before the first byte) of at most
    ``SAMPLE_IN_MEMORY_MAX``: pool x that at most, less than the decoding of one large
    image takes. Anything else, and a resumed download, goes through a ``.part`` as usual.
    """
    if not options.shards_here or encoded or not content_length:
        return False
    if not (options.dataset.resize or options.dataset.encode_format):
        return False
    try:
        return 0 <= int(content_length) <= SAMPLE_IN_MEMORY_MAX
    except ValueError:
        return False


SAMPLE_IN_MEMORY_MAX = 4 << 20


def encoded_ext(options: Options) -> str:
    """The extension of a re-encoded image: ``--encode-format``, else jpg (a resize with no format)."""
    return options.dataset.encode_format or "jpg"


def with_extension(name: str, ext: str) -> str:
    """``name`` with its extension replaced by ``ext`` (the stored image's format)."""
    return f"{posixpath.splitext(name)[0]}.{ext}"


def stored_fields(data: bytes) -> tuple[int, str]:
    """(size, sha256) of a re-encoded image."""
    return len(data), hashlib.sha256(data).hexdigest()
