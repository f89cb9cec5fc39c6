"""Evaluation metrics for long-tailed classification: accuracy by class and shot group, calibration.

All functions take numpy arrays or torch tensors and return plain Python numbers and lists, ready
for ``metrics.json``. Torch-free at import (a tensor argument means torch is loaded already), so
export's metadata reads ``SCALAR_METRICS`` without it. Accuracies are fractions in [0, 1]. A class without test samples has accuracy
``None`` and is left out of every mean; a shot group without such classes is ``None``.

Calibration uses equal-width bins on the top-class confidence: bin ``b`` holds confidences in
``(b / n_bins, (b + 1) / n_bins]`` and the first bin also holds 0.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch

# The Many / Medium / Few split of the long-tail literature (Liu et al. 2019, OLTR): many-shot classes
# have more than 100 training images, few-shot ones fewer than 20. A run records the pair it used in
# meta.json (``many_threshold``, ``few_threshold``), which evaluation and export read back.
MANY_THRESHOLD = 100
FEW_THRESHOLD = 20

__all__ = [
    "FEW_THRESHOLD",
    "MANY_THRESHOLD",
    "SCALAR_METRICS",
    "ReliabilityBins",
    "class_groups",
    "class_scores",
    "compute_metrics",
    "expected_calibration_error",
    "reliability_bins",
    "tail_accuracy",
]

# The scalar metrics of ``compute_metrics``, in report order: what an epoch's history record,
# meta.json's val metrics, export's accuracy table and the artifact's metadata carry (the per-class
# lists and the confusion matrix stay in metrics.json).
SCALAR_METRICS = ("top1", "top5", "balanced_acc", "many", "medium", "few", "ece", "mce", "nll")

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence]


class ReliabilityBins(NamedTuple):
    """Per-bin calibration statistics; ``confidence`` and ``accuracy`` are NaN for an empty bin."""

    edges: np.ndarray  # (n_bins + 1,)
    confidence: np.ndarray  # (n_bins,) mean top-class probability
    accuracy: np.ndarray  # (n_bins,) fraction of correct top-class predictions
    count: np.ndarray  # (n_bins,) samples in the bin


def class_groups(
    class_counts: Sequence[int], many: int = MANY_THRESHOLD, few: int = FEW_THRESHOLD
) -> dict[str, list[int]]:
    """Split class indices by training count: ``many`` (> many), ``medium`` (few..many), ``few`` (< few)."""
    if few > many:
        raise ValueError(f"few threshold ({few}) must not exceed many threshold ({many})")
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(class_counts):
        if n > many:
            groups["many"].append(c)
        elif n < few:
            groups["few"].append(c)
        else:
            groups["medium"].append(c)
    return groups


def compute_metrics(
    logits: ArrayLike,
    targets: ArrayLike,
    train_counts: Sequence[int],
    *,
    many: int = MANY_THRESHOLD,
    few: int = FEW_THRESHOLD,
    n_bins: int = 15,
) -> dict[str, Any]:
    """All test metrics for ``logits`` ``(N, C)`` against class indices ``targets`` ``(N,)``.

    Returns ``top1``, ``top5`` (top-min(5, C)), ``balanced_acc`` (mean per-class accuracy),
    ``per_class``, ``many`` / ``medium`` / ``few`` (mean per-class accuracy of the classes with
    more than ``many``, ``few`` to ``many``, fewer than ``few`` TRAINING samples), ``ece`` / ``mce``,
    ``nll`` (mean negative log-likelihood), ``confusion`` (rows true, columns predicted) and
    ``num_samples``.
    """
    z = _as_numpy(logits, np.float64)
    y = _check_targets(_as_numpy(targets), z)
    num_classes = z.shape[1]
    if len(train_counts) != num_classes:
        raise ValueError(f"train_counts has {len(train_counts)} entries for {num_classes} classes")

    log_p = z - _logsumexp(z)
    pred = z.argmax(axis=1)
    k = min(5, num_classes)
    top_k = np.argsort(-z, axis=1, kind="stable")[:, :k]
    per_class = _per_class_accuracy(pred, y, num_classes)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    ece, mce = expected_calibration_error(np.exp(log_p), y, n_bins)
    groups = class_groups(train_counts, many, few)
    return {
        "top1": float(np.mean(pred == y)),
        "top5": float(np.mean((top_k == y[:, None]).any(axis=1))),
        "balanced_acc": _mean_defined(per_class),
        "per_class": per_class,
        **{name: _mean_defined([per_class[c] for c in members]) for name, members in groups.items()},
        "ece": ece,
        "mce": mce,
        "nll": float(-np.mean(log_p[np.arange(len(y)), y])),
        "confusion": confusion.tolist(),
        "num_samples": len(y),
    }


def class_scores(confusion: ArrayLike) -> dict[str, list[Any]]:
    """Per-class ``precision``, ``recall``, ``f1`` and ``support`` of a confusion matrix (rows true).

    As scikit-learn's ``classification_report``, except that an undefined value is ``None`` rather
    than 0: precision of a class never predicted, recall of a class without samples, and F1 where
    either is undefined (F1 is 0 where both are defined and 0).
    """
    matrix = _as_numpy(confusion, np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {matrix.shape}")
    hits, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    precision = [float(h / n) if n else None for h, n in zip(hits, predicted, strict=True)]
    recall = [float(h / n) if n else None for h, n in zip(hits, support, strict=True)]
    f1 = [
        None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
        for p, r in zip(precision, recall, strict=True)
    ]
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.tolist()}


def reliability_bins(probs: ArrayLike, targets: ArrayLike, n_bins: int = 15) -> ReliabilityBins:
    """Bin the samples by top-class probability; ``probs`` is ``(N, C)``, rows summing to one."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = _as_numpy(probs, np.float64)
    y = _check_targets(_as_numpy(targets), p)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a value equal to an upper edge into the bin below: bins are (lo, hi].
    bin_of = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bin_of, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bin_of, weights=confidence, minlength=n_bins) / count
        mean_acc = np.bincount(bin_of, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(edges, mean_conf, mean_acc, count)


def expected_calibration_error(probs: ArrayLike, targets: ArrayLike, n_bins: int = 15) -> tuple[float, float]:
    """``(ECE, MCE)``: the count-weighted mean and the largest ``|accuracy - confidence|`` over bins."""
    bins = reliability_bins(probs, targets, n_bins)
    filled = bins.count > 0
    gap = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    weight = bins.count[filled] / bins.count.sum()
    return float(np.sum(weight * gap)), float(gap.max())


def tail_accuracy(per_class: Sequence[float | None], train_counts: Sequence[int], k: int = 3) -> float | None:
    """Mean accuracy over the ``k`` classes with the fewest training samples (ties: lower index).

    Classes among them without test samples are left out; ``None`` if none of them has any.
    """
    if len(per_class) != len(train_counts):
        raise ValueError(f"per_class has {len(per_class)} entries but train_counts has {len(train_counts)}")
    if not 1 <= k <= len(train_counts):
        raise ValueError(f"k must be between 1 and the number of classes {len(train_counts)}, got {k}")
    rarest = np.argsort(np.asarray(train_counts), kind="stable")[:k]
    return _mean_defined([per_class[c] for c in rarest])


def _as_numpy(x: ArrayLike, dtype: type | None = None) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # numpy has no bfloat16; widen low-precision floats before converting.
        x = x.double() if x.is_floating_point() else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _check_targets(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"expected scores of shape (N, C) with N, C > 0, got {scores.shape}")
    if targets.shape != (scores.shape[0],):
        raise ValueError(
            f"expected {scores.shape[0]} targets (one class index per row), got shape {targets.shape}"
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise ValueError(f"targets must lie in [0, {scores.shape[1]}), got {targets.min()}..{targets.max()}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores (logits or probabilities) must be finite")
    return targets


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))


def _per_class_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> list[float | None]:
    support = np.bincount(y, minlength=num_classes)
    hits = np.bincount(y[pred == y], minlength=num_classes)
    return [float(hits[c] / support[c]) if support[c] else None for c in range(num_classes)]


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
