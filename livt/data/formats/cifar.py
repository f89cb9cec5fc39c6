"""CIFAR-10 / CIFAR-100 in their python-pickle release (``cifar-10-batches-py``, ``cifar-100-python``).

The release files are pickles, so only load folders you trust (as with torchvision's readers).
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livt.data.formats import DATA_ROOT_ENV, given_root, missing


@dataclass(frozen=True)
class CifarLayout:
    """Folder and file names of one CIFAR release."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
)
CIFAR100 = CifarLayout(
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
)


def find_cifar(layout: CifarLayout, data_root: str | Path | None) -> Path:
    """The release folder under the root given (``data_root``, else ``$LIVT_DATA_ROOT``), or that root itself."""
    given = given_root(data_root)
    if given is None:
        raise missing(f"CIFAR ({layout.folder}/)", [], f"pass data_root or set ${DATA_ROOT_ENV}")
    root = given[0]
    searched = [root / layout.folder, root]
    for folder in searched:
        if (folder / layout.meta_file).is_file() and (folder / layout.test_file).is_file():
            return folder
    raise missing(
        f"CIFAR ({layout.folder}/ with {layout.meta_file}, {', '.join(layout.train_files)}, {layout.test_file})",
        searched,
        "download the python version from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it there",
        given,
    )


@functools.lru_cache(maxsize=2)
def read_cifar_split(folder: Path, layout: CifarLayout, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` int64 of the train or test files.

    Cached (train and val splits read the same files), so the arrays are read-only.
    """
    images, labels = [], []
    for name in layout.train_files if train else (layout.test_file,):
        batch = _unpickle(folder / name)
        try:
            data, target = batch[b"data"], batch[layout.label_key]
        except KeyError as exc:
            raise ValueError(f"{folder / name}: missing key {exc.args[0]!r}") from exc
        # Rows are channel-major (1024 red, 1024 green, 1024 blue), each channel row-major.
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(target, dtype=np.int64))
    arrays = np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)
    for array in arrays:
        array.flags.writeable = False
    return arrays


def read_cifar_classes(folder: Path, layout: CifarLayout) -> list[str]:
    """Class names from the release's meta file."""
    meta = _unpickle(folder / layout.meta_file)
    if layout.names_key not in meta:
        raise ValueError(f"{folder / layout.meta_file}: missing key {layout.names_key!r}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names_key]]


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise missing(f"CIFAR file {path.name}", [path.parent], "the release folder is incomplete")
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")
