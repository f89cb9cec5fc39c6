"""The data set registry: ``build_dataset(name, split, ...)`` returns an ``LTDataset``.

Splits follow docs/architecture.md: ``train`` is the long-tailed training set, ``test`` the
balanced official test set, and ``val`` the data set's own validation list/folder or, where it has
none, a balanced draw of ``val_per_class`` images per class (0 by default: the benchmark's exact
training set) from the training images that the long-tail subsampling did not keep, topped up from
the kept images of a class with too few left (never from test, never overlapping train).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from livt.data import synthetic
from livt.data.base import ArrayDataset, DatasetInfo, FileDataset, LTDataset, Transform
from livt.data.formats import DATA_ROOT_ENV, cifar, given_root, idx, imagefolder, lists
from livt.data.longtail import holdout_split, longtail_counts, longtail_subset

SPLITS = ("train", "val", "test")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Pixel mean / std over all 60,000 Fashion-MNIST training images, scaled to [0, 1]
# (0.28604..., 0.35302...), rounded to 4 places.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# Per-channel mean / std over the 50,000 training images of each CIFAR release.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# Default list files of the published long-tailed benchmarks, per split. iNaturalist 2018 has no
# public test labels: its results (LiVT's included) are reported on the val list, so test = val.
LIST_FILES = {
    "imagenet-lt": {
        "train": "ImageNet_LT_train.txt",
        "val": "ImageNet_LT_val.txt",
        "test": "ImageNet_LT_test.txt",
    },
    "places-lt": {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"},
    "inat2018": {
        "train": "iNaturalist18_train.txt",
        "val": "iNaturalist18_val.txt",
        "test": "iNaturalist18_val.txt",
    },
}


_REGISTRY: dict[str, Callable[..., LTDataset]] = {}
# Data sets whose format is read from their files: ``fn(data_root, options) -> the unset options``.
_INFERENCE: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., LTDataset]], Callable[..., LTDataset]]:
    """Register a builder ``fn(split, data_root, transform, *, **options) -> LTDataset`` under ``name``."""

    def decorate(fn: Callable[..., LTDataset]) -> Callable[..., LTDataset]:
        _REGISTRY[name] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Names accepted by ``build_dataset``."""
    return sorted(_REGISTRY)


def dataset_options(name: str) -> dict[str, Any]:
    """The options a data set accepts and their defaults."""
    builder = _get_builder(name)
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def infer_options(name: str, data_root: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """The options data set ``name`` reads from its files where ``options`` leaves them unset.

    Passing them back builds the same data set without looking again: a run infers once and records
    the values (its config.yaml and meta.json). Only ``imagefolder`` infers (image_size, channels,
    mean, std, logged); ``{}`` for the data sets of a fixed format.
    """
    _get_builder(name)
    infer = _INFERENCE.get(name)
    return {} if infer is None else infer(data_root, options)


def build_dataset(
    name: str,
    split: str = "train",
    *,
    data_root: str | Path | None = None,
    transform: Transform | None = None,
    **options: Any,
) -> LTDataset:
    """Build split ``split`` of data set ``name``; ``options`` are the data set's own (see ``dataset_options``)."""
    valid = dataset_options(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"data set {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    return _get_builder(name)(split, data_root, transform, **options)


def _get_builder(name: str) -> Callable[..., LTDataset]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def _subsampled_split(
    info: DatasetInfo,
    split: str,
    transform: Transform | None,
    load_train: Callable[[], tuple[np.ndarray, np.ndarray]],
    load_test: Callable[[], tuple[np.ndarray, np.ndarray]],
    *,
    imbalance_factor: float,
    profile: str,
    seed: int,
    val_per_class: int,
    source_dir: Path,
) -> ArrayDataset:
    """Train / val / test of an in-memory set whose training images are subsampled to a long tail.

    The loaders return ``(uint8 images, int64 targets)`` read from ``source_dir``; only the one the
    split needs is called.
    """
    if split == "test":
        return ArrayDataset(info, *load_test(), transform, source_dir=source_dir)
    images, targets = load_train()
    num_classes = len(info.classes)
    keep = longtail_subset(targets, num_classes, imbalance_factor, profile, seed)
    if val_per_class > 0:
        train, val = holdout_split(targets, num_classes, keep, val_per_class, seed)
        keep = val if split == "val" else train
    elif split == "val":
        raise ValueError(
            f"{info.name} has no official val split: pass val_per_class > 0 to hold one out of the "
            "training images (the same value for every split, so train and val stay disjoint)"
        )
    return ArrayDataset(info, images[keep], targets[keep], transform, source_dir=source_dir)


def _require_root(name: str, data_root: str | Path | None) -> Path:
    if data_root is None:
        raise ValueError(f"data set {name!r} needs data_root (the folder its files are under)")
    return Path(data_root)


@register_dataset("fashion-mnist-lt")
def _fashion_mnist_lt(
    split: str,
    data_root: str | Path | None,
    transform: Transform | None,
    *,
    imbalance_factor: float = 100.0,
    profile: str = "exp",
    seed: int = 0,
    val_per_class: int = 0,
    download: bool = False,
) -> ArrayDataset:
    """Fashion-MNIST IDX files (see ``formats.idx.fashion_mnist_dirs``), long-tailed train."""
    if download:
        given = given_root(data_root)
        if given is None:
            raise ValueError(f"download=True needs data_root (or ${DATA_ROOT_ENV}) to download into")
        idx.download_fashion_mnist(given[0])
    folder = idx.find_fashion_mnist(data_root)
    arrays = idx.load_fashion_mnist(folder)
    info = DatasetInfo(
        "fashion-mnist-lt", FASHION_MNIST_CLASSES, 1, 28, FASHION_MNIST_MEAN, FASHION_MNIST_STD
    )
    return _subsampled_split(
        info,
        split,
        transform,
        lambda: (arrays["train_images"], arrays["train_labels"].astype(np.int64)),
        lambda: (arrays["test_images"], arrays["test_labels"].astype(np.int64)),
        imbalance_factor=imbalance_factor,
        profile=profile,
        seed=seed,
        val_per_class=val_per_class,
        source_dir=folder,
    )


def _cifar_builder(
    name: str, layout: cifar.CifarLayout, norm: tuple[tuple[float, ...], tuple[float, ...]]
) -> Callable[..., ArrayDataset]:
    def build(
        split: str,
        data_root: str | Path | None,
        transform: Transform | None,
        *,
        imbalance_factor: float = 100.0,
        profile: str = "exp",
        seed: int = 0,
        val_per_class: int = 0,
    ) -> ArrayDataset:
        """CIFAR python-pickle release under data_root (or $LIVT_DATA_ROOT), long-tailed train."""
        folder = cifar.find_cifar(layout, data_root)
        info = DatasetInfo(name, tuple(cifar.read_cifar_classes(folder, layout)), 3, 32, *norm)
        return _subsampled_split(
            info,
            split,
            transform,
            lambda: cifar.read_cifar_split(folder, layout, train=True),
            lambda: cifar.read_cifar_split(folder, layout, train=False),
            imbalance_factor=imbalance_factor,
            profile=profile,
            seed=seed,
            val_per_class=val_per_class,
            source_dir=folder,
        )

    return build


register_dataset("cifar10-lt")(_cifar_builder("cifar10-lt", cifar.CIFAR10, (CIFAR10_MEAN, CIFAR10_STD)))
register_dataset("cifar100-lt")(_cifar_builder("cifar100-lt", cifar.CIFAR100, (CIFAR100_MEAN, CIFAR100_STD)))


def _list_builder(name: str) -> Callable[..., FileDataset]:
    def build(
        split: str,
        data_root: str | Path | None,
        transform: Transform | None,
        *,
        train_list: str | Path | None = None,
        val_list: str | Path | None = None,
        test_list: str | Path | None = None,
        classnames: str | Path | None = None,
    ) -> FileDataset:
        """Published list files (``path label`` per line, paths relative to data_root); no subsampling.

        A ``*_list`` option replaces the default list file in data_root; ``classnames`` is a file
        of one class name per line (default: the label index as a string).
        """
        root = _require_root(name, data_root)
        given = {"train": train_list, "val": val_list, "test": test_list}
        paths = {s: Path(given[s]) if given[s] else root / LIST_FILES[name][s] for s in SPLITS}
        train = lists.read_list(paths["train"], root)
        # The training list defines the label space so that every split has the same classes.
        num_classes = max(t for _, t in train) + 1
        if classnames is not None:
            names = lists.read_classnames(classnames)
            if len(names) < num_classes:
                raise ValueError(
                    f"{classnames}: {len(names)} class names but labels go up to {num_classes - 1}"
                )
        else:
            names = [str(c) for c in range(num_classes)]
        samples = train if split == "train" else lists.read_list(paths[split], root)
        beyond = max(t for _, t in samples)
        if beyond >= len(names):
            raise ValueError(f"{paths[split]}: label {beyond} is not a class of the training list")
        info = DatasetInfo(name, tuple(names), 3, 224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
        return FileDataset(info, samples, transform, source_dir=root)

    return build


for _name in LIST_FILES:
    register_dataset(_name)(_list_builder(_name))


@register_dataset("imagefolder")
def _imagefolder(
    split: str,
    data_root: str | Path | None,
    transform: Transform | None,
    *,
    imbalance_factor: float = 1.0,
    profile: str = "exp",
    seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
) -> FileDataset:
    """``data_root/{train,val,test}/<class>/<image>``; optional long-tail subsampling of train.

    ``image_size``, ``channels``, ``mean`` and ``std`` left unset are what the training images are
    (``infer_options``). ``classes`` fixes the label space (e.g. a trained model's classes, so a
    folder without a train split can be scored); by default it is the sorted class folders of
    ``data_root/train``.
    """
    root = _require_root("imagefolder", data_root)
    if classes is None:
        classes = imagefolder.scan_classes(root)
    else:
        classes = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"imagefolder classes must be distinct names, at least one, got {classes}")
    given = {"image_size": image_size, "channels": channels, "mean": mean, "std": std}
    fmt = {**given, **imagefolder.infer_options(root, {**given, "classes": classes}, split)}
    channels = fmt["channels"]
    mean, std = tuple(map(float, fmt["mean"])), tuple(map(float, fmt["std"]))
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"imagefolder mean and std need {channels} value(s), got {mean} and {std}")
    samples = imagefolder.scan_split(root, split, classes)
    if split == "train":
        keep = longtail_subset([t for _, t in samples], len(classes), imbalance_factor, profile, seed)
        samples = [samples[i] for i in keep]
    info = DatasetInfo("imagefolder", tuple(classes), channels, int(fmt["image_size"]), mean, std)
    return FileDataset(info, samples, transform, source_dir=root)


_INFERENCE["imagefolder"] = imagefolder.infer_options


@register_dataset("synthetic")
def _synthetic(
    split: str,
    data_root: str | Path | None,
    transform: Transform | None,
    *,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    n_max: int = 500,
    imbalance_factor: float = 10.0,
    profile: str = "exp",
    n_test: int = 100,
    val_per_class: int = 20,
    seed: int = 0,
) -> ArrayDataset:
    """Procedural striped blobs (``livt.data.synthetic``), generated per split; data_root is unused."""
    if channels not in synthetic.NORM_STATS:
        raise ValueError(f"synthetic channels must be 1 or 3, got {channels}")
    if n_test < 1 or val_per_class < 1:
        raise ValueError(f"n_test and val_per_class must be >= 1, got {n_test} and {val_per_class}")
    # Train counts are validated for every split so a bad option fails the same way everywhere.
    counts = {
        "train": longtail_counts(n_max, num_classes, imbalance_factor, profile),
        "val": [val_per_class] * num_classes,
        "test": [n_test] * num_classes,
    }[split]
    images, targets = synthetic.synthetic_images(counts, image_size, channels, seed, split)
    classes = tuple(f"class_{k}" for k in range(num_classes))
    info = DatasetInfo("synthetic", classes, channels, image_size, *synthetic.NORM_STATS[channels])
    return ArrayDataset(info, images, targets, transform)
