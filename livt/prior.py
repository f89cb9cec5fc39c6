"""Target label priors and the rule that moves calibrated balanced logits to them.

A LiVT model trained with a balanced loss predicts balanced posteriors: after calibration (see
``livt.export.calibration``) its logits ``c`` give ``q(y|x)`` for a world where every class is
equally likely. A deployment whose label distribution is ``pi`` adds an offset to those logits;
two rules are implemented (docs/architecture.md has the measurements behind the default):

- ``bayes`` (default): ``log pi``. Bayes' rule under label shift: ``p(y|x) ~ q(y|x) pi(y) / u(y)``
  with ``u`` uniform, so the offset is ``log pi`` up to a constant that softmax ignores.
- ``loss``: the offset the training loss added for the training prior, ``tau * (log pi - log(1 -
  pi))`` for the BCE family (``bce``, ``bal-bce``: the sigmoid's log-odds) and ``tau * log pi``
  for the softmax family (logit adjustment, Menon et al. 2021), so ``prior="train"`` recovers the
  logits the loss was fitted on.

The offset is added to calibrated logits and never divided by a temperature. This module is shared
by export (folded into the head) and serving (applied per request), so it imports numpy only: the
serving image carries no PyTorch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BCE_FAMILY = frozenset({"bce", "bal-bce"})
# What a balanced loss's label smoothing mixes into the target: its prior (livt.training.losses
# derives why) or the paper's 1 / C. Here, torch-free, for the configs.
SMOOTHING_TOWARD = ("prior", "uniform")
PRIOR_RULES = ("bayes", "loss")
DEFAULT_RULE = "bayes"

# The priors a prediction may name, defined here once (the server's page gets them from GET /v1/priors).
MODEL_PRIOR = "model"  # the prior folded into the artifact: leave the logits as they are
BALANCED_PRIOR = "balanced"  # every class equally likely
TRAIN_PRIOR = "train"  # the training label distribution
ESTIMATED_PRIOR = "estimated"  # estimated by EM from the images themselves (livt.label_shift)
REQUEST_PRIORS = (MODEL_PRIOR, BALANCED_PRIOR, TRAIN_PRIOR, ESTIMATED_PRIOR)

# A class with zero target frequency would get an offset of -inf; clip it to a very unlikely class
# instead so logits and probabilities stay finite (and JSON-serialisable).
_MIN_PI = 1e-12


class PriorError(ValueError):
    """A prior specification that cannot be used (wrong length, negative, unreadable, ...)."""


def resolve_prior(
    spec: str | Path | Sequence[float] | None,
    class_counts: Sequence[int],
    classes: Sequence[str] | None = None,
) -> tuple[str, np.ndarray | None]:
    """Turn a prior specification into ``(mode, pi)``.

    ``spec`` is ``"balanced"`` (or ``None``), ``"train"`` (the training counts), a path to a JSON
    file (a list of numbers, or an object mapping class names to numbers) or a CSV file (one
    number per line, or ``class,value`` rows), or a sequence of numbers. Values may be counts or
    frequencies; they are normalised to sum to one. ``pi`` is ``None`` for the balanced prior.
    """
    num_classes = len(class_counts)
    if spec is None or (isinstance(spec, str) and spec == BALANCED_PRIOR):
        return BALANCED_PRIOR, None
    if isinstance(spec, str) and spec == TRAIN_PRIOR:
        return TRAIN_PRIOR, _normalise(class_counts, num_classes, "training counts")
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise PriorError(f"prior {str(spec)!r} is not 'balanced', 'train' or an existing JSON/CSV file")
        return "file", _normalise(_read_prior_file(path, classes), num_classes, str(path))
    return "custom", _normalise(spec, num_classes, "prior")


def prior_offset(
    pi: np.ndarray | None, loss: str, tau: float, num_classes: int, rule: str = DEFAULT_RULE
) -> np.ndarray:
    """The logit offset (float32) for target prior ``pi`` under ``rule`` for a model trained with
    ``loss`` and ``tau``; zeros for the balanced prior (``pi is None``)."""
    if rule not in PRIOR_RULES:
        raise PriorError(f"prior rule must be one of {', '.join(PRIOR_RULES)}, got {rule!r}")
    if pi is None:
        return np.zeros(num_classes, dtype=np.float32)
    check_balanced(loss, tau)
    p = np.asarray(pi, dtype=np.float64)
    if p.shape != (num_classes,):
        raise PriorError(f"prior: expected {num_classes} values (one per class), got shape {p.shape}")
    p = np.clip(p, _MIN_PI, 1.0 - _MIN_PI)
    if rule == "bayes":
        return np.log(p).astype(np.float32)
    log_prior = np.log(p) - np.log1p(-p) if loss in BCE_FAMILY else np.log(p)
    return (tau * log_prior).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum for stability (the dtype of ``logits``)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def has_balanced_logits(tau: float) -> bool:
    """Whether a model trained with prior weight ``tau`` predicts balanced posteriors.

    Every loss livt trains is balanced by its ``tau`` term alone (``bal-bce``, ``bal-ce``: tau > 0;
    ``ce``, ``bce``, ``focal``: tau 0), so the loss's name does not enter.
    """
    return tau != 0


def check_balanced(loss: str, tau: float) -> None:
    """Raise ``PriorError`` for a model whose logits already follow its training distribution."""
    if not has_balanced_logits(tau):
        # Without a prior term in the loss (ce, bce, focal, ... or tau 0) the logits already follow
        # the training label distribution: there is no balanced starting point to shift.
        raise PriorError(
            f"a model trained with {loss!r} and tau 0 has no balanced logits, so a target prior cannot "
            "be applied; train with a balanced loss (bal-bce, bal-ce) to choose the prior at deployment"
        )


def _normalise(values: Sequence[float], num_classes: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PriorError(f"{what}: expected numbers, got {values!r}") from exc
    if arr.ndim != 1 or arr.shape[0] != num_classes:
        raise PriorError(f"{what}: expected {num_classes} values (one per class), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise PriorError(f"{what}: values must be finite")
    if np.any(arr < 0):
        raise PriorError(f"{what}: values must be non-negative")
    peak = arr.max()
    if peak <= 0:
        raise PriorError(f"{what}: values must not all be zero")
    # Scaled by the largest first: the sum of large finite values (two of 1e308) overflows to inf.
    arr = arr / peak
    return arr / arr.sum()


def _read_prior_file(path: Path, classes: Sequence[str] | None) -> list[float]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PriorError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict):
            return _by_class_name(data, classes, path)
        if isinstance(data, list):
            return data
        raise PriorError(f"{path}: expected a JSON list of numbers or an object of class: value")
    rows = [row for row in csv.reader(text.splitlines()) if row and any(c.strip() for c in row)]
    if rows and len(rows[0]) == 2:
        header = [c.strip().lower() for c in rows[0]]
        if not _is_number(header[1]):
            rows = rows[1:]
        if any(len(r) != 2 for r in rows):
            raise PriorError(f"{path}: expected 'class,value' on every row")
        return _by_class_name({r[0].strip(): r[1].strip() for r in rows}, classes, path)
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]
    if not all(len(r) == 1 and _is_number(r[0]) for r in rows):
        raise PriorError(f"{path}: expected one number per line or 'class,value' rows")
    return [float(r[0]) for r in rows]


def _by_class_name(mapping: dict, classes: Sequence[str] | None, path: Path) -> list[float]:
    if classes is None:
        raise PriorError(f"{path}: a prior keyed by class name needs the model's class names")
    unknown = sorted(set(mapping) - set(classes))
    if unknown:
        raise PriorError(f"{path}: unknown class names {unknown[:5]}")
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise PriorError(f"{path}: no value for classes {missing[:5]}")
    try:
        return [float(mapping[c]) for c in classes]
    except (TypeError, ValueError) as exc:
        raise PriorError(f"{path}: values must be numbers") from exc


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
