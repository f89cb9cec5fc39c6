"""Setup shared by the stages: seeding, data sets, checkpoint metadata and resumable state.

Kept apart from ``pretrain.py`` / ``finetune.py`` so those read top to bottom as the recipe of
their stage and nothing else.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.scheduler.scheduler import Scheduler
from torch import nn

import livt
from livt.data import DatasetInfo, build_dataset
from livt.training.checkpoint import (
    capture_rng_state,
    find_checkpoint,
    load_model_weights,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
)
from livt.training.config import ConfigError, TrainConfig
from livt.training.distributed import DistEnv, all_gather_objects, barrier, init_distributed, unwrap
from livt.training.rundir import log_to_file, prepare_run_dir, truncate_history

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python ``random`` (timm's RandAugment and random erasing use the latter)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def load_split(cfg: TrainConfig, split: str, make_transform: Callable[[DatasetInfo], Callable] | None) -> Any:
    """``build_dataset`` for ``split`` of ``cfg.dataset`` with the transform ``make_transform(info)``."""
    try:
        dataset = build_dataset(cfg.dataset, split, data_root=cfg.data_root, **cfg.dataset_options)
    except ValueError as exc:  # unknown data set or option, bad option value
        raise ConfigError(f"data set {cfg.dataset!r}: {exc}") from exc
    if make_transform is not None:
        dataset.transform = make_transform(dataset.info)
    log_source(cfg.dataset, split, dataset)
    return dataset


def log_source(name: str, split: str, dataset: Any) -> None:
    """Log the folder ``split`` of data set ``name`` was read from: train.log names the copy a run used."""
    where = f"read from {dataset.source_dir}" if dataset.source_dir else "generated (no files read)"
    _logger.info("%s %s split: %d images %s", name, split, len(dataset), where)


def base_meta(
    cfg: TrainConfig, *, model: dict[str, Any], dataset: Any, preprocess: dict[str, Any]
) -> dict[str, Any]:
    """The ``meta.json`` fields that both stages share (docs/architecture.md)."""
    return {
        "format_version": FORMAT_VERSION,
        "livt_version": livt.__version__,
        "stage": cfg.stage,
        "model": model,
        "mae": None,
        "dataset": {"name": cfg.dataset, "data_root": cfg.data_root, "options": dict(cfg.dataset_options)},
        "classes": list(dataset.classes),
        "class_counts": [int(n) for n in dataset.class_counts],
        "loss": None,
        "tau": None,
        "preprocess": preprocess,
    }


def save_last(
    run_dir: Path,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    epoch: int,
    step: int,
    best_metric: float | None,
    env: DistEnv,
) -> None:
    """Save ``checkpoints/last`` with everything needed to continue after ``epoch``.

    Collective: every rank contributes its RNG state, rank 0 writes.
    """
    rng = all_gather_objects(capture_rng_state(), env)
    if not env.is_main:
        return
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "best_metric": best_metric,
        "rng": rng,
    }
    save_checkpoint(
        run_dir / "checkpoints" / "last", unwrap(model), {**meta, "epoch": epoch, "step": step}, state
    )


def resume(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    env: DistEnv,
) -> tuple[int, int, float | None]:
    """Load ``checkpoints/last`` into model, optimizer, scheduler and the RNGs.

    Returns ``(start_epoch, step, best_metric)``.
    """
    ckpt = find_checkpoint(run_dir, "last")
    state = load_training_state(ckpt)
    unwrap(model).load_state_dict(load_model_weights(ckpt))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    if len(rng) != env.world_size:
        _logger.warning(
            "resuming %d process(es) from a %d-process run: RNG streams differ", env.world_size, len(rng)
        )
    restore_rng_state(rng[env.rank % len(rng)])
    start_epoch = state["epoch"] + 1
    if env.is_main:
        truncate_history(run_dir, start_epoch)
    _logger.info("resumed from %s after epoch %d (step %d)", ckpt, state["epoch"], state["step"])
    return start_epoch, state["step"], state["best_metric"]


def run_stage(
    cfg: TrainConfig,
    body: Callable[..., None],
    *,
    resume_run: bool,
    overwrite: bool,
    progress: bool,
) -> Path:
    """Set up the process group and run folder, then ``body(cfg, run_dir, env, ...)`` with its log."""
    env = init_distributed(cfg.device)
    # Rank 0 alone checks and writes the folder, then the others follow: a rank that looked after
    # rank 0 had written config.yaml would find "a run already there" and stop.
    run_dir = Path(cfg.out)
    if env.is_main:
        run_dir = prepare_run_dir(cfg, resume=resume_run, overwrite=overwrite)
    barrier(env)
    with log_to_file(run_dir, env.is_main):
        body(cfg, run_dir, env, resume_run=resume_run, progress=progress)
    return run_dir
