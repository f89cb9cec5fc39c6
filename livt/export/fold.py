"""Fold a target prior and a temperature into the classifier head.

The exported logits are ``(z + offset) / T`` where ``z`` are the fine-tuned model's raw (balanced)
logits. Both are affine in ``z``, so they fold into the head: ``W' = W / T`` and
``b' = (b + offset) / T``. The graph keeps exactly the ops of the unfolded model.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from livt.prior import prior_offset, resolve_prior

logger = logging.getLogger(__name__)

# Temperatures outside this range mean the fit went wrong (or the logits are degenerate).
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


@dataclass(frozen=True)
class PriorFold:
    """What is folded for the prior: its mode, where it came from, ``pi`` and the logit offset."""

    mode: str
    source: str | None
    pi: np.ndarray | None
    offset: np.ndarray

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "source": self.source,
            "pi": None if self.pi is None else [float(p) for p in self.pi],
            "offset": [float(o) for o in self.offset],
        }


def resolve_prior_fold(
    spec: str | Path | None,
    class_counts: Sequence[int],
    classes: Sequence[str],
    loss: str,
    tau: float,
) -> PriorFold:
    """Resolve ``--prior`` (``balanced``, ``train`` or a JSON/CSV file) into the offset to fold.

    Raises ``livt.prior.PriorError`` for a prior that cannot be used.
    """
    mode, pi = resolve_prior(spec, class_counts, classes)
    source = str(Path(spec).resolve()) if mode == "file" else None
    return PriorFold(mode, source, pi, prior_offset(pi, loss, tau, len(class_counts)))


class FoldedClassifier(nn.Module):
    """A classifier whose head carries the offset and temperature; returns logits and probabilities."""

    def __init__(self, model: nn.Module, offset: np.ndarray, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        self.model = copy.deepcopy(model).eval()
        head = self.model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise TypeError(f"expected a linear classifier head, got {type(head).__name__}")
        offset_t = torch.as_tensor(np.asarray(offset), dtype=head.weight.dtype)
        if offset_t.shape != (head.out_features,):
            raise ValueError(f"offset has shape {tuple(offset_t.shape)}, expected ({head.out_features},)")
        with torch.no_grad():
            head.weight.div_(temperature)
            head.bias.add_(offset_t).div_(temperature)
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, logits.softmax(dim=-1)


def fit_temperature(
    logits: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    weights: np.ndarray | None = None,
) -> float:
    """The temperature ``T`` minimising the (optionally per-sample weighted) NLL of ``logits / T``.

    Optimises ``log T`` with LBFGS (so ``T`` stays positive) and clamps it to a sane range.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError(
            f"need logits [N, K] and targets [N] with N > 0, got {tuple(z.shape)}, {tuple(y.shape)}"
        )
    w = torch.ones(z.shape[0], dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
    w = w / w.sum()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        nll = (nn.functional.cross_entropy(z / log_t.exp(), y, reduction="none") * w).sum()
        nll.backward()
        return nll

    optimizer.step(closure)
    return float(math.exp(min(max(log_t.item(), _LOG_T_BOUNDS[0]), _LOG_T_BOUNDS[1])))


def prior_weights(targets: np.ndarray, pi: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    """Importance weights that make a labelled split look drawn from the target prior ``pi``.

    The calibration split (usually the balanced val split) rarely has the deployment's label
    distribution; weighting each sample by ``pi[y] / freq[y]`` fits ``T`` for the deployment.
    ``None`` (unweighted) for the balanced prior on a balanced split.
    """
    freq = np.bincount(targets, minlength=num_classes) / len(targets)
    target = np.full(num_classes, 1.0 / num_classes) if pi is None else np.asarray(pi, dtype=np.float64)
    if pi is None and np.allclose(freq, target):
        return None
    if np.any((freq == 0) & (target > 0)):
        logger.warning("calibration split lacks classes the prior expects; their weight is dropped")
    return np.divide(target, freq, out=np.zeros(num_classes), where=freq > 0)[targets]
