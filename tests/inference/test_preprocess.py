"""Preprocessing equals the training-side eval transform (timm), and every odd input is handled."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from livt.inference.preprocess import (
    ImageError,
    ImageTooLargeError,
    PreprocessConfig,
    UnsupportedImageError,
    preprocess_bytes,
    transform,
)

from .conftest import image_bytes

BIG = 10**8


def _timm_eval(cfg: PreprocessConfig):
    from timm.data import create_transform

    return create_transform(
        input_size=(cfg.channels, cfg.img_size, cfg.img_size),
        is_training=False,
        interpolation=cfg.interpolation,
        mean=cfg.mean,
        std=cfg.std,
        crop_pct=cfg.crop_pct,
        crop_mode="center",
    )


@pytest.mark.parametrize(
    ("img_size", "crop_pct", "channels"),
    [(16, 0.875, 3), (28, 1.0, 1), (24, 0.9, 3), (20, 1.1, 3)],
)
@pytest.mark.parametrize(
    ("size", "fmt"),
    [((37, 23), "PNG"), ((23, 41), "JPEG"), ((64, 64), "PNG"), ((17, 99), "JPEG"), ((7, 5), "PNG")],
)
def test_matches_timm_eval_transform(img_size, crop_pct, channels, size, fmt):
    import math

    cfg = PreprocessConfig(
        img_size=img_size,
        channels=channels,
        mean=(0.485, 0.456, 0.406)[:channels] if channels == 3 else (0.286,),
        std=(0.229, 0.224, 0.225)[:channels] if channels == 3 else (0.353,),
        resize=math.floor(img_size / crop_pct),
        crop_pct=crop_pct,
    )
    data = image_bytes(size, fmt, seed=size[0])
    ours = preprocess_bytes(data, cfg, max_pixels=BIG)
    pil = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
    reference = _timm_eval(cfg)(pil).numpy()
    assert ours.shape == reference.shape == (channels, img_size, img_size)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


def _cfg(channels: int = 3) -> PreprocessConfig:
    return PreprocessConfig(
        img_size=8, channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels, resize=8
    )


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_crop_larger_than_image_pads_with_zeros_like_torchvision():
    cfg = PreprocessConfig(img_size=6, channels=1, mean=(0.0,), std=(1.0,), resize=4)
    out = transform(Image.new("L", (4, 4), 255), cfg)
    assert out[0, 0, 0] == 0 and out[0, 1, 1] == 1.0


@pytest.mark.parametrize(
    ("data", "error", "needle"),
    [
        (b"", ImageError, "empty"),
        (b"hello, this is not an image at all", UnsupportedImageError, "accepted format"),
        (_encode(Image.new("RGB", (4, 4)), "PPM"), UnsupportedImageError, "accepted format"),
        (_encode(Image.new("RGB", (64, 64)), "PNG")[:60], ImageError, "truncated"),
        (image_bytes((40, 40), "JPEG")[:900], ImageError, "truncated"),
    ],
    ids=["empty", "text", "ppm-not-allowed", "truncated-png", "truncated-jpeg"],
)
def test_bad_uploads_raise_named_errors(data, error, needle):
    with pytest.raises(error, match=needle):
        preprocess_bytes(data, _cfg(), max_pixels=BIG)


def test_pixel_cap_applies_before_decoding():
    data = _encode(Image.new("L", (100, 100)))
    with pytest.raises(ImageTooLargeError, match="10000 pixels"):
        preprocess_bytes(data, _cfg(1), max_pixels=9999)
    # A forged header claiming a huge image is refused without decoding its (absent) pixels.
    forged = bytearray(data)
    forged[16:24] = struct.pack(">II", 100_000, 100_000)
    forged[29:33] = struct.pack(">I", zlib.crc32(bytes(forged[12:29])))  # keep the IHDR checksum valid
    with pytest.raises(ImageTooLargeError):
        preprocess_bytes(bytes(forged), _cfg(1), max_pixels=10**8)


def test_config_from_dict_validates():
    with pytest.raises(ValueError, match="channels"):
        PreprocessConfig.from_dict({"img_size": 8, "channels": 2, "mean": [0, 0], "std": [1, 1], "resize": 8})
    with pytest.raises(KeyError, match="resize"):
        PreprocessConfig.from_dict({"img_size": 8, "channels": 1, "mean": [0], "std": [1]})
