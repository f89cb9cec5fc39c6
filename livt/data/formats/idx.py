"""IDX files (the MNIST / Fashion-MNIST format), gzipped or not, and where Fashion-MNIST lives."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from livt.data.formats import given_root, missing

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Where the Debian/Ubuntu package dataset-fashion-mnist installs the files.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
# The only IDX element type these data sets use (unsigned byte); others are rejected.
_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a uint8 array of the shape its header declares."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != _UBYTE:
        raise ValueError(f"{path}: IDX element type 0x{data[2]:02x} is not unsigned byte")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(f"{path}: header declares shape {shape} but holds {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def fashion_mnist_dirs(data_root: str | Path | None) -> list[Path]:
    """Folders searched for Fashion-MNIST: the root given (``data_root``, else ``$LIVT_DATA_ROOT``)
    directly and in torchvision's ``FashionMNIST/raw`` layout; the system folder only without one."""
    given = given_root(data_root)
    if given is None:
        return list(SYSTEM_DIRS)
    return [given[0], given[0] / "FashionMNIST" / "raw"]


def find_fashion_mnist(data_root: str | Path | None) -> Path:
    """The first searched folder that holds all four Fashion-MNIST files."""
    searched = fashion_mnist_dirs(data_root)
    for folder in searched:
        if all(_locate(folder, name) for name in FASHION_MNIST_FILES.values()):
            return folder
    given = given_root(data_root)
    hint = (
        "put the files there (or pass download=True, --data-opt download=true, to fetch them there); "
        "a root that is given is the only place looked in"
        if given
        else "install it with `apt-get install dataset-fashion-mnist`, or pass data_root (--data-root)"
    )
    raise missing(
        "Fashion-MNIST (the four IDX files train-/t10k-images/labels, .gz or not)", searched, hint, given
    )


def download_fashion_mnist(root: str | Path) -> Path:
    """Fetch Fashion-MNIST with torchvision into ``root/FashionMNIST/raw`` (needs internet)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    return Path(root) / "FashionMNIST" / "raw"


@functools.lru_cache(maxsize=2)
def load_fashion_mnist(folder: Path) -> dict[str, np.ndarray]:
    """The four arrays of the Fashion-MNIST files in ``folder`` (read-only, cached per folder)."""
    arrays = {}
    for key, name in FASHION_MNIST_FILES.items():
        path = _locate(folder, name)
        if path is None:
            raise missing(f"Fashion-MNIST file {name}", [folder], "")
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise ValueError(f"{folder}: {split} has {n_img} images but {n_lab} labels")
    return arrays


def _locate(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None
