"""The training engine shared by both stages: one epoch of optimisation, and evaluation.

The stages differ only in what they hand in: ``loss_fn(model, images, targets) -> loss`` is the
MAE reconstruction loss for MGP and mixup + the balanced loss for BFT. Everything else, gradient
accumulation, clipping, the per-step lr schedule, mixed precision, DDP gradient sync, the NaN check
and the progress bar, lives here once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from timm.scheduler.scheduler import Scheduler
from torch import nn
from tqdm import tqdm

from livt.training.config import ConfigError
from livt.training.distributed import DistEnv, all_gather_cat, all_reduce_mean, unwrap
from livt.training.optim import current_lr

_logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


@dataclass
class EpochStats:
    loss: float
    lr: float
    images_per_s: float
    seconds: float
    step: int  # optimizer steps done after this epoch


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain fp32.

    ``auto`` is bf16 on a CUDA device that supports it and fp32 elsewhere. bf16 on CPU needs
    native bf16 instructions (:func:`cpu_has_native_bf16`); anywhere else it would be slow emulation.
    """
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if precision == "fp32":
        return None
    if precision != "bf16":
        raise ConfigError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision bf16 requested but {torch.cuda.get_device_name(device)} lacks bf16")
    elif not cpu_has_native_bf16():
        raise ConfigError(
            "precision bf16 requested but this CPU has no native bf16 instructions "
            "(AVX512-BF16 or AMX on x86, BF16 on Arm); use --precision fp32"
        )
    return torch.bfloat16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU with native instructions rather than emulation.

    oneDNN's own check passes on any AVX-512 x86 CPU (it converts in software there, slower than
    fp32), so x86 also needs AVX512-BF16 or AMX; on Arm oneDNN's check already requires BF16.
    """
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    if platform.machine().lower() in ("x86_64", "amd64"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


@dataclass(frozen=True)
class StepPlan:
    """How a run's optimizer steps go, the same every epoch."""

    env: DistEnv
    steps_per_epoch: int
    accum_steps: int = 1  # micro-batches a step
    clip_grad: float | None = None
    amp_dtype: torch.dtype | None = None
    progress: bool = True  # a tqdm bar (rank 0)
    epochs: int | None = None  # the run's length, shown as "epoch N/epochs"
    after_step: Callable[[int], None] | None = None  # called with the steps done (a weight EMA's update)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    plan: StepPlan,
    *,
    epoch: int,
    step: int,
) -> EpochStats:
    """Run ``plan.steps_per_epoch`` optimizer steps of ``plan.accum_steps`` micro-batches each.

    ``epoch`` counts from 0 (as checkpoints do); the bar and the messages count from 1. ``step``
    counts optimizer steps before this epoch (it drives the lr schedule). Micro-batches beyond the
    last full accumulation group are skipped, so every step sees the same batch size.

    Raises:
        TrainingDiverged: a NaN/inf loss (checked on every rank, before its backward pass) or gradient.
    """
    model.train()
    env, accum = plan.env, plan.accum_steps
    optimizer.zero_grad(set_to_none=True)
    shown = f"epoch {epoch + 1}" + (f"/{plan.epochs}" if plan.epochs else "")
    bar = tqdm(
        total=plan.steps_per_epoch, desc=shown, disable=not (plan.progress and env.is_main), leave=False
    )
    loss_sum = torch.zeros((), device=env.device)
    micro_batches = images_seen = 0
    start = time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        if i >= plan.steps_per_epoch * accum:
            break
        if i % accum == 0:
            scheduler.step_update(step)
        syncs = (i + 1) % accum == 0
        where = f"step {step} ({shown}, lr {current_lr(optimizer):.3g})"
        mean_loss = _backward(model, loss_fn, images, targets, plan, syncs=syncs, where=where)
        loss_sum += mean_loss
        micro_batches += 1
        images_seen += images.shape[0] * env.world_size
        if syncs:
            _optimizer_step(model, optimizer, plan.clip_grad, where)
            step += 1
            if plan.after_step is not None:
                plan.after_step(step)
            bar.update(1)
            bar.set_postfix(
                loss=f"{mean_loss.item():.4f}",
                lr=f"{current_lr(optimizer):.2e}",
                img_s=f"{images_seen / (time.perf_counter() - start):.0f}",
            )
    bar.close()
    seconds = time.perf_counter() - start
    return EpochStats(
        loss=(loss_sum / max(1, micro_batches)).item(),
        lr=current_lr(optimizer),
        images_per_s=images_seen / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        step=step,
    )


_STOPPED = (
    "stopped before updating, the last saved checkpoint is intact (lower --blr/--lr or set --clip-grad)"
)


def _backward(
    model: nn.Module,
    loss_fn: LossFn,
    images: torch.Tensor,
    targets: torch.Tensor,
    plan: StepPlan,
    *,
    syncs: bool,
    where: str,
) -> torch.Tensor:
    """Forward and backward of one micro-batch; its loss averaged over ranks (checked finite first)."""
    env = plan.env
    images = images.to(env.device, non_blocking=True)
    targets = targets.to(env.device, non_blocking=True)
    # DDP all-reduces gradients on every backward unless told to wait for the last micro-batch.
    sync_ctx = contextlib.nullcontext() if syncs or not env.distributed else model.no_sync()
    with sync_ctx:
        with autocast(env.device, plan.amp_dtype):
            loss = loss_fn(model, images, targets)
        mean_loss = all_reduce_mean(loss.detach().float(), env)
        if not math.isfinite(mean_loss.item()):
            raise TrainingDiverged(f"loss is {mean_loss.item()} at {where}; {_STOPPED}")
        (loss / plan.accum_steps).backward()
    return mean_loss


def _optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, clip_grad: float | None, where: str
) -> None:
    # A finite loss can still give inf/NaN gradients (bf16 overflow): never step on them, or the
    # next checkpoint would save NaN weights.
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad or math.inf)
    if not torch.isfinite(grad_norm):
        raise TrainingDiverged(f"gradient norm is {grad_norm.item()} at {where}; {_STOPPED}")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    env: DistEnv,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "eval",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, C)`` (float32) and targets ``(N,)`` on CPU, gathered over ranks in dataset order.

    Each rank's loader must hold its :func:`~livt.training.distributed.shard_range` of the data set.
    """
    model.eval()
    device = env.device
    logits, targets = [], []
    for images, target in tqdm(loader, desc=desc, disable=not (progress and env.is_main), leave=False):
        with autocast(device, amp_dtype):
            out = model(images.to(device, non_blocking=True))
        logits.append(out.float())
        targets.append(target.to(device))
    num_classes = unwrap(model).num_classes
    logits_t = torch.cat(logits) if logits else torch.empty((0, num_classes), device=device)
    targets_t = torch.cat(targets) if targets else torch.empty((0,), dtype=torch.long, device=device)
    return all_gather_cat(logits_t, env).cpu(), all_gather_cat(targets_t, env).cpu()
