"""Fold a calibrator and a target prior into the classifier head.

The exported logits are ``scale * z + bias + offset``: ``z`` the fine-tuned model's raw (balanced)
logits, ``scale * z + bias`` their calibration (``livt.export.calibration``) and ``offset`` the
target prior's rule (``livt.prior``), applied after calibration and never rescaled by it. All of it
is affine in ``z``, so it folds into the head: ``W' = diag(scale) W`` and ``b' = scale * b + bias +
offset``. The graph keeps exactly the ops of the unfolded model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from livt.export.calibration import Calibration
from livt.prior import DEFAULT_RULE, prior_offset, resolve_prior


@dataclass(frozen=True)
class PriorFold:
    """What is folded for the prior: its mode, rule, where it came from, ``pi`` and the logit offset."""

    mode: str
    rule: str
    source: str | None
    pi: np.ndarray | None
    offset: np.ndarray

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "rule": self.rule,
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
    rule: str = DEFAULT_RULE,
) -> PriorFold:
    """Resolve ``--prior`` (``balanced``, ``train`` or a JSON/CSV file) into the offset to fold.

    Raises ``livt.prior.PriorError`` for a prior that cannot be used.
    """
    mode, pi = resolve_prior(spec, class_counts, classes)
    source = str(Path(spec).resolve()) if mode == "file" else None
    return PriorFold(mode, rule, source, pi, prior_offset(pi, loss, tau, len(class_counts), rule))


class FoldedClassifier(nn.Module):
    """A classifier whose head carries the calibration and prior offset; returns logits and probabilities."""

    def __init__(self, model: nn.Module, offset: np.ndarray, calibration: Calibration | None = None) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        head = self.model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise TypeError(f"expected a linear classifier head, got {type(head).__name__}")
        k = head.out_features
        calibration = calibration or Calibration.identity(k)
        parts = {
            "offset": offset,
            "calibration scale": calibration.scale,
            "calibration bias": calibration.bias,
        }
        for name, values in parts.items():
            if np.shape(values) != (k,):
                raise ValueError(f"{name} has shape {np.shape(values)}, expected ({k},)")
            if not np.isfinite(values).all():
                raise ValueError(f"{name} must be finite")
        if not (np.asarray(calibration.scale) > 0).all():
            raise ValueError("calibration scale must be positive")
        scale, shift = (
            torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=head.weight.dtype)
            for v in (calibration.scale, np.asarray(calibration.bias) + np.asarray(offset))
        )
        with torch.no_grad():
            head.weight.mul_(scale[:, None])
            head.bias.mul_(scale).add_(shift)
        self.calibration = calibration

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, logits.softmax(dim=-1)
