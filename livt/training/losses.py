"""Classification losses for long-tailed training, built by name from the training class counts.

Every loss is an ``nn.Module`` whose class statistics (counts, logit bias, class weights, margins)
are registered buffers, so they follow the module to the training device. ``loss(logits, target)``
takes raw logits ``(N, C)`` and either class indices ``(N,)`` or a soft target ``(N, C)`` such as
timm's ``Mixup`` produces (unsmoothed: the loss smooths every target itself). A target ``t`` (one-hot
for an index) is smoothed to ``(1 - s) t + s q``, so a one-hot soft target and the matching index
target give the same loss.

The balanced losses (``bal-bce``, ``bal-ce``) add the training prior to the logits only inside the
loss: the model's raw logits are the balanced predictions. ``logit_bias`` is exactly
``livt.prior.prior_offset(pi_train, name, tau, rule="loss")``, the offset export folds in for
``prior="train"`` under ``--prior-rule loss`` (the default rule, Bayes', folds ``log pi`` instead).

Label smoothing toward the prior
--------------------------------
The paper smooths toward the uniform ``q = 1 / C``; ``smoothing_toward="prior"`` (the default)
smooths toward ``q = softmax(b)``, the prior the loss adds (``b_c = tau log pi_c`` for the softmax,
``tau log(pi_c / (1 - pi_c))`` for sigmoids). Why: a smoothed target has a finite optimum, and the
loss sees ``z + b``, so it is least where ``z + b`` reproduces ``t``: ``z_c = logit(t_c) - b_c`` for
sigmoids, ``z_c = log t_c - b_c + const`` for the softmax. On an image of class ``y`` every other
class ``c`` gets ``t_c = s q_c``:

- uniform ``q``: ``z_c = logit(s / C) - b_c``, the higher the rarer ``c``; class ``c`` passes ``y``
  on ``y``'s own images once ``b_y - b_c`` exceeds ``logit(on) - logit(off)`` (sigmoids) or
  ``log(on / off)`` (softmax), ``on = 1 - s + s / C``, ``off = s / C``. At ten classes and
  ``s = 0.1``: Bal-CE from IF 91, Bal-BCE between IF 100 and 1000 (tau 1), at IF 100 from tau 1.37.
- ``q = softmax(b)``: ``log(s q_c) - b_c = log(s / Z)`` (``Z = sum_c exp(b_c)``) is the same for
  every class, so the prior cancels. Softmax: ``z_c - z_y = log(s q_y / (1 - s + s q_y)) <= log s``
  for every ``c != y``. Sigmoids, with ``o_c = s q_c``: ``z_y - z_c = logit(1 - s + o_y) - logit(o_y)
  - log(1 - o_y) + log(1 - o_c) >= 2 logit(1 - s) + log(1 - s)`` (4.3 at ``s = 0.1``), positive for
  ``s < 0.46``. Either way every class is first on its own images at any counts and tau.

The smoothed mass stays ``s``, and ``q`` is uniform at equal counts or without a prior (``tau = 0``,
CE, BCE, LDAM): there it is the paper's smoothing. Only the off targets move (the rare classes' go to
almost 0, the head's up), so the positive target, the gradient a rare image gets, stays ``>= 1 - s``.
``smoothing_conflict`` solves the optimum for the targets in use and names a crossing where one is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from livt.prior import SMOOTHING_TOWARD

__all__ = [
    "LOSSES",
    "SMOOTHING_TOWARD",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "LDAMLoss",
    "LongTailLoss",
    "build_loss",
    "class_balanced_weights",
    "loss_defaults",
]


class LongTailLoss(nn.Module):
    """Base class: validated class counts, target handling and the per-epoch hook.

    Subclasses set ``tau``, the logit-adjustment strength recorded in checkpoint metadata (0 for a
    loss that adds no prior to the logits), and register that prior with ``_set_logit_bias``.
    ``smoothing_distribution`` is the ``q`` targets are smoothed toward.
    """

    tau: float = 0.0

    def __init__(
        self, class_counts: Sequence[int] | Tensor, smoothing: float = 0.0, smoothing_toward: str = "prior"
    ) -> None:
        super().__init__()
        counts = _validate_counts(class_counts)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if smoothing_toward not in SMOOTHING_TOWARD:
            raise ValueError(
                f"smoothing_toward must be one of {list(SMOOTHING_TOWARD)}, got {smoothing_toward!r}"
            )
        self.num_classes = counts.numel()
        self.smoothing = float(smoothing)
        self.smoothing_toward = smoothing_toward
        self.register_buffer("class_counts", counts)
        self.register_buffer(
            "smoothing_distribution", torch.full((self.num_classes,), 1.0 / self.num_classes)
        )

    def _set_logit_bias(self, bias: Tensor) -> None:
        """Register the prior the loss adds to the logits, and smooth toward it where asked."""
        self.register_buffer("logit_bias", bias.float())
        if self.smoothing_toward == "prior":
            self.register_buffer("smoothing_distribution", bias.double().softmax(0).float())

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine at the start of every epoch; a no-op unless the loss has a schedule."""

    def target_distribution(self, logits: Tensor, target: Tensor) -> Tensor:
        """Check shapes and return the target as a float ``(N, C)`` distribution."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        if target.ndim == 1 and not target.is_floating_point():
            if target.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"target has {target.shape[0]} labels for a batch of {logits.shape[0]} logits"
                )
            target = F.one_hot(target, self.num_classes)
        elif target.shape != logits.shape or not target.is_floating_point():
            raise ValueError(
                "target must be class indices (N,) of an integer dtype or a float soft target "
                f"(N, C) matching the logits {tuple(logits.shape)}; got {tuple(target.shape)} "
                f"{target.dtype}"
            )
        return target.float() * (1.0 - self.smoothing) + self.smoothing * self.smoothing_distribution

    def balanced_optimum(self) -> Tensor | None:
        """Row ``y``: the balanced logits (float64) where the loss is least on an image of class ``y``.

        Defined where smoothing makes the optimum finite and a prior is added to the logits; None
        otherwise (a loss whose optimum does not depend on the class counts has no crossing).
        """
        return None

    def smoothing_conflict(self, classes: Sequence[str] | None = None) -> str | None:
        """Why label smoothing will put another class first on some class's own images, or None.

        The worst pair of ``balanced_optimum``: the class ``c`` whose optimum passes class ``y``'s by
        the most on ``y``'s own images (under uniform smoothing, the rarest on the largest's).
        """
        z = self.balanced_optimum()
        if z is None:
            return None
        lead = z - z.diagonal()[:, None]  # lead[y, c]: how far c is above y on y's images
        lead.fill_diagonal_(-math.inf)
        worst = int(lead.argmax())
        y, c = divmod(worst, self.num_classes)
        if lead[y, c] <= 0:
            return None
        return (
            f"label smoothing {self.smoothing:g} toward {self.smoothing_toward} with tau {self.tau:g} over "
            f"these class counts puts the balanced logit of {self._name(classes, c)} {float(lead[y, c]):+.2f} "
            f"above that of {self._name(classes, y)} on {self._name(classes, y)}'s own images: expect "
            f"{self._name(classes, y)} to be predicted as {self._name(classes, c)}; --smoothing-toward "
            "prior (the default) keeps every class first on its own images, as do --smoothing 0 or a lower --tau"
        )

    def _smoothed_targets(self) -> Tensor:
        """Row ``y``: the smoothed target of an image of class ``y``, as training builds it (float64)."""
        eye = torch.arange(self.num_classes)
        return self.target_distribution(torch.zeros(self.num_classes, self.num_classes), eye).double()

    def _conflict_applies(self) -> bool:
        return self.smoothing > 0 and self.tau > 0 and self.num_classes >= 2

    def _name(self, classes: Sequence[str] | None, c: int) -> str:
        return repr(classes[c]) if classes is not None else f"class {c}"

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, smoothing={self.smoothing}, "
            f"smoothing_toward={self.smoothing_toward}, tau={self.tau}"
        )


class BinaryCrossEntropy(LongTailLoss):
    """Sigmoid BCE summed over classes; with ``tau > 0`` it is Bal-BCE (LiVT, Xu et al. 2023).

    ``loss = C * mean_{n,c} BCEWithLogits(z + tau * (log pi - log(1 - pi)), t)``: the factor ``C``
    turns the mean over classes into a sum. ``tau = 0`` is plain BCE.
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        smoothing: float = 0.1,
        tau: float = 0.0,
        smoothing_toward: str = "prior",
    ) -> None:
        super().__init__(class_counts, smoothing, smoothing_toward)
        self.tau = float(tau)
        pi = _train_prior(self.class_counts)
        self._set_logit_bias(self.tau * (pi.log() - torch.log1p(-pi)))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target_distribution(logits, target)
        z = logits.float() + self.logit_bias
        return self.num_classes * F.binary_cross_entropy_with_logits(z, t)

    def balanced_optimum(self) -> Tensor | None:
        """Sigmoids: each balanced logit has its own optimum, ``z_c = logit(t_c) - b_c``."""
        if not self._conflict_applies():
            return None
        return torch.logit(self._smoothed_targets()) - self.logit_bias.double()


class CrossEntropy(LongTailLoss):
    """Softmax cross-entropy with optional logit adjustment, class-balanced weights and focusing.

    Per sample ``-sum_c w_c * (1 - p_c)^gamma * t_c * log p_c`` with ``p = softmax(z + tau * log pi)``,
    averaged over the batch (divided by N, also when weighted, so index and soft targets agree):

    - ``tau > 0``: logit adjustment / Bal-CE (Menon et al. 2021);
    - ``beta``: class-balanced weights from the effective number of samples (Cui et al. 2019),
      ``w_c = (1 - beta) / (1 - beta^n_c)`` normalised to sum to C; ``None`` means all ones;
    - ``gamma > 0``: softmax focal loss (Lin et al. 2017); ``gamma = 0`` is cross-entropy.
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        smoothing: float = 0.0,
        tau: float = 0.0,
        beta: float | None = None,
        gamma: float = 0.0,
        smoothing_toward: str = "prior",
    ) -> None:
        super().__init__(class_counts, smoothing, smoothing_toward)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.tau = float(tau)
        self.gamma = float(gamma)
        self._set_logit_bias(self.tau * _train_prior(self.class_counts).log())
        weight = (
            torch.ones(self.num_classes) if beta is None else class_balanced_weights(self.class_counts, beta)
        )
        self.register_buffer("class_weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target_distribution(logits, target)
        return _weighted_soft_ce(logits.float() + self.logit_bias, t, self.class_weight, self.gamma)

    def balanced_optimum(self) -> Tensor | None:
        """The softmax: only differences have an optimum, ``z_c = log t_c - b_c`` up to a constant a row.

        Class weights and focusing move that optimum, so it is given for the plain softmax only,
        which is what Bal-CE is.
        """
        if not self._conflict_applies():
            return None
        return self._smoothed_targets().log() - self.logit_bias.double()

    def _conflict_applies(self) -> bool:
        plain = self.gamma == 0 and bool((self.class_weight == 1).all())
        return plain and super()._conflict_applies()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


class LDAMLoss(LongTailLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019) with deferred re-weighting (DRW).

    The target class logit is lowered by ``m_c ∝ n_c^(-1/4)`` (largest margin ``max_m``, on the
    rarest class), logits are scaled by ``s``, then softmax cross-entropy. Each logit is lowered by
    ``m_c * t_c``, the margin weighted by the target distribution (smoothed, for index targets), so
    a mixup target spreads the margin over its classes and a one-hot target is the original LDAM. Before ``drw_epoch`` (or always, when it is ``None``) every class weighs 1;
    from it on, the class-balanced weights with ``beta``. The engine calls ``set_epoch`` each epoch.
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        smoothing: float = 0.0,
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__(class_counts, smoothing)
        if max_m <= 0 or s <= 0:
            raise ValueError(f"LDAM max_m and s must be > 0, got max_m={max_m}, s={s}")
        self.s = float(s)
        self.drw_epoch = drw_epoch
        self.epoch = 0
        margins = self.class_counts.double().pow(-0.25)
        self.register_buffer("margins", (margins * (max_m / margins.max())).float())
        self.register_buffer("drw_weight", class_balanced_weights(self.class_counts, beta))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def reweighting(self) -> bool:
        """Whether the class-balanced weights are active at the current epoch."""
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target_distribution(logits, target)
        z = self.s * (logits.float() - t * self.margins)
        weight = self.drw_weight if self.reweighting else None
        return _weighted_soft_ce(z, t, weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, drw_epoch={self.drw_epoch}, epoch={self.epoch}"


def class_balanced_weights(class_counts: Tensor, beta: float) -> Tensor:
    """Effective-number weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to C (float32)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}")
    n = class_counts.double()
    # 1 - beta^n computed as -expm1(n * log(beta)) keeps precision for beta close to 1.
    effective = -torch.expm1(n * math.log(beta)) if beta > 0 else torch.ones_like(n)
    weight = (1.0 - beta) / effective
    return (weight * (n.numel() / weight.sum())).float()


_REGISTRY: dict[str, tuple[Callable[..., LongTailLoss], dict[str, Any]]] = {
    "ce": (CrossEntropy, {"smoothing": 0.0}),
    "bce": (BinaryCrossEntropy, {"smoothing": 0.1}),
    "bal-ce": (CrossEntropy, {"smoothing": 0.0, "tau": 1.0, "smoothing_toward": "prior"}),
    "bal-bce": (BinaryCrossEntropy, {"smoothing": 0.1, "tau": 1.0, "smoothing_toward": "prior"}),
    "cb-ce": (CrossEntropy, {"smoothing": 0.0, "beta": 0.9999}),
    "ldam": (
        LDAMLoss,
        {"smoothing": 0.0, "max_m": 0.5, "s": 30.0, "drw_epoch": None, "beta": 0.9999},
    ),
    "focal": (CrossEntropy, {"smoothing": 0.0, "gamma": 2.0}),
}

LOSSES: tuple[str, ...] = tuple(_REGISTRY)


def build_loss(name: str, class_counts: Sequence[int] | Tensor, **options: Any) -> LongTailLoss:
    """Build loss ``name`` for training counts ``class_counts``; ``options`` override its defaults.

    Each loss takes only the options listed by ``loss_defaults(name)``; any other raises.
    """
    defaults = loss_defaults(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"loss {name!r} takes options {sorted(defaults)}, got unknown {unknown}")
    factory, _ = _REGISTRY[name]
    return factory(class_counts, **{**defaults, **options})


def loss_defaults(name: str) -> dict[str, Any]:
    """The options loss ``name`` accepts, with their default values."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
    return dict(_REGISTRY[name][1])


def _validate_counts(class_counts: Sequence[int] | Tensor) -> Tensor:
    try:
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"class_counts must be a list of numbers, got {class_counts!r}") from exc
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(
            f"class_counts must list one count per class for at least 2 classes, got {class_counts!r}"
        )
    if not torch.isfinite(counts).all() or (counts <= 0).any() or (counts != counts.round()).any():
        raise ValueError(
            "class_counts must be positive whole numbers (every class needs a training sample), "
            f"got {counts.tolist()}"
        )
    return counts.long()


def _train_prior(class_counts: Tensor) -> Tensor:
    counts = class_counts.double()
    return counts / counts.sum()


def _weighted_soft_ce(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, gamma: float = 0.0
) -> Tensor:
    log_p = logits.log_softmax(dim=-1)
    per_class = -target * log_p
    if gamma:
        per_class = per_class * (1.0 - log_p.exp()).pow(gamma)
    if weight is not None:
        per_class = per_class * weight
    return per_class.sum(dim=-1).mean()
