"""Calibrate the balanced posterior: an affine map of the raw logits fitted on a balanced split.

Every calibrator here is ``c(z) = scale * z + bias`` per class, so export folds it into the head:

- ``temperature``: one scale ``1 / T`` (Guo et al. 2017);
- ``bcts``: bias-corrected temperature scaling, ``z / T + b`` (Alexandari et al. 2020): the
  per-class bias absorbs what the balanced loss left of the training prior, which is what EM
  label-shift estimation needs from the posteriors;
- ``vector``: vector scaling, ``w * z + b`` (per-class positive scales and biases).

They are fitted by unweighted NLL on the BALANCED logits of a balanced split (the val split carved
from the training images), so ``softmax(c(z))`` is a calibrated balanced posterior; a deployment
prior is applied after it (``livt.prior``) and never divided by T. ``select_calibration`` picks the
method by cross-validated NLL on that split, so the choice is not the one with most parameters by
default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from livt.prior import softmax

CALIBRATORS = ("temperature", "bcts", "vector")
# Scales outside this range mean the fit went wrong (or the logits are degenerate).
_LOG_SCALE_BOUNDS = (math.log(1 / 20), math.log(20.0))


@dataclass(frozen=True)
class Calibration:
    """``c(z) = scale * z + bias``, per class; ``method`` says which parameters were free."""

    method: str  # "none" | one of CALIBRATORS
    scale: np.ndarray  # (K,)
    bias: np.ndarray  # (K,)

    @classmethod
    def identity(cls, num_classes: int) -> Calibration:
        return cls("none", np.ones(num_classes), np.zeros(num_classes))

    @property
    def temperature(self) -> float | None:
        """``T`` where one scale serves every class (none, temperature, bcts), else None."""
        return None if self.method == "vector" else float(1.0 / self.scale[0])

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float64) * self.scale + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "scale": [float(s) for s in self.scale],
            "bias": [float(b) for b in self.bias],
        }


@dataclass
class CalibrationChoice:
    """The fitted calibrator of the chosen method and every candidate's cross-validated scores."""

    calibration: Calibration
    scores: dict[str, dict[str, float]]  # method -> {"nll": ..., "ece": ...}, held-out folds
    images: int
    folds: int
    candidates: dict[str, Calibration] = field(default_factory=dict)  # each refitted on all images


def fit_calibration(logits: np.ndarray, targets: np.ndarray, method: str) -> Calibration:
    """Fit ``method`` by minimising the mean NLL of ``softmax(scale * logits + bias)`` (LBFGS).

    A unit Gaussian prior on the log scales and the biases, worth one image, keeps the fit finite
    where a small split is separable by them (the plain NLL then falls forever as the scale grows);
    on thousands of images it changes nothing that matters.
    """
    z, y = _check(logits, targets)
    k = z.shape[1]
    if method == "none":
        return Calibration.identity(k)
    if method not in CALIBRATORS:
        raise ValueError(f"calibration must be one of none, {', '.join(CALIBRATORS)}; got {method!r}")
    zt = torch.as_tensor(z, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.long)
    log_scale = torch.zeros(k if method == "vector" else 1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=method != "temperature")
    params = [log_scale] + ([bias] if bias.requires_grad else [])
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    prior_weight = 0.5 / len(y)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        nll = nn.functional.cross_entropy(zt * log_scale.exp() + bias, yt)
        loss = nll + prior_weight * (log_scale.square().sum() + bias.square().sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    scale = np.exp(np.clip(log_scale.detach().numpy(), *_LOG_SCALE_BOUNDS))
    b = bias.detach().numpy()
    # Softmax ignores a shift of every bias: centre them, so equal fits print equal numbers.
    return Calibration(method, np.broadcast_to(scale, (k,)).copy(), b - b.mean())


def select_calibration(
    logits: np.ndarray,
    targets: np.ndarray,
    methods: Sequence[str] = CALIBRATORS,
    *,
    folds: int = 5,
    seed: int = 0,
) -> CalibrationChoice:
    """Score ``methods`` (and no calibration) by ``folds``-fold cross-validated NLL; refit the best.

    Folds are stratified by class. Ties go to the method listed first (the simpler one).
    """
    from livt.metrics import expected_calibration_error

    z, y = _check(logits, targets)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    fold_of = _stratified_folds(y, folds, seed)
    candidates = ("none", *methods)
    scores: dict[str, dict[str, float]] = {}
    for method in candidates:
        held_out_logits = np.empty_like(z)
        for f in range(folds):
            train, test = fold_of != f, fold_of == f
            held_out_logits[test] = fit_calibration(z[train], y[train], method).apply(z[test])
        probs = softmax(held_out_logits)
        scores[method] = {
            "nll": float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300)))),
            "ece": expected_calibration_error(probs, y)[0],
        }
    best = min(candidates, key=lambda m: scores[m]["nll"])
    fitted = {m: fit_calibration(z, y, m) for m in candidates}
    return CalibrationChoice(fitted[best], scores, images=len(y), folds=folds, candidates=fitted)


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def _check(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    if z.ndim != 2 or z.shape[0] == 0 or y.shape != (z.shape[0],):
        raise ValueError(f"need logits [N, K] and targets [N] with N > 0, got {z.shape}, {y.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"targets must lie in [0, {z.shape[1]})")
    return z, y
