"""BFT: balanced fine-tuning of the MGP encoder (or a random ViT) with a balanced loss.

Every epoch is scored on the balanced VAL split (carved from the training images) and the best
balanced accuracy is kept as ``checkpoints/best`` (with ``--ema-decay``, the weight EMA is what is
scored and kept); the TEST split is read once, at the end, by the best checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from livt.data import (
    DatasetNotFoundError,
    build_eval_transform,
    build_mixup,
    build_train_transform,
    eval_preprocess_config,
)
from livt.metrics import SCALAR_METRICS, compute_metrics
from livt.models import ViTConfig, create_classifier
from livt.training import engine, plots, stage
from livt.training.checkpoint import (
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
    save_checkpoint,
)
from livt.training.config import ConfigError, FinetuneConfig
from livt.training.distributed import DistEnv, barrier
from livt.training.init_weights import InitWeights, load_init, log_init, read_init, run_model_config
from livt.training.loaders import build_eval_loader
from livt.training.losses import LongTailLoss, build_loss, loss_defaults
from livt.training.report import format_report, percent, round_per_class, round_summary, write_report
from livt.training.rundir import RunFolder, read_history

_logger = logging.getLogger(__name__)

_HEAD = frozenset({"head.weight", "head.bias"})


def finetune(
    cfg: FinetuneConfig, *, resume_run: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run BFT as ``cfg`` says and return the run folder."""
    return stage.run_stage(cfg, _finetune, resume_run=resume_run, overwrite=overwrite, progress=progress)


@dataclass
class _Splits:
    """Every split a run reads, opened before its first step, and the model its input size fixes."""

    train: Any
    val: Any
    val_loader: Any
    final: Any  # the split the best checkpoint is scored on at the end (the val split where none)
    final_name: str
    vit: ViTConfig


def _finetune(
    cfg: FinetuneConfig, folder: RunFolder, env: DistEnv, *, amp_dtype: torch.dtype | None, progress: bool
) -> Path:
    init = read_init(cfg.init) if cfg.init else None
    data = _open_splits(cfg, init, env)
    train_set, vit = data.train, data.vit

    # model: the pretrained encoder plus a fresh head
    model = create_classifier(vit)
    loaded = load_init(model, init, new=_HEAD) if init is not None else None
    if loaded is not None:
        log_init(loaded)
    model.to(env.device)

    # loss and mixup
    mixup = build_mixup(len(train_set.classes), cfg.mixup, cfg.cutmix)  # the loss smooths, mixed targets too
    criterion = _build_criterion(cfg, train_set.class_counts, train_set.classes).to(env.device)
    opt = stage.build_optimisation(
        cfg, model, train_set, env, layer_decay=cfg.layer_decay, even_batch=mixup is not None
    )
    if mixup is not None and opt.batch_size % 2:
        raise ConfigError(f"mixup/cutmix need an even --batch-size, got {opt.batch_size}")

    meta = stage.base_meta(
        cfg,
        model=vit.to_dict(),
        dataset=train_set,
        preprocess=eval_preprocess_config(train_set.info, vit.img_size, cfg.crop_pct, cfg.interpolation),
    )
    meta.update(
        mae=init.mae.to_dict() if init is not None and init.mae is not None else None,
        init=loaded,
        loss=cfg.loss,
        tau=float(criterion.tau),
        many_threshold=cfg.many,
        few_threshold=cfg.few,
    )

    def loss_fn(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if mixup is not None:
            images, targets = mixup(images, targets)
        return criterion(model(images), targets)

    with stage.start_run(
        cfg, folder, env, model, opt, amp_dtype=amp_dtype, progress=progress, ema_decay=cfg.ema_decay
    ) as run:
        _logger.info(
            "finetune %s (%s) on %s: %d train / %d val images, %d px, %s loss, effective batch %d, lr %.3g, "
            "%d steps/epoch, epochs %d-%d",
            vit.name, f"init {cfg.init}" if cfg.init else "from scratch", cfg.dataset, len(train_set),
            len(data.val), vit.img_size, cfg.loss, opt.effective_batch, opt.lr, opt.steps_per_epoch,
            run.start_epoch + 1, cfg.epochs,
        )  # fmt: skip
        for epoch in run.epochs():
            criterion.set_epoch(epoch)
            stats = run.train_epoch(epoch, loss_fn)
            _validate(run, epoch, stats, data, criterion, meta)
        barrier(env)  # rank 0 has written checkpoints/best; every rank tests that same model
        _test_best(run, data.final, data.final_name, train_set)
    return run.run_dir


def _open_splits(cfg: FinetuneConfig, init: InitWeights | None, env: DistEnv) -> _Splits:
    """The training split, the model (its input size comes from the data), then the eval splits."""
    train_set = stage.load_split(cfg, "train")
    info = train_set.info
    vit = run_model_config(
        cfg, init, info.image_size, in_chans=info.channels, num_classes=len(train_set.classes),
        drop_path_rate=cfg.drop_path,
    )  # fmt: skip
    train_set.transform = build_train_transform(
        info, vit.img_size, stage="finetune", auto_augment=cfg.aa, re_prob=cfg.reprob,
        scale=(cfg.crop_scale, 1.0),
    )  # fmt: skip
    eval_transform = build_eval_transform(
        info, vit.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation
    )
    val_set = stage.load_split(cfg, "val", eval_transform)
    final_set, final_name = _final_split(cfg, eval_transform)
    val_loader = build_eval_loader(val_set, batch_size=cfg.batch_size, env=env, workers=cfg.workers)
    final = final_set if final_set is not None else val_set
    return _Splits(train_set, val_set, val_loader, final, final_name, vit)


def _validate(
    run: stage.Run,
    epoch: int,
    stats: engine.EpochStats,
    data: _Splits,
    criterion: LongTailLoss,
    meta: dict[str, Any],
) -> None:
    """Score the epoch on val, save ``last`` (and ``best`` when it improved), record the epoch."""
    cfg, env = run.cfg, run.env
    logits, targets = engine.evaluate(
        run.scored_model, data.val_loader, env=env, amp_dtype=run.amp_dtype, progress=run.progress
    )
    val = compute_metrics(logits, targets, data.train.class_counts, many=cfg.many, few=cfg.few)
    with torch.no_grad():
        val_loss = float(criterion(logits.to(env.device), targets.to(env.device)))
    val_summary = round_summary(val, len(data.val))
    improved = run.best is None or val["balanced_acc"] > run.best
    run.best = val["balanced_acc"] if improved else run.best
    per_class = round_per_class(val["per_class"], val["confusion"])
    meta.update(epoch=epoch, step=run.step, metrics={**val_summary, "per_class": per_class})
    run.save_last(meta, epoch)
    if env.is_main and improved:
        save_checkpoint(run.run_dir / "checkpoints" / "best", run.best_weights, meta)
    note = f"  val loss {val_loss:.4f}  top1 {percent(val['top1'])}  balanced {percent(val['balanced_acc'])}"
    run.record_epoch(
        epoch,
        stats,
        val={**val_summary, "loss": round(val_loss, 4)},
        note=note + ("  (best)" if improved else ""),
    )


def _final_split(cfg: FinetuneConfig, transform: Any) -> tuple[Any | None, str]:
    """The split the best checkpoint is scored on at the end and its name (``None, "val"``: the val
    split), opened now so that a missing one stops the run before its first step, not after its last."""
    if cfg.test_split == "val":
        return None, "val"
    try:
        return stage.load_split(cfg, "test", transform), "test"
    except DatasetNotFoundError as exc:
        if cfg.test_split == "test":
            raise
        _logger.warning(
            "no test split (%s): the best checkpoint is scored on val at the end, the split that chose "
            "it, so those figures are optimistic (--test-split test makes a missing test split an error)",
            exc,
        )
        return None, "val"


def _test_best(run: stage.Run, dataset: Any, split: str, train_set: Any) -> None:
    """Score the best checkpoint on the final split, once: metrics.json, the plots and the table."""
    cfg, env = run.cfg, run.env
    best_dir = find_checkpoint(run.run_dir, "best")
    best_meta = load_checkpoint_meta(best_dir)
    run.model.load_state_dict(load_model_weights(best_dir))
    loader = build_eval_loader(dataset, batch_size=cfg.batch_size, env=env, workers=cfg.workers)
    logits, targets = engine.evaluate(
        run.model, loader, env=env, amp_dtype=run.amp_dtype, progress=run.progress, desc=split
    )
    if not env.is_main:
        return
    report = write_report(
        run.run_dir, logits, targets, classes=list(train_set.classes), train_counts=list(train_set.class_counts),
        many=cfg.many, few=cfg.few,
        extra={"split": split, "best_epoch": best_meta["epoch"], "val": best_meta["metrics"]},
    )  # fmt: skip
    history = read_history(run.run_dir)
    plots.plot_curves(history, run.run_dir / "plots" / "curves.png", best_epoch=best_meta["epoch"])
    run.track(cfg.epochs - 1, {f"{split}/{k}": report[k] for k in SCALAR_METRICS})
    title = f"{split} split, best epoch {best_meta['epoch'] + 1} of {cfg.epochs} (by val balanced accuracy):"
    _logger.info("%s", format_report(report, title))


def _build_criterion(cfg: FinetuneConfig, class_counts: list[int], classes: list[str]) -> LongTailLoss:
    """The loss with the config's smoothing and tau where the loss takes them, then ``loss_options``."""
    try:
        accepted = loss_defaults(cfg.loss)
        given = {"smoothing": cfg.smoothing, "tau": cfg.tau, "smoothing_toward": cfg.smoothing_toward}
        options = {k: v for k, v in given.items() if k in accepted}
        criterion = build_loss(cfg.loss, class_counts, **{**options, **cfg.loss_options})
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from exc
    if conflict := criterion.smoothing_conflict(classes):
        _logger.warning("%s: %s", cfg.loss, conflict)
    return criterion
