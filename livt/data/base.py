"""The data set classes: ``DatasetInfo`` and the ``LTDataset`` splits (in-memory arrays or image files)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from livt.images import load_image

Transform = Callable[[Image.Image], Any]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set: classes, image format and normalisation."""

    name: str
    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class LTDataset(Dataset):
    """A split of a data set: ``(transform(pil_image), target)`` items plus class statistics.

    ``source_dir`` is the folder its files were read from (None for generated images), so a run can
    say which copy of a data set it trained on.
    """

    def __init__(
        self,
        info: DatasetInfo,
        targets: Sequence[int],
        transform: Transform | None = None,
        *,
        source_dir: Path | None = None,
    ):
        self.info = info
        self.source_dir = source_dir
        self.classes = list(info.classes)
        self.targets = [int(t) for t in targets]
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        if len(counts) != len(self.classes):
            raise ValueError(f"{info.name}: targets go beyond the {len(self.classes)} classes")
        self.class_counts = [int(n) for n in counts]
        self.transform = transform

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.info.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.info.std

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def load(self, index: int) -> Image.Image:
        """The untransformed PIL image at ``index`` (mode "L" or "RGB")."""
        raise NotImplementedError


class ArrayDataset(LTDataset):
    """Images held in memory as uint8 ``(N, H, W)`` (1 channel) or ``(N, H, W, 3)`` arrays."""

    def __init__(
        self,
        info: DatasetInfo,
        images: np.ndarray,
        targets: Sequence[int],
        transform: Transform | None = None,
        *,
        source_dir: Path | None = None,
    ):
        expected_ndim = 3 if info.channels == 1 else 4
        shape_ok = images.ndim == expected_ndim and (info.channels == 1 or images.shape[-1] == info.channels)
        if images.dtype != np.uint8 or not shape_ok or len(images) != len(targets):
            raise ValueError(
                f"{info.name}: expected {len(targets)} uint8 images with {info.channels} channel(s), "
                f"got array {images.dtype} {images.shape}"
            )
        super().__init__(info, targets, transform, source_dir=source_dir)
        self.images = images

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class FileDataset(LTDataset):
    """Images read lazily from files; ``samples`` holds ``(path, target)`` so results can name files.

    Files are decoded by ``livt.images`` exactly as the server decodes uploads (EXIF orientation,
    alpha onto white, 16-bit rescaled), so evaluation and serving see the same pixels.
    """

    def __init__(
        self,
        info: DatasetInfo,
        samples: list[tuple[str, int]],
        transform: Transform | None = None,
        *,
        source_dir: Path | None = None,
    ):
        super().__init__(info, [t for _, t in samples], transform, source_dir=source_dir)
        self.samples = samples

    def load(self, index: int) -> Image.Image:
        return load_image(self.samples[index][0], self.info.channels)
