"""Decode an image file and bring it to the model's pixel mode, with Pillow and numpy only.

Shared by the file-backed data sets (``livt.data``, so ``livt-train`` trains and evaluates on
these pixels) and serving (``livt.serving``, which must not import torch), so a served prediction
equals the evaluated one for the same file. Decoding applies the EXIF orientation (how a viewer
shows the photo), and every Pillow mode becomes "L" or "RGB": transparent pixels are composited
onto white (how a transparent image looks on a page) rather than exposing their hidden colour, a
palette's transparency likewise, and 16-bit greyscale is rescaled (65535 -> 255), not clipped.

Errors are ``ImageDecodeError`` subclasses (``ValueError``); serving maps them to HTTP statuses.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALPHA_BACKGROUND = (255, 255, 255)

# The resize filters by the names that timm, the configs and the artifact's ``preprocess`` block use:
# the one list of interpolations (training validates against it, serving resizes with it).
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
INTERPOLATIONS = tuple(RESAMPLE)

_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What Pillow raises for corrupt or truncated data, depending on the format's decoder.
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


class ImageDecodeError(ValueError):
    """Not a usable image: empty, corrupt or truncated data."""


class ImageFormatError(ImageDecodeError):
    """Not an image in an accepted format, or a pixel mode that cannot be converted."""


class ImagePixelLimitError(ImageDecodeError):
    """More pixels than allowed (or than Pillow's decompression-bomb limit)."""


def open_image(
    source: bytes | str | Path, *, formats: Sequence[str] | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Read only the header of ``source`` (file bytes or a path): a lazy image, no pixel decoded yet.

    ``formats`` restricts the Pillow formats tried (None: all). ``max_pixels`` refuses a larger
    image from its header. A missing file raises ``FileNotFoundError``. ``finish_decoding`` decodes it.
    """
    # Errors name the file; for uploaded bytes the caller says which upload it was.
    prefix = "" if isinstance(source, bytes) else f"{source}: "
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file: no image data")
        source = io.BytesIO(source)
    try:
        img = Image.open(source, formats=None if formats is None else list(formats))
    except UnidentifiedImageError as exc:
        accepted = (
            f"an accepted format ({', '.join(formats)})" if formats is not None else "a format Pillow reads"
        )
        raise ImageFormatError(f"{prefix}not an image in {accepted}") from exc
    except Image.DecompressionBombError as exc:
        raise ImagePixelLimitError(f"{prefix}{exc}") from exc
    pixels = img.width * img.height
    if max_pixels is not None and pixels > max_pixels:
        img.close()
        raise ImagePixelLimitError(
            f"{prefix}image is {img.width}x{img.height} = {pixels} pixels, more than the limit of {max_pixels}"
        )
    return img


def finish_decoding(img: Image.Image) -> Image.Image:
    """Decode an image from ``open_image`` into a fully loaded, upright image (and close its file)."""
    prefix = f"{img.filename}: " if getattr(img, "filename", "") else ""
    with img:
        try:
            img.load()
            # A new image (a copy when upright), so it outlives the file closed here.
            return ImageOps.exif_transpose(img)
        except Image.DecompressionBombError as exc:
            raise ImagePixelLimitError(f"{prefix}{exc}") from exc
        except _CORRUPT as exc:
            raise ImageDecodeError(f"{prefix}corrupt or truncated {img.format} image: {exc}") from exc


def decode_image(
    source: bytes | str | Path, *, formats: Sequence[str] | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Decode ``source`` (file bytes or a path) into a fully loaded, upright PIL image.

    ``formats`` and ``max_pixels`` as for ``open_image``: the cap applies before any pixel is decoded.
    """
    return finish_decoding(open_image(source, formats=formats, max_pixels=max_pixels))


def to_model_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to "L" (``channels == 1``) or "RGB" (``channels == 3``)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.rint(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8))
    elif img.mode == "F":
        raise ImageFormatError("32-bit floating-point images are not supported")
    if img.mode == "P" or img.mode in _ALPHA_MODES:
        # A palette may carry transparency too; RGBA makes both cases one.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    try:
        return img if img.mode == target else img.convert(target)
    except ValueError as exc:
        raise ImageFormatError(f"cannot convert pixel mode {img.mode!r} to {target!r}") from exc


def load_image(
    source: bytes | str | Path,
    channels: int,
    *,
    formats: Sequence[str] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """The "L"/"RGB" image the eval transform gets: what a data set and the server both feed it."""
    return to_model_mode(decode_image(source, formats=formats, max_pixels=max_pixels), channels)


# Past this many crops (and the source's own pixels) the resized image is not built (see below).
_FULL_RESIZE_CROPS = 16


def resize_center_crop(img: Image.Image, resize: int, crop: int, resample: Image.Resampling) -> Image.Image:
    """torchvision's ``Resize(resize)`` then ``CenterCrop(crop)``, computing only the pixels kept.

    ``Resize`` sets the shorter side to ``resize`` and the longer to ``int(resize * long / short)``;
    a 1,000,000 x 1 image would become 28,000,000 x 28 (2 GB) before a 28 x 28 crop. Pillow's
    ``resize(box=...)`` resamples just the source region the crop covers, with the same scale and
    the same filter taps (they are clipped to the whole source, not the box), so the pixels equal
    the full resize's crop while the work and memory are the crop's. Pillow takes the box in
    float32, so those pixels can differ from the full resize's by a few levels (a tap more or
    less where a filter edge falls on a pixel edge): the box is used only where the full resize
    would be larger than the source and than ``_FULL_RESIZE_CROPS`` crops, an image with a side
    far shorter than the model's input. Every other image gets the full resize, exactly as in
    training.
    """
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    left, top = _crop_offset(new_w, crop), _crop_offset(new_h, crop)
    # The crop's part inside the resized image; the rest is torchvision's zero padding.
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + crop, new_w), min(top + crop, new_h)
    if new_w * new_h <= max(width * height, _FULL_RESIZE_CROPS * crop * crop):
        x0, y0 = 0, 0
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), resample)
    else:
        sx, sy = width / new_w, height / new_h
        img = img.resize((x1 - x0, y1 - y0), resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    box = (left - x0, top - y0, left - x0 + crop, top - y0 + crop)
    # Pillow fills a box outside the image with zeros, which is torchvision's zero padding.
    return img if box == (0, 0, img.width, img.height) else img.crop(box)


def _crop_offset(size: int, crop: int) -> int:
    """torchvision's CenterCrop offset (round half to even), negative where it pads."""
    if crop > size:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)
