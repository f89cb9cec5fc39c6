"""Long-tailed class profiles and seeded subsampling (the Many / Medium / Few groups: ``livt.metrics``).

The profile is the long-tailed CIFAR rule (Cao et al. 2019, used by LiVT): with ``C`` classes in
index order, the largest class ``n_max`` and imbalance factor ``IF``,
``n_c = floor(n_max * (1 / IF) ** (c / (C - 1)))`` (exponential) or ``n_max`` for the first half
of the classes and ``floor(n_max / IF)`` for the rest (step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

PROFILES = ("exp", "step")
# The held-out (val) draw uses its own stream of the user's seed so that it is independent of the
# subsampling permutation while staying a pure function of ``seed``.
_HOLDOUT_STREAM = 1


def longtail_counts(n_max: int, num_classes: int, imbalance_factor: float, profile: str = "exp") -> list[int]:
    """Images per class, head (class 0) to tail, for a long-tailed version of a data set."""
    if n_max < 1:
        raise ValueError(f"n_max must be a positive number of images, got {n_max}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if not imbalance_factor >= 1:
        raise ValueError(f"imbalance_factor must be >= 1 (1 = no subsampling), got {imbalance_factor}")
    if profile not in PROFILES:
        raise ValueError(f"unknown long-tail profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if profile == "step":
        tail = int(np.floor(n_max / np.float64(imbalance_factor)))
        return [n_max if c < num_classes // 2 else tail for c in range(num_classes)]
    if num_classes == 1:
        return [n_max]
    exponent = np.arange(num_classes, dtype=np.float64) / np.float64(num_classes - 1)
    counts = np.floor(n_max * (1.0 / np.float64(imbalance_factor)) ** exponent)
    return [int(n) for n in counts]


def longtail_indices(targets: Sequence[int] | np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Indices into ``targets`` that keep ``counts[c]`` images of each class ``c``.

    One ``np.random.RandomState(seed)`` permutes each class's indices in class index order and the
    first ``counts[c]`` are kept. The result is sorted, so the subset keeps the original order.
    """
    targets = _as_targets(targets, len(counts))
    rng = np.random.RandomState(seed)
    kept = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(targets == c)
        if n > members.size:
            raise ValueError(f"class {c} has {members.size} images, cannot keep {n}")
        kept.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(kept)).astype(np.int64)


def longtail_subset(
    targets: Sequence[int] | np.ndarray,
    num_classes: int,
    imbalance_factor: float,
    profile: str = "exp",
    seed: int = 0,
) -> np.ndarray:
    """Indices of the long-tailed training subset of a (typically balanced) training set.

    ``n_max`` is the largest class; a class smaller than its profile count keeps all its images.
    """
    targets = _as_targets(targets, num_classes)
    available = np.bincount(targets, minlength=num_classes)
    profile_counts = longtail_counts(int(available.max()), num_classes, imbalance_factor, profile)
    counts = np.minimum(profile_counts, available)
    return longtail_indices(targets, counts.tolist(), seed)


def holdout_split(
    targets: Sequence[int] | np.ndarray,
    num_classes: int,
    keep: np.ndarray,
    per_class: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a long-tailed subset into ``(train, val)`` with a balanced val of ``per_class`` per class.

    Val images come first from the training images the subsampling did NOT keep (ImageNet-LT's own
    convention), so the long tail is untouched; only a class that kept (nearly) all of its images,
    typically the head class, gives the shortfall from its kept images. Both draws are seeded on a
    stream of their own, so the long-tail selection does not depend on ``per_class``.
    """
    if per_class < 1:
        raise ValueError(f"val_per_class must be >= 1, got {per_class}")
    targets = _as_targets(targets, num_classes)
    kept = np.zeros(targets.size, dtype=bool)
    kept[np.asarray(keep, dtype=np.int64)] = True
    rng = np.random.RandomState([seed, _HOLDOUT_STREAM])
    val, carved = [], []
    for c in range(num_classes):
        left = rng.permutation(np.flatnonzero(~kept & (targets == c)))[:per_class]
        short = per_class - left.size
        own = rng.permutation(np.flatnonzero(kept & (targets == c)))
        if short > 0 and own.size - short < 1:
            raise ValueError(
                f"class {c} has {own.size + left.size} training images: too few for a val split of "
                f"{per_class} per class that leaves it a training image"
            )
        val.extend((left, own[: max(short, 0)]))
        carved.append(own[: max(short, 0)])
    carved_idx = np.concatenate(carved)
    if carved_idx.size:
        logger.info(
            "val split: %d images carved from the kept training images of classes that had too few left",
            carved_idx.size,
        )
    train = np.setdiff1d(np.asarray(keep, dtype=np.int64), carved_idx)
    return train, np.sort(np.concatenate(val)).astype(np.int64)


def _as_targets(targets: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    arr = np.asarray(targets, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"targets must be one-dimensional, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes}), got {arr.min()}..{arr.max()}")
    return arr
