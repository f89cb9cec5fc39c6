"""Estimate a deployment's label distribution from unlabeled predictions (label shift).

Under label shift the class-conditional images ``p(x|y)`` stay as they were in training and only the
class frequencies ``pi`` move. A calibrated *balanced* posterior ``q(y|x)`` (LiVT's calibrated
logits, trained for a uniform prior) then gives ``pi`` by maximum likelihood: the EM of Saerens,
Latinne and Decaestecker (2002), which alternates "re-weight every posterior by ``pi / u``" and "set
``pi`` to the mean re-weighted posterior". Alexandari et al. (2020) showed it is the most accurate
estimator once the posteriors are calibrated with per-class biases (BCTS), which is why export fits
those on a balanced val split. BBSE (Lipton et al. 2018; the confusion matrix of a labelled split)
is here for comparison.

Torch-free (numpy only): serving estimates the prior of the traffic it sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# EM stops when no class frequency moves by more than this between iterations.
EM_TOLERANCE = 1e-7
EM_MAX_ITERATIONS = 10_000
# Pseudo-images per class (a symmetric Dirichlet prior on pi): without them EM drives a class whose
# images it confuses with another's to exactly zero, and a zero prior is a class never predicted.
PSEUDO_COUNT = 1.0


@dataclass(frozen=True)
class PriorEstimate:
    """An estimated label distribution, the images it rests on and its per-class spread."""

    pi: np.ndarray  # (K,) sums to one
    # (K,) bootstrap standard deviation of each class frequency; None where none can be measured
    # (no resamples, or one image: every resample of one image is that image, a spread of 0 that
    # would read as certainty).
    std: np.ndarray | None
    images: int
    iterations: int
    converged: bool


def em_prior(
    posteriors: np.ndarray,
    *,
    init: np.ndarray | None = None,
    pseudo_count: float = PSEUDO_COUNT,
    tol: float = EM_TOLERANCE,
    max_iter: int = EM_MAX_ITERATIONS,
) -> tuple[np.ndarray, int, bool]:
    """The prior of the images behind balanced ``posteriors`` ``[N, K]``: maximum likelihood
    (``pseudo_count=0``) or the posterior mode under ``pseudo_count`` extra images per class.

    Returns ``(pi, iterations, converged)``. ``init`` starts EM elsewhere than uniform (a previous
    estimate: it converges in fewer steps). Rows must be probability vectors.
    """
    q = _check_posteriors(posteriors)
    n, k = q.shape
    if pseudo_count < 0:
        raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
    pi = np.full(k, 1.0 / k) if init is None else _check_pi(init, k)
    for iteration in range(1, max_iter + 1):
        # E step: each image's posterior under the current prior (the source prior is uniform, so
        # pi / u is pi up to a constant that the row normalisation removes).
        weighted = q * pi
        weighted /= weighted.sum(axis=1, keepdims=True)
        # M step: the prior is the mean posterior (with the pseudo-images).
        new_pi = (weighted.sum(axis=0) + pseudo_count) / (n + k * pseudo_count)
        if np.abs(new_pi - pi).max() < tol:
            return new_pi, iteration, True
        pi = new_pi
    return pi, max_iter, False


def estimate_prior(
    posteriors: np.ndarray,
    *,
    bootstrap: int = 20,
    seed: int = 0,
    init: np.ndarray | None = None,
) -> PriorEstimate:
    """EM's prior and a bootstrap spread (``bootstrap`` resamples of the images; < 2: no spread)."""
    q = _check_posteriors(posteriors)
    pi, iterations, converged = em_prior(q, init=init)
    std = None
    if bootstrap > 1 and len(q) > 1:
        rng = np.random.default_rng(seed)
        draws = [em_prior(q[rng.integers(0, len(q), len(q))], init=pi)[0] for _ in range(bootstrap)]
        std = np.std(draws, axis=0, ddof=1)
    return PriorEstimate(pi=pi, std=std, images=len(q), iterations=iterations, converged=converged)


def bbse_prior(source_probs: np.ndarray, source_targets: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
    """Black-box shift estimation: solve ``C w = mu`` for the target prior.

    ``C[i, j]`` is the joint frequency of "predicted i, true j" on a labelled source split,
    ``mu[i]`` the frequency of predicting ``i`` on the target images; the target prior is
    ``w * source prior``, clipped at zero and renormalised (the least-squares solution can dip
    below zero where a class is rare).
    """
    p = _check_posteriors(source_probs)
    y = np.asarray(source_targets)
    k = p.shape[1]
    if y.shape != (len(p),):
        raise ValueError(f"source_targets: expected shape ({len(p)},), got {y.shape}")
    joint = np.zeros((k, k))
    np.add.at(joint, (p.argmax(axis=1), y), 1.0)
    joint /= len(p)
    mu = np.bincount(_check_posteriors(target_probs).argmax(axis=1), minlength=k) / len(target_probs)
    w = np.linalg.lstsq(joint, mu, rcond=None)[0]
    source_pi = np.bincount(y, minlength=k) / len(y)
    pi = np.clip(w * source_pi, 0.0, None)
    if pi.sum() <= 0:
        return np.full(k, 1.0 / k)
    return pi / pi.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two distributions: the largest difference in any event's probability."""
    return float(0.5 * np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def _check_posteriors(posteriors: np.ndarray) -> np.ndarray:
    q = np.asarray(posteriors, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] == 0:
        raise ValueError(f"posteriors: expected shape (N, K) with N, K > 0, got {q.shape}")
    if not np.isfinite(q).all() or (q < 0).any():
        raise ValueError("posteriors must be finite and non-negative")
    if not np.allclose(q.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("posteriors: every row must sum to one (softmax probabilities)")
    return q


def _check_pi(pi: np.ndarray, k: int) -> np.ndarray:
    p = np.asarray(pi, dtype=np.float64)
    if p.shape != (k,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"init: expected {k} non-negative finite values, got {pi!r}")
    # A class at exactly zero could never come back: EM multiplies by pi.
    p = np.maximum(p / p.sum(), 1e-12)
    return p / p.sum()
