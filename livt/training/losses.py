"""Classification losses for long-tailed training, built by name from the training class counts.

Every loss is an ``nn.Module`` whose class statistics (counts, logit bias, class weights, margins)
are registered buffers, so they follow the module to the training device. ``loss(logits, target)``
takes raw logits ``(N, C)`` and either class indices ``(N,)`` or a soft target ``(N, C)`` such as
timm's ``Mixup`` produces. Index targets are turned into the same soft distribution with label
smoothing (``1 - smoothing + smoothing / C`` on, ``smoothing / C`` off), so a one-hot soft target
and the matching index target give the same loss.

The balanced losses (``bal-bce``, ``bal-ce``) add the training prior to the logits only inside the
loss: the model's raw logits are the balanced predictions. ``logit_bias`` is exactly
``livt.prior.prior_offset(pi_train, name, tau, rule="loss")``, the offset export folds in for
``prior="train"`` under ``--prior-rule loss`` (the default rule, Bayes', folds ``log pi`` instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LOSSES",
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
    loss that adds no prior to the logits).
    """

    tau: float = 0.0

    def __init__(self, class_counts: Sequence[int] | Tensor, smoothing: float = 0.0) -> None:
        super().__init__()
        counts = _validate_counts(class_counts)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.num_classes = counts.numel()
        self.smoothing = float(smoothing)
        self.register_buffer("class_counts", counts)

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
            one_hot = F.one_hot(target, self.num_classes).float()
            return one_hot * (1.0 - self.smoothing) + self.smoothing / self.num_classes
        if target.shape != logits.shape or not target.is_floating_point():
            raise ValueError(
                "target must be class indices (N,) of an integer dtype or a float soft target "
                f"(N, C) matching the logits {tuple(logits.shape)}; got {tuple(target.shape)} "
                f"{target.dtype}"
            )
        return target.float()

    def smoothing_conflict(self, classes: Sequence[str] | None = None) -> str | None:
        """Why label smoothing will make the rarest class win over the head class's own images, or None.

        A loss with a prior in its logits and smoothed targets has a finite optimum for every balanced
        logit; where the rarest class's optimum passes the head class's on the head class's own
        images, head images are predicted as the rare class. None for a loss without a prior.
        """
        return None

    def _on_off(self) -> tuple[float, float]:
        """The smoothed target of an image of class 0, as training builds it: on at 0, off elsewhere."""
        target = self.target_distribution(torch.zeros(1, self.num_classes), torch.zeros(1, dtype=torch.long))
        return float(target[0, 0]), float(target[0, 1])

    def _conflict_applies(self) -> bool:
        return self.smoothing > 0 and self.tau > 0 and self.num_classes >= 2

    def _name(self, classes: Sequence[str] | None, c: int) -> str:
        return repr(classes[c]) if classes is not None else f"class {c}"

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, smoothing={self.smoothing}, tau={self.tau}"


# What the conflict warning advises, whichever loss it comes from.
_CONFLICT_ADVICE = (
    "expect the largest class to be predicted as the rarest; --smoothing 0 (or a lower --tau) avoids it"
)


class BinaryCrossEntropy(LongTailLoss):
    """Sigmoid BCE summed over classes; with ``tau > 0`` it is Bal-BCE (LiVT, Xu et al. 2023).

    ``loss = C * mean_{n,c} BCEWithLogits(z + tau * (log pi - log(1 - pi)), t)``: the factor ``C``
    turns the mean over classes into a sum. ``tau = 0`` is plain BCE.
    """

    def __init__(
        self, class_counts: Sequence[int] | Tensor, smoothing: float = 0.1, tau: float = 0.0
    ) -> None:
        super().__init__(class_counts, smoothing)
        self.tau = float(tau)
        pi = _train_prior(self.class_counts)
        self.register_buffer("logit_bias", (self.tau * (pi.log() - torch.log1p(-pi))).float())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target_distribution(logits, target)
        z = logits.float() + self.logit_bias
        return self.num_classes * F.binary_cross_entropy_with_logits(z, t)

    def smoothing_conflict(self, classes: Sequence[str] | None = None) -> str | None:
        """The conflict for sigmoids: each balanced logit has its own optimum.

        ``z_c`` goes to ``logit(on) - b_c`` on its class's images and to ``logit(off) - b_c`` on
        every other image (``b_c = tau * log-odds(pi_c)``). Where the bias gap between the head and
        the rarest class exceeds ``logit(on) - logit(off)``, the rarest class's optimum on any image
        is above the head class's on its own. With few classes (``off = smoothing / C`` is large)
        that takes far less imbalance than with many.
        """
        if not self._conflict_applies():
            return None
        on, off = self._on_off()
        head, rare = int(self.logit_bias.argmax()), int(self.logit_bias.argmin())
        z_head = math.log(on / (1 - on)) - float(self.logit_bias[head])
        z_rare = math.log(off / (1 - off)) - float(self.logit_bias[rare])
        if z_rare <= z_head:
            return None
        return (
            f"label smoothing {self.smoothing:g} with tau {self.tau:g} over these class counts pulls the "
            f"balanced logit of {self._name(classes, rare)} (the rarest) to {z_rare:+.1f} on every image, "
            f"above the {z_head:+.1f} of {self._name(classes, head)} (the largest) on its own images: "
            + _CONFLICT_ADVICE
        )


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
    ) -> None:
        super().__init__(class_counts, smoothing)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.register_buffer("logit_bias", (self.tau * _train_prior(self.class_counts).log()).float())
        weight = (
            torch.ones(self.num_classes) if beta is None else class_balanced_weights(self.class_counts, beta)
        )
        self.register_buffer("class_weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target_distribution(logits, target)
        return _weighted_soft_ce(logits.float() + self.logit_bias, t, self.class_weight, self.gamma)

    def smoothing_conflict(self, classes: Sequence[str] | None = None) -> str | None:
        """The conflict for the softmax: only differences of logits have an optimum.

        On an image of the head class ``h`` the smoothed target is met where
        ``z_c - z_h = log(off / on) - (b_c - b_h)`` with ``b = tau * log(pi)``; it crosses zero for
        the rarest class once ``tau * log(n_h / n_rare)`` exceeds ``log(on / off)`` (IF 91 for ten
        classes at smoothing 0.1 and tau 1). Class weights and focusing move that optimum, so the
        check is made for the plain softmax only, which is what Bal-CE is.
        """
        if not self._conflict_applies():
            return None
        on, off = self._on_off()
        head, rare = int(self.logit_bias.argmax()), int(self.logit_bias.argmin())
        gap = math.log(off / on) - float(self.logit_bias[rare] - self.logit_bias[head])
        if gap <= 0:
            return None
        return (
            f"label smoothing {self.smoothing:g} with tau {self.tau:g} over these class counts puts the "
            f"balanced logit of {self._name(classes, rare)} (the rarest) {gap:+.2f} above that of "
            f"{self._name(classes, head)} (the largest) on the largest class's own images: "
            + _CONFLICT_ADVICE
        )

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
    "bal-ce": (CrossEntropy, {"smoothing": 0.0, "tau": 1.0}),
    "bal-bce": (BinaryCrossEntropy, {"smoothing": 0.1, "tau": 1.0}),
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
