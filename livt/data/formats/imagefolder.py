"""Image folders: ``root/<split>/<class>/<image>``, classes named by the training folders, and what
their images are (channels, size, normalisation), inferred from a sample of them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from livt.data.formats import missing
from livt.images import ImageDecodeError, load_image

logger = logging.getLogger(__name__)

# Pillow modes of images stored with one (grey) channel, alpha or not, 8 or 16 bits.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
# Larger images are trained at ViT's standard input size rather than their own.
MAX_IMAGE_SIZE = 224
# Images looked at to infer a folder's format: enough for the mean / std to two or three decimals.
FORMAT_SAMPLE = 256


def scan_classes(root: str | Path, split: str = "train") -> list[str]:
    """Sorted class folder names of ``root/<split>``; those of train define every split's labels."""
    folder = Path(root) / split
    if not folder.is_dir():
        what = "image folder training split" if split == "train" else f"image folder split {split!r}"
        raise missing(what, [folder], f"expected root/{split}/<class>/<image>")
    classes, _ = find_classes(folder)
    return classes


def scan_split(root: str | Path, split: str, classes: list[str]) -> list[tuple[str, int]]:
    """``(path, label)`` samples of ``root/<split>``, files in sorted order within each class."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise missing(f"image folder split {split!r}", [folder], f"expected root/{split}/<class>/<image>")
    unknown = sorted(set(find_classes(folder)[0]) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown} are not among the training classes")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    # Every training class needs images; val/test may leave a class out.
    samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=split != "train")
    if not samples:
        raise missing(f"images in {folder}", [folder], f"supported extensions: {', '.join(IMG_EXTENSIONS)}")
    return samples


def infer_options(root: str | Path | None, options: dict[str, Any], split: str = "train") -> dict[str, Any]:
    """The format options (image_size, channels, mean, std) that ``options`` leaves unset (None), as
    the training images of ``root`` are (``infer_format``; a folder without ``train/`` is read from
    ``split``'s images); logged, since a run depends on them."""
    if root is None:
        raise ValueError("data set 'imagefolder' needs data_root (the folder its files are under)")
    unset = [k for k in ("image_size", "channels", "mean", "std") if options.get(k) is None]
    channels = options.get("channels")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"imagefolder channels must be 1 or 3, got {channels}")
    if not unset:
        return {}
    source = "train" if (Path(root) / "train").is_dir() else split
    classes = options.get("classes") or scan_classes(root, source)
    fmt = infer_format(
        [path for path, _ in scan_split(root, source, list(classes))],
        channels=channels,
        image_size=options.get("image_size"),
        stats="mean" in unset or "std" in unset,
    )
    found = {
        "image_size": fmt.image_size,
        "channels": fmt.channels,
        "mean": list(fmt.mean),
        "std": list(fmt.std),
    }
    chosen = {k: found[k] for k in unset}
    capped = f", capped at {MAX_IMAGE_SIZE}" if fmt.median_side > MAX_IMAGE_SIZE else ""
    logger.info(
        "imagefolder %s: %s, from %d %s images (median shorter side %d px%s)",
        root, ", ".join(f"{k} {v}" for k, v in chosen.items()), fmt.images, source, fmt.median_side, capped,
    )  # fmt: skip
    return chosen


@dataclass(frozen=True)
class FolderFormat:
    """What a folder's images are: the input a model should take and the normalisation to apply."""

    channels: int
    image_size: int  # the median shorter side, at most MAX_IMAGE_SIZE
    median_side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    images: int  # how many images the figures come from


def infer_format(
    paths: Sequence[str | Path],
    *,
    channels: int | None = None,
    image_size: int | None = None,
    stats: bool = True,
    sample: int = FORMAT_SAMPLE,
) -> FolderFormat:
    """Channels, size and per-channel mean / std of the images at ``paths`` (an even spread of ``sample``).

    Channels: 1 when every image looked at is stored grey (modes such as "L", "LA", "I;16"), else
    3. Size: their median shorter side, capped at ``MAX_IMAGE_SIZE``. Mean / std: over every pixel
    of those images decoded as training decodes them (``livt.images.load_image``), scaled to [0, 1],
    with a std of at least one grey level (a constant channel would otherwise divide by zero).
    ``channels`` / ``image_size`` given are kept; ``stats=False`` skips decoding (mean / std empty).
    """
    if not paths:
        raise ValueError("no images to infer a format from")
    picks = [
        paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, min(sample, len(paths))).round())
    ]
    modes, sides = [], []
    for path in picks:  # headers only
        try:
            with Image.open(path) as img:
                modes.append(img.mode)
                sides.append(min(img.size))
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"{path}: not a readable image ({exc})") from exc
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode in modes) else 3
    median_side = int(np.median(sides))
    if image_size is None:
        image_size = min(median_side, MAX_IMAGE_SIZE)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if stats:
        total = np.zeros(channels)
        squares = np.zeros(channels)
        pixels = 0
        for path in picks:
            arr = np.asarray(load_image(path, channels), dtype=np.float64).reshape(-1, channels) / 255.0
            total += arr.sum(axis=0)
            squares += np.square(arr).sum(axis=0)
            pixels += arr.shape[0]
        mu = total / pixels
        sigma = np.sqrt(np.maximum(squares / pixels - np.square(mu), 0.0))
        mean = tuple(round(float(m), 4) for m in mu)
        std = tuple(round(float(max(s, 1 / 255)), 4) for s in sigma)
    return FolderFormat(channels, image_size, median_side, mean, std, len(picks))
