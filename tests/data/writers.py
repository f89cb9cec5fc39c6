"""Writers of tiny data sets in their real on-disk formats, shared by the data tests."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from livt.data.formats import idx


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write a uint8 array as an IDX file (big-endian int32 dims after the magic)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_fashion_mnist(folder: Path, per_class: int = 30, gz: bool = True) -> dict[str, np.ndarray]:
    """A tiny Fashion-MNIST in the four IDX files; image ``i`` has ``i`` encoded in its first pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", per_class), ("test", 3)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n)
        images = np.zeros((labels.size, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(labels.size) % 256
        images[:, 0, 1] = np.arange(labels.size) // 256
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    for key, name in idx.FASHION_MNIST_FILES.items():
        write_idx(folder / name, arrays[key], gz=gz)
    return arrays


def write_cifar(
    root: Path, num_classes: int, per_class: int, n_batches: int, test_per_class: int = 2
) -> Path:
    """A tiny CIFAR-10 (``num_classes=10``) or CIFAR-100 release in the python-pickle format.

    Image ``i`` of the training files has ``i`` in its first red pixel(s); its green plane is 100
    and its blue plane 200, so a wrong channel layout shows.
    """
    cifar10 = num_classes == 10
    folder = root / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key = b"labels" if cifar10 else b"fine_labels"

    def batch(labels: np.ndarray, offset: int) -> dict:
        data = np.zeros((labels.size, 3, 32, 32), dtype=np.uint8)
        ids = np.arange(labels.size) + offset
        data[:, 0, 0, 0], data[:, 0, 0, 1] = ids % 256, ids // 256
        data[:, 1], data[:, 2] = 100, 200
        out = {b"data": data.reshape(labels.size, 3072), label_key: labels.tolist()}
        if not cifar10:
            out[b"coarse_labels"] = (labels // 5).tolist()  # must be ignored
        return out

    train_labels = np.tile(np.arange(num_classes), per_class)
    names = ([f"data_batch_{i}" for i in range(1, 6)] if cifar10 else ["train"])[:n_batches]
    offset = 0
    for name, labels in zip(names, np.array_split(train_labels, len(names)), strict=True):
        (folder / name).write_bytes(pickle.dumps(batch(labels, offset)))
        offset += labels.size
    test = batch(np.tile(np.arange(num_classes), test_per_class), 10_000)
    (folder / ("test_batch" if cifar10 else "test")).write_bytes(pickle.dumps(test))
    names_key = b"label_names" if cifar10 else b"fine_label_names"
    meta = {names_key: [f"c{k}".encode() for k in range(num_classes)]}
    (folder / ("batches.meta" if cifar10 else "meta")).write_bytes(pickle.dumps(meta))
    return folder


def write_png(path: Path, value: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value, value, value) if mode == "RGB" else value).save(path)
    return path
