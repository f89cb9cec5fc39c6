"""Setup shared by the stages: the run's life (folder, log, tracker), seeding, data sets, the model's
input size, the batch and the optimisation, checkpoint metadata and resumable state.

Kept apart from ``pretrain.py`` / ``finetune.py`` so those read top to bottom as the recipe of
their stage and nothing else. A stage body sets up everything it will read (every split, the
model, the loss) and then calls :func:`start_run`, which is where the run folder comes into being:
a setup that fails leaves nothing on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn

import livt
from livt.data import build_dataset, infer_options
from livt.training import engine
from livt.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    find_checkpoint,
    load_model_weights,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
)
from livt.training.config import ConfigError, TrainConfig
from livt.training.distributed import (
    DistEnv,
    all_gather_objects,
    barrier,
    init_distributed,
    unwrap,
    wrap_model,
)
from livt.training.loaders import EpochLoader, build_train_loader
from livt.training.optim import (
    build_optimizer,
    build_scheduler,
    effective_batch_size,
    scaled_lr,
    warmup_steps_for,
)
from livt.training.progress import EPOCH_LINE
from livt.training.rundir import (
    RunFolder,
    append_history,
    commit_run_dir,
    plan_run_dir,
    run_log,
    truncate_history,
)
from livt.training.tracking import Tracker, check_tracker, open_tracker

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def run_stage(
    cfg: TrainConfig,
    body: Callable[..., Path],
    *,
    resume_run: bool,
    overwrite: bool,
    progress: bool,
) -> Path:
    """Join the process group, fill in what the data set infers, plan the run folder (nothing
    written yet), seed, then ``body(cfg, folder, env, amp_dtype=..., progress=...)``, which sets the
    stage up, trains and returns the run folder."""
    env = init_distributed(cfg.device)
    with run_log(env.is_main):
        cfg = resolve_data_options(cfg)
        folder = plan_run_dir(cfg, resume=resume_run, overwrite=overwrite)
        # Every rank has checked the folder before rank 0 creates it (start_run): one that looked
        # afterwards would find rank 0's fresh config.yaml.
        barrier(env)
        check_tracker(cfg.logger)
        amp_dtype = engine.resolve_precision(cfg.precision, env.device)
        seed_everything(cfg.seed + env.rank)
        return body(cfg, folder, env, amp_dtype=amp_dtype, progress=progress)


def resolve_data_options(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the options its data set reads from the files (an image folder's size, channels and
    normalisation) filled in, so config.yaml and meta.json record what the run used."""
    try:
        inferred = infer_options(cfg.dataset, cfg.data_root, **cfg.dataset_options)
    except ValueError as exc:  # unknown data set, bad option value
        raise ConfigError(f"data set {cfg.dataset!r}: {exc}") from exc
    return dataclasses.replace(cfg, dataset_options={**cfg.dataset_options, **inferred}) if inferred else cfg


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python ``random`` (timm's RandAugment and random erasing use the latter)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def load_split(cfg: TrainConfig, split: str, transform: Callable | None = None) -> Any:
    """``build_dataset`` for ``split`` of ``cfg.dataset``; the folder it was read from is logged."""
    try:
        dataset = build_dataset(
            cfg.dataset, split, data_root=cfg.data_root, transform=transform, **cfg.dataset_options
        )
    except ValueError as exc:  # unknown data set or option, bad option value
        raise ConfigError(f"data set {cfg.dataset!r}: {exc}") from exc
    log_source(cfg.dataset, split, dataset)
    return dataset


def log_source(name: str, split: str, dataset: Any) -> None:
    """Log the folder ``split`` of data set ``name`` was read from: train.log names the copy a run used."""
    where = f"read from {dataset.source_dir}" if dataset.source_dir else "generated (no files read)"
    _logger.info("%s %s split: %d images %s", name, split, len(dataset), where)


def input_size(cfg: TrainConfig, native: int, patch_size: int) -> int:
    """The model's input size: ``--img-size``, else the data set's own size, made a multiple of the patch."""
    if cfg.img_size is not None:
        return cfg.img_size
    size = max(patch_size, round(native / patch_size) * patch_size)
    if size != native:
        _logger.info(
            "input size %d px: the data set's %d px to the nearest multiple of the %d px patch (--img-size)",
            size, native, patch_size,
        )  # fmt: skip
    return size


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


@dataclass
class Optimisation:
    """The training loader and the optimizer with its per-step schedule, as a stage's setup builds them."""

    loader: EpochLoader
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    batch_size: int  # per device and micro-batch, after the floor of steps per epoch
    effective_batch: int
    lr: float
    steps_per_epoch: int


def build_optimisation(
    cfg: TrainConfig,
    model: nn.Module,
    train_set: Any,
    env: DistEnv,
    *,
    layer_decay: float | None = None,
    even_batch: bool = False,
) -> Optimisation:
    """The loader, AdamW (lr by the linear rule unless ``--lr``) and the warm-up + cosine schedule."""
    batch_size = fit_batch_size(cfg, len(train_set), env, even=even_batch)
    loader = build_train_loader(train_set, batch_size=batch_size, seed=cfg.seed, env=env, workers=cfg.workers)
    steps_per_epoch = len(loader) // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(f"an epoch has {len(loader)} batches, fewer than --accum-steps {cfg.accum_steps}")
    effective = effective_batch_size(batch_size, cfg.accum_steps, env.world_size)
    lr = cfg.lr * batch_size / cfg.batch_size if cfg.lr else scaled_lr(cfg.blr, effective)
    optimizer = build_optimizer(
        model, lr=lr, weight_decay=cfg.weight_decay, betas=cfg.betas, layer_decay=layer_decay
    )
    scheduler = build_scheduler(
        optimizer,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=warmup_steps_for(cfg.warmup_epochs, steps_per_epoch),
        min_lr=cfg.min_lr,
    )
    return Optimisation(loader, optimizer, scheduler, batch_size, effective, lr, steps_per_epoch)


def fit_batch_size(cfg: TrainConfig, images: int, env: DistEnv, *, even: bool = False) -> int:
    """``cfg.batch_size``, or the largest batch giving ``cfg.min_steps_per_epoch`` steps an epoch.

    A recipe's batch made for a large data set gives a small one a step or two an epoch (drop_last
    throws the rest away), and a run of so few updates learns little; a smaller batch with the lr
    scaled by the same linear rule (done by the caller) keeps the recipe's schedule meaningful.
    ``even``: mixup needs an even batch.
    """
    per_step = cfg.accum_steps * env.world_size
    steps = images // (cfg.batch_size * per_step)
    if cfg.min_steps_per_epoch == 0 or steps >= cfg.min_steps_per_epoch:
        return cfg.batch_size
    batch = images // (per_step * cfg.min_steps_per_epoch)
    batch = max(batch - batch % 2, 2) if even else max(batch, 1)
    _logger.warning(
        "batch size %d -> %d: %d training images give %d optimizer step(s) an epoch at %d, fewer than "
        "--min-steps-per-epoch %d; the lr follows by the linear rule (x %.3g); --min-steps-per-epoch 0 "
        "keeps the batch",
        cfg.batch_size, batch, images, steps, cfg.batch_size, cfg.min_steps_per_epoch, batch / cfg.batch_size,
    )  # fmt: skip
    return batch


@dataclass
class Run:
    """A run under way: where it writes, its model (and the wrapped one that trains) and optimisation."""

    cfg: TrainConfig
    env: DistEnv
    run_dir: Path
    model: nn.Module  # unwrapped, uncompiled: what checkpoints hold
    train_model: nn.Module
    opt: Optimisation
    amp_dtype: torch.dtype | None
    progress: bool
    tracker: Tracker
    start_epoch: int
    step: int
    best: float | None
    ema: ModelEmaV3 | None = None  # an EMA of ``model``'s weights, updated after every step

    @property
    def scored_model(self) -> nn.Module:
        """The model that is scored and kept as best: the weight EMA where there is one."""
        return self.ema.module if self.ema is not None else self.train_model

    @property
    def best_weights(self) -> nn.Module:
        """What ``checkpoints/best`` holds: the scored model, unwrapped."""
        return self.ema.module if self.ema is not None else self.model

    def epochs(self) -> range:
        return range(self.start_epoch, self.cfg.epochs)

    def train_epoch(self, epoch: int, loss_fn: engine.LossFn) -> engine.EpochStats:
        """One epoch of optimizer steps (``epoch`` counted from 0, as checkpoints and metrics.jsonl do)."""
        self.opt.loader.set_epoch(epoch)
        plan = engine.StepPlan(
            self.env, self.opt.steps_per_epoch, self.cfg.accum_steps, self.cfg.clip_grad, self.amp_dtype,
            self.progress, self.cfg.epochs,
            after_step=None if self.ema is None else lambda step: self.ema.update(self.model, step=step),
        )  # fmt: skip
        stats = engine.train_one_epoch(
            self.train_model, self.opt.loader, loss_fn, self.opt.optimizer, self.opt.scheduler, plan,
            epoch=epoch, step=self.step,
        )  # fmt: skip
        self.step = stats.step
        return stats

    def save_last(self, meta: dict[str, Any], epoch: int) -> None:
        """Save ``checkpoints/last`` with everything needed to continue after ``epoch``.

        Collective: every rank contributes its RNG state, rank 0 writes.
        """
        rng = all_gather_objects(capture_rng_state(), self.env)
        if not self.env.is_main:
            return
        state = {
            "optimizer": self.opt.optimizer.state_dict(),
            "scheduler": self.opt.scheduler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "best_metric": self.best,
            "rng": rng,
        }
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        meta = {**meta, "epoch": epoch, "step": self.step}
        save_checkpoint(self.run_dir / "checkpoints" / "last", self.model, meta, state)

    def record_epoch(self, epoch: int, stats: engine.EpochStats, val: dict[str, Any] | None = None,
                     note: str = "") -> None:  # fmt: skip
        """The epoch's row of ``metrics.jsonl`` (rank 0), its tracker scalars and its log line.

        ``val``: the epoch's val scores (``val`` of the row, ``val/*`` scalars); ``note`` goes after
        the training loss in the line.
        """
        row = {"epoch": epoch, "step": self.step, "train_loss": stats.loss, "lr": stats.lr,
               "images_per_s": stats.images_per_s, "time": stats.seconds}  # fmt: skip
        if val is not None:
            row["val"] = val
        if self.env.is_main:
            append_history(self.run_dir, row)
        self.track(epoch, {
            "train/loss": stats.loss, "train/lr": stats.lr, "train/images_per_s": stats.images_per_s,
            **{f"val/{k}": v for k, v in (val or {}).items()},
        })  # fmt: skip
        _logger.info(
            "epoch %d/%d  loss %.4f%s  lr %.3g  %.0f img/s  %.1f s",
            epoch + 1, self.cfg.epochs, stats.loss, note, stats.lr, stats.images_per_s, stats.seconds,
            extra=EPOCH_LINE,
        )  # fmt: skip

    def track(self, epoch: int, scalars: dict[str, float | None]) -> None:
        """Send ``scalars`` to the experiment tracker, at the epoch counted from 1."""
        if self.env.is_main:
            self.tracker.log(epoch + 1, scalars)


@contextlib.contextmanager
def start_run(
    cfg: TrainConfig,
    folder: RunFolder,
    env: DistEnv,
    model: nn.Module,
    opt: Optimisation,
    *,
    amp_dtype: torch.dtype | None,
    progress: bool,
    ema_decay: float = 0.0,
) -> Iterator[Run]:
    """Resume if asked, wrap the model, then create the run folder: the setup is done, training starts.

    ``ema_decay > 0`` keeps an EMA of the weights (warmed up: the average follows the weights
    closely over the first steps, when the fresh head moves most).
    """
    start_epoch, step, best, ema = 0, 0, None, None
    if ema_decay > 0:
        ema = ModelEmaV3(model, decay=ema_decay, use_warmup=True)
    if folder.resume:
        start_epoch, step, best = _resume(folder.path, model, opt.optimizer, opt.scheduler, env, ema)
    train_model = wrap_model(torch.compile(model) if cfg.compile else model, env)
    run_dir = commit_run_dir(folder, cfg) if env.is_main else None
    run_dir = Path(all_gather_objects(None if run_dir is None else str(run_dir), env)[0])
    tracker = open_tracker(cfg, run_dir, enabled=env.is_main)
    run = Run(
        cfg, env, run_dir, model, train_model, opt, amp_dtype, progress, tracker, start_epoch, step, best, ema
    )
    try:
        yield run
    except KeyboardInterrupt:
        if env.is_main:
            if (run_dir / "checkpoints" / "last").is_dir():
                _logger.warning(
                    "interrupted: continue with livt-train %s --resume --out %s", cfg.stage, run_dir
                )
            else:
                _logger.warning("interrupted before the first checkpoint of %s: nothing to resume", run_dir)
        raise
    finally:
        tracker.close()


def _resume(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    env: DistEnv,
    ema: ModelEmaV3 | None,
) -> tuple[int, int, float | None]:
    """Load ``checkpoints/last`` into model, optimizer, scheduler, the weight EMA and the RNGs.

    Returns ``(start_epoch, step, best_metric)``.
    """
    ckpt = find_checkpoint(run_dir, "last")
    state = load_training_state(ckpt)
    unwrap(model).load_state_dict(load_model_weights(ckpt))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        if "ema" not in state:
            raise CheckpointError(f"{ckpt} was saved without a weight EMA: resume it with --ema-decay 0")
        ema.module.load_state_dict(state["ema"])
    rng = state["rng"]
    if len(rng) != env.world_size:
        _logger.warning(
            "resuming %d process(es) from a %d-process run: RNG streams differ", env.world_size, len(rng)
        )
    restore_rng_state(rng[env.rank % len(rng)])
    start_epoch = state["epoch"] + 1
    if env.is_main:
        truncate_history(run_dir, start_epoch)
    _logger.info("resumed from %s after epoch %d (step %d)", ckpt, start_epoch, state["step"])
    return start_epoch, state["step"], state["best_metric"]
