"""Shared decoding (livt.images): every odd file becomes the "L"/"RGB" image data sets and serving use."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from livt.images import (
    RESAMPLE,
    ImageDecodeError,
    ImageFormatError,
    ImagePixelLimitError,
    decode_image,
    load_image,
    resize_center_crop,
    to_model_mode,
)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_alpha_is_composited_on_white_not_dropped():
    # Fully transparent red must come out white; opaque red stays red.
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    out = load_image(_encode(rgba), 3)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (255, 0, 0)


def test_grey_alpha_and_palette_transparency():
    la = Image.new("LA", (3, 3), (0, 0))
    assert load_image(_encode(la), 1).getpixel((0, 0)) == 255
    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 0
    assert load_image(_encode(pal), 3).getpixel((0, 0)) == (10, 20, 30)


def test_sixteen_bit_is_rescaled_not_clipped():
    wide = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    decoded = decode_image(_encode(Image.fromarray(wide)))
    assert decoded.mode in ("I;16", "I")
    assert np.asarray(to_model_mode(decoded, 1)).ravel().tolist() == [0, 128, 255]


def test_cmyk_one_bit_and_grey_to_rgb():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert load_image(_encode(cmyk, "JPEG"), 3).mode == "RGB"
    assert load_image(_encode(Image.new("1", (2, 2), 1)), 1).getpixel((0, 0)) == 255
    assert load_image(_encode(Image.new("L", (2, 2), 77)), 3).getpixel((0, 0)) == (77, 77, 77)


def test_float_images_and_bad_channels_are_refused():
    with pytest.raises(ImageFormatError, match="floating-point"):
        to_model_mode(Image.new("F", (2, 2)), 1)
    with pytest.raises(ValueError, match="1 or 3"):
        to_model_mode(Image.new("L", (2, 2)), 2)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode_image(_encode(Image.new("RGB", (6, 2)), "JPEG", exif=exif)).size == (2, 6)


def test_paths_and_bytes_decode_alike_and_errors_name_the_file(tmp_path: Path):
    data = _encode(Image.new("RGBA", (5, 3), (9, 8, 7, 0)))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert np.array_equal(np.asarray(load_image(path, 3)), np.asarray(load_image(data, 3)))
    # Without an allowlist any Pillow format reads (data sets); with one, others are refused.
    ppm = _encode(Image.new("RGB", (4, 4)), "PPM")
    assert load_image(ppm, 3).size == (4, 4)
    with pytest.raises(ImageFormatError, match=r"accepted format \(PNG\)"):
        decode_image(ppm, formats=("PNG",))
    broken = tmp_path / "broken.png"
    broken.write_bytes(_encode(Image.new("RGB", (64, 64)))[:60])
    with pytest.raises(ImageDecodeError, match=r"broken\.png: corrupt or truncated PNG"):
        load_image(broken, 3)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageFormatError, match=r"text\.png: not an image"):
        load_image(tmp_path / "text.png", 3)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImagePixelLimitError, match="15 pixels, more than the limit of 14"):
        decode_image(path, max_pixels=14)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png", 3)


def test_file_datasets_decode_with_the_shared_code(tmp_path: Path):
    from livt.data import DatasetInfo, FileDataset

    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    files = {
        "rotated.jpg": _encode(Image.new("RGB", (6, 2), (0, 90, 0)), "JPEG", exif=exif),
        "alpha.png": _encode(rgba),
        "wide.png": _encode(Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))),
    }
    samples = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        samples.append((str(tmp_path / name), 0))
    info = DatasetInfo("files", ("a",), 3, 8, (0.5,) * 3, (0.5,) * 3)
    dataset = FileDataset(info, samples)
    rotated, alpha, wide = (dataset[i][0] for i in range(3))
    assert rotated.size == (2, 6) and rotated.mode == "RGB"
    assert alpha.getpixel((1, 1)) == (255, 255, 255)
    assert wide.getpixel((0, 0)) == (255, 255, 255)


def _full_resize_then_crop(img: Image.Image, resize: int, crop: int, resample) -> Image.Image:
    # torchvision's Resize(resize) + CenterCrop(crop), built the direct way (what training does).
    short, long = sorted(img.size)
    new = (resize, int(resize * long / short))
    img = img.resize(new if img.width <= img.height else new[::-1], resample)
    left, top = (round((s - crop) / 2.0) for s in img.size)
    return img.crop((left, top, left + crop, top + crop))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"])
@pytest.mark.parametrize("size", [(640, 480), (37, 23), (300, 20), (28, 28), (24, 250)])
def test_resize_center_crop_equals_the_full_resize_for_ordinary_images(interpolation, size):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8))
    resample = RESAMPLE[interpolation]
    ours = resize_center_crop(image, 32, 28, resample)
    assert np.array_equal(np.asarray(ours), np.asarray(_full_resize_then_crop(image, 32, 28, resample)))


def test_a_one_pixel_high_strip_is_cropped_without_building_its_resized_image():
    # A 1,000-byte PNG of 4,000,000 x 1 pixels: resized first it is 112,000,000 x 28 (3.1 GB). Run
    # under a 1 GB address-space limit, where building that image raises MemoryError.
    import subprocess
    import sys

    code = (
        "import resource; from PIL import Image; from livt.images import RESAMPLE, resize_center_crop\n"
        "strip = Image.new('L', (4_000_000, 1), 200)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "out = resize_center_crop(strip, 28, 28, RESAMPLE['bicubic'])\n"
        "assert out.size == (28, 28) and out.getpixel((14, 14)) == 200, out\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
