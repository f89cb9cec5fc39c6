"""AdamW with LiVT's parameter groups, and the per-step warm-up + cosine learning-rate schedule.

Both come from timm: ``create_optimizer_v2`` builds the groups (no weight decay on 1-d parameters
and on the model's ``no_weight_decay()`` tokens; layer-wise lr decay through ``lr_scale``), and
``CosineLRScheduler`` honours ``lr_scale`` when it sets each group's lr.
"""

from __future__ import annotations

import math

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn


def effective_batch_size(batch_size: int, accum_steps: int, world_size: int) -> int:
    """Images per optimizer step over all devices."""
    return batch_size * accum_steps * world_size


def scaled_lr(blr: float, effective_batch: int) -> float:
    """The linear scaling rule of MAE/LiVT: ``lr = blr * effective batch / 256``."""
    return blr * effective_batch / 256


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """AdamW over ``model``'s trainable parameters.

    ``layer_decay`` (< 1) scales block ``i`` of a depth-``L`` ViT by ``layer_decay ** (L + 1 - i)``
    (embeddings lowest, head at 1); it needs timm's ``group_matcher``, which the ViT classifier has.
    """
    use_layer_decay = layer_decay is not None and layer_decay < 1.0
    return create_optimizer_v2(
        model,
        opt="adamw",
        lr=lr,
        weight_decay=weight_decay,
        betas=tuple(betas),
        layer_decay=layer_decay if use_layer_decay else None,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
    min_lr: float,
) -> CosineLRScheduler:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine to ``min_lr`` at ``total_steps``.

    Counted in optimizer steps: call ``step_update(step)`` before optimizer step ``step`` (0-based).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def warmup_steps_for(warmup_epochs: float, steps_per_epoch: int) -> int:
    return math.ceil(warmup_epochs * steps_per_epoch)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest group lr (the head's under layer decay): the number worth logging."""
    return max(group["lr"] for group in optimizer.param_groups)
