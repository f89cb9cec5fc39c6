"""Decode an uploaded image and apply the evaluation transform, with Pillow and numpy only.

The steps reproduce the training side's eval transform (timm ``transforms_imagenet_eval`` with crop
mode "center": torchvision ``Resize(resize)`` -> ``CenterCrop(img_size)`` -> ``ToTensor`` ->
``Normalize``) operation for operation, so a served prediction equals an evaluated one:

- Resize: torchvision's ``Resize(int)`` on a PIL image sets the shorter side to ``resize`` and the
  longer to ``int(resize * long / short)`` (truncation), then calls ``PIL.Image.resize(size,
  resample)`` with Pillow's defaults (``reducing_gap=None``). We call the same.
- CenterCrop: offsets ``int(round((size - crop) / 2))`` (Python's round-half-even), and zero padding
  split ``(d // 2, (d + 1) // 2)`` when the crop is larger than the image.
- ToTensor divides uint8 by 255 in float32; Normalize subtracts the mean and divides by the std in
  float32.

Decoding and mode conversion are ``livt.images``, the same code the file-backed data sets use
(EXIF orientation, alpha onto white, 16-bit rescaled); this module adds what is HTTP-specific: only
the formats in ``ALLOWED_FORMATS``, the pixel cap, and errors that carry their HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from livt import images
from livt.images import RESAMPLE

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000  # the largest image (width * height) the server and Predictor accept


class ImageError(ValueError):
    """An upload that is not a usable image; ``status_code`` is the HTTP answer."""

    status_code = 400


class UnsupportedImageError(ImageError):
    """Not an image in an accepted format, or a pixel mode we cannot convert."""

    status_code = 415


class ImageTooLargeError(ImageError):
    """More pixels than the service accepts (a decompression bomb, or just too big)."""

    status_code = 413


@dataclass(frozen=True)
class PreprocessConfig:
    """The artifact's ``preprocess`` block (see docs/architecture.md)."""

    img_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"preprocess.channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"preprocess.mean/std need {self.channels} values, got {len(self.mean)}/{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"preprocess.std must be positive, got {list(self.std)}")
        if self.img_size < 1 or self.resize < 1:
            raise ValueError(
                f"preprocess.img_size/resize must be positive, got {self.img_size}/{self.resize}"
            )
        if self.interpolation not in RESAMPLE:
            raise ValueError(
                f"preprocess.interpolation {self.interpolation!r} is not one of {sorted(RESAMPLE)}"
            )

    @classmethod
    def from_dict(cls, block: Mapping) -> PreprocessConfig:
        """Build from the metadata block; a missing key raises ``KeyError`` naming it."""
        return cls(
            img_size=int(block["img_size"]),
            channels=int(block["channels"]),
            mean=tuple(float(v) for v in block["mean"]),
            std=tuple(float(v) for v in block["std"]),
            resize=int(block["resize"]),
            crop_pct=float(block.get("crop_pct", 1.0)),
            interpolation=str(block.get("interpolation", "bicubic")),
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one preprocessed image."""
        return (self.channels, self.img_size, self.img_size)

    def input_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the least and greatest model input a pixel can give (black and white), ``[C, 1, 1]``."""
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (0 - mean) / std, (1 - mean) / std


def transform(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """Resize, center-crop, scale and normalise an "L"/"RGB" image into float32 ``[C, H, W]``."""
    img = images.resize_center_crop(img, cfg.resize, cfg.img_size, RESAMPLE[cfg.interpolation])

    arr = np.asarray(img, dtype=np.float32) / np.float32(255)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean = np.asarray(cfg.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((arr - mean) / std)


def open_upload(data: bytes, *, max_pixels: int) -> Image.Image:
    """The header of one uploaded file, checked against the formats and ``max_pixels``; nothing decoded."""
    with _http_errors():
        return images.open_image(data, formats=ALLOWED_FORMATS, max_pixels=max_pixels)


def preprocess_image(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """Decode an image from ``open_upload`` and return the model input ``[C, H, W]`` for it."""
    with _http_errors():
        return transform(images.to_model_mode(images.finish_decoding(img), cfg.channels), cfg)


def preprocess_bytes(data: bytes, cfg: PreprocessConfig, *, max_pixels: int) -> np.ndarray:
    """Decode one uploaded file and return the model input ``[C, H, W]`` for it."""
    return preprocess_image(open_upload(data, max_pixels=max_pixels), cfg)


@contextmanager
def _http_errors() -> Iterator[None]:
    try:
        yield
    except images.ImagePixelLimitError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except images.ImageFormatError as exc:
        raise UnsupportedImageError(str(exc)) from exc
    except images.ImageDecodeError as exc:
        raise ImageError(str(exc)) from exc
