"""BFT: balanced fine-tuning of the MGP encoder (or a random ViT) with a balanced loss.

Every epoch is scored on the balanced VAL split (carved from the training images) and the best
balanced accuracy is kept as ``checkpoints/best``; the TEST split is read once, at the end, by the
best checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from livt.data import build_eval_transform, build_mixup, build_train_transform, eval_preprocess_config
from livt.models import ViTConfig, create_classifier, load_encoder_weights, vit_config
from livt.training import engine, plots
from livt.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
    save_checkpoint,
)
from livt.training.config import ConfigError, FinetuneConfig
from livt.training.distributed import DistEnv, barrier, unwrap, wrap_model
from livt.training.evaluate import SCALAR_METRICS, write_report
from livt.training.loaders import build_eval_loader, build_train_loader
from livt.training.losses import build_loss, loss_defaults
from livt.training.metrics import compute_metrics
from livt.training.optim import (
    build_optimizer,
    build_scheduler,
    effective_batch_size,
    scaled_lr,
    warmup_steps_for,
)
from livt.training.rundir import append_history, read_history
from livt.training.stage import base_meta, load_split, resume, run_stage, save_last, seed_everything

_logger = logging.getLogger(__name__)

# Shape fields that must agree between the pretrained encoder and the classifier.
_SHAPE_FIELDS = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio")


def finetune(
    cfg: FinetuneConfig, *, resume_run: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run BFT as ``cfg`` says and return the run folder."""
    return run_stage(cfg, _finetune, resume_run=resume_run, overwrite=overwrite, progress=progress)


def _finetune(cfg: FinetuneConfig, run_dir: Path, env: DistEnv, *, resume_run: bool, progress: bool) -> None:
    seed_everything(cfg.seed + env.rank)
    amp_dtype = engine.resolve_precision(cfg.precision, env.device)
    pretrained = _pretrain_checkpoint(cfg.init) if cfg.init else None

    # data: augmented long-tailed train split, balanced val split
    train_set = load_split(cfg, "train", lambda info: _train_transform(cfg, info))
    info = train_set.info
    img_size = cfg.img_size or info.image_size
    val_set = load_split(cfg, "val", lambda info: _eval_transform(cfg, info))
    num_classes = len(train_set.classes)
    train_loader = build_train_loader(
        train_set, batch_size=cfg.batch_size, seed=cfg.seed, env=env, workers=cfg.workers
    )
    val_loader = build_eval_loader(val_set, batch_size=cfg.batch_size, env=env, workers=cfg.workers)
    steps_per_epoch = len(train_loader) // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(
            f"an epoch has {len(train_loader)} batches, fewer than --accum-steps {cfg.accum_steps}"
        )

    # model: the MGP encoder plus a fresh head
    vit = _model_config(cfg, pretrained, img_size=img_size, in_chans=info.channels, num_classes=num_classes)
    model = create_classifier(vit)
    if pretrained is not None:
        _load_encoder(model, vit, pretrained)
    model.to(env.device)

    # loss and mixup
    mixup = build_mixup(num_classes, cfg.mixup, cfg.cutmix, cfg.smoothing)
    if mixup is not None and cfg.batch_size % 2:
        raise ConfigError(f"mixup/cutmix need an even --batch-size, got {cfg.batch_size}")
    criterion = _build_criterion(cfg, train_set.class_counts).to(env.device)

    # optimisation
    batch = effective_batch_size(cfg.batch_size, cfg.accum_steps, env.world_size)
    lr = cfg.lr or scaled_lr(cfg.blr, batch)
    optimizer = build_optimizer(
        model, lr=lr, weight_decay=cfg.weight_decay, betas=cfg.betas, layer_decay=cfg.layer_decay
    )
    scheduler = build_scheduler(
        optimizer,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=warmup_steps_for(cfg.warmup_epochs, steps_per_epoch),
        min_lr=cfg.min_lr,
    )
    start_epoch, step, best = 0, 0, None
    if resume_run:
        start_epoch, step, best = resume(run_dir, model, optimizer, scheduler, env)
    train_model = wrap_model(torch.compile(model) if cfg.compile else model, env)
    _logger.info(
        "finetune %s (%s) on %s: %d train / %d val images, %s loss, effective batch %d, lr %.3g, epochs %d-%d",
        vit.name, f"init {cfg.init}" if cfg.init else "from scratch", cfg.dataset, len(train_set),
        len(val_set), cfg.loss, batch, lr, start_epoch, cfg.epochs - 1,
    )  # fmt: skip

    meta = base_meta(
        cfg,
        model=vit.to_dict(),
        dataset=train_set,
        preprocess=eval_preprocess_config(info, img_size, cfg.crop_pct, cfg.interpolation),
    )
    meta.update(
        mae=pretrained["meta"]["mae"] if pretrained else None, loss=cfg.loss, tau=float(criterion.tau)
    )

    def loss_fn(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if mixup is not None:
            images, targets = mixup(images, targets)
        return criterion(model(images), targets)

    for epoch in range(start_epoch, cfg.epochs):
        train_loader.set_epoch(epoch)
        criterion.set_epoch(epoch)
        stats = engine.train_one_epoch(
            train_model, train_loader, loss_fn, optimizer, scheduler,
            env=env, epoch=epoch, step=step, steps_per_epoch=steps_per_epoch,
            accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad, amp_dtype=amp_dtype, progress=progress,
        )  # fmt: skip
        step = stats.step
        logits, targets = engine.evaluate(
            train_model, val_loader, env=env, amp_dtype=amp_dtype, progress=progress
        )
        val = compute_metrics(logits, targets, train_set.class_counts, many=cfg.many, few=cfg.few)
        val_summary = {k: val[k] for k in SCALAR_METRICS}
        improved = best is None or val["balanced_acc"] > best
        best = val["balanced_acc"] if improved else best
        meta.update(epoch=epoch, step=step, metrics={**val_summary, "per_class": val["per_class"]})
        save_last(
            run_dir, model, meta, optimizer=optimizer, scheduler=scheduler,
            epoch=epoch, step=step, best_metric=best, env=env,
        )  # fmt: skip
        if env.is_main:
            if improved:
                save_checkpoint(run_dir / "checkpoints" / "best", unwrap(model), meta)
            append_history(run_dir, {
                "epoch": epoch, "step": step, "train_loss": stats.loss, "lr": stats.lr,
                "images_per_s": stats.images_per_s, "time": stats.seconds, "val": val_summary,
            })  # fmt: skip
        _logger.info(
            "epoch %d/%d  loss %.4f  lr %.3g  val top1 %.4f  balanced %.4f%s  %.0f img/s  %.1fs",
            epoch, cfg.epochs - 1, stats.loss, stats.lr, val["top1"], val["balanced_acc"],
            "  (best)" if improved else "", stats.images_per_s, stats.seconds,
        )  # fmt: skip

    barrier(env)  # rank 0 has written checkpoints/best; every rank tests that same model
    _test_best(cfg, run_dir, model, env, amp_dtype=amp_dtype, progress=progress, train_set=train_set)


def _test_best(
    cfg: FinetuneConfig,
    run_dir: Path,
    model: torch.nn.Module,
    env: DistEnv,
    *,
    amp_dtype: torch.dtype | None,
    progress: bool,
    train_set: Any,
) -> None:
    """Score the best checkpoint on the test split, once, and write metrics.json and the plots."""
    best_dir = find_checkpoint(run_dir, "best")
    best_meta = load_checkpoint_meta(best_dir)
    model.load_state_dict(load_model_weights(best_dir))
    test_set = load_split(cfg, "test", lambda info: _eval_transform(cfg, info))
    loader = build_eval_loader(test_set, batch_size=cfg.batch_size, env=env, workers=cfg.workers)
    logits, targets = engine.evaluate(
        model, loader, env=env, amp_dtype=amp_dtype, progress=progress, desc="test"
    )
    if not env.is_main:
        return
    report = write_report(
        run_dir, logits, targets, classes=list(train_set.classes), train_counts=list(train_set.class_counts),
        many=cfg.many, few=cfg.few, extra={"best_epoch": best_meta["epoch"], "val": best_meta["metrics"]},
    )  # fmt: skip
    plots.plot_curves(read_history(run_dir), run_dir / "plots" / "curves.png")
    _logger.info(
        "test (best epoch %d): top1 %.4f  balanced %.4f  ece %.4f  tail3 %s",
        best_meta["epoch"], report["top1"], report["balanced_acc"], report["ece"], report["tail3"],
    )  # fmt: skip


def _train_transform(cfg: FinetuneConfig, info: Any) -> Any:
    return build_train_transform(
        info, cfg.img_size or info.image_size, stage="finetune",
        auto_augment=cfg.aa, re_prob=cfg.reprob, scale=(cfg.crop_scale, 1.0),
    )  # fmt: skip


def _eval_transform(cfg: FinetuneConfig, info: Any) -> Any:
    return build_eval_transform(
        info, cfg.img_size or info.image_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation
    )


def _build_criterion(cfg: FinetuneConfig, class_counts: list[int]) -> torch.nn.Module:
    """The loss with the config's smoothing and tau where the loss takes them, then ``loss_options``."""
    try:
        accepted = loss_defaults(cfg.loss)
        options = {k: v for k, v in {"smoothing": cfg.smoothing, "tau": cfg.tau}.items() if k in accepted}
        return build_loss(cfg.loss, class_counts, **{**options, **cfg.loss_options})
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from exc


def _pretrain_checkpoint(init: str) -> dict[str, Any]:
    """Meta and ``encoder.*`` weights (prefix removed) of a pretrain run's last checkpoint."""
    ckpt = find_checkpoint(Path(init), "last")
    meta = load_checkpoint_meta(ckpt)
    if meta.get("stage") != "pretrain":
        raise CheckpointError(f"--init {init} is a {meta.get('stage')!r} run, not a pretrain run")
    prefix = "encoder."
    encoder = {k[len(prefix) :]: v for k, v in load_model_weights(ckpt).items() if k.startswith(prefix)}
    if not encoder:
        raise CheckpointError(f"{ckpt} holds no {prefix}* weights; is it an MGP checkpoint?")
    return {"dir": ckpt, "meta": meta, "encoder": encoder}


def _model_config(
    cfg: FinetuneConfig, pretrained: dict[str, Any] | None, *, img_size: int, in_chans: int, num_classes: int
) -> ViTConfig:
    """The classifier's shape: ``--model`` if given, else the pretrained encoder's, then the size flags.

    Size flags that disagree with the pretrained encoder are caught by :func:`_load_encoder`.
    """
    overrides = {
        "img_size": img_size,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "drop_path_rate": cfg.drop_path,
        **cfg.model_sizes(),
    }
    try:
        if cfg.model:
            return vit_config(cfg.model, **overrides)
        return dataclasses.replace(ViTConfig.from_dict(pretrained["meta"]["model"]), **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _load_encoder(model: torch.nn.Module, vit: ViTConfig, pretrained: dict[str, Any]) -> None:
    """Load the MGP encoder; a different model size is a clear error, a different resolution is resampled."""
    source = ViTConfig.from_dict(pretrained["meta"]["model"])
    diffs = [
        f"{k} {getattr(source, k)} vs {getattr(vit, k)}"
        for k in _SHAPE_FIELDS
        if getattr(source, k) != getattr(vit, k)
    ]
    if diffs:
        raise ConfigError(
            f"model size mismatch between pretrain ({source.name}, {pretrained['dir']}) and finetune "
            f"({vit.name}): {', '.join(diffs)}"
        )
    try:
        missing = load_encoder_weights(model, pretrained["encoder"])
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the encoder of {pretrained['dir']}: {exc}") from exc
    _logger.info("loaded MGP encoder from %s (new: %s)", pretrained["dir"], ", ".join(missing))
