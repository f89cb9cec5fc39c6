"""MGP: masked generative pretraining of a ViT encoder on the long-tailed training images.

Labels are never used. The run folder keeps the whole MAE (encoder keys ``encoder.*``), which
``livt-train finetune --init RUN_DIR`` loads into a classifier.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from livt.data import build_eval_transform, build_train_transform, eval_preprocess_config
from livt.models import MAEConfig, MaskedAutoencoder, vit_config
from livt.training import engine, plots
from livt.training.config import ConfigError, PretrainConfig
from livt.training.distributed import DistEnv, unwrap, wrap_model
from livt.training.loaders import build_train_loader
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


def pretrain(
    cfg: PretrainConfig, *, resume_run: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run MGP as ``cfg`` says and return the run folder."""
    return run_stage(cfg, _pretrain, resume_run=resume_run, overwrite=overwrite, progress=progress)


def _pretrain(cfg: PretrainConfig, run_dir: Path, env: DistEnv, *, resume_run: bool, progress: bool) -> None:
    seed_everything(cfg.seed + env.rank)
    amp_dtype = engine.resolve_precision(cfg.precision, env.device)

    # data: the long-tailed training split with crop + flip only
    dataset = load_split(
        cfg,
        "train",
        lambda info: build_train_transform(
            info, cfg.img_size or info.image_size, stage="pretrain", scale=(cfg.crop_scale, 1.0)
        ),
    )
    info = dataset.info
    img_size = cfg.img_size or info.image_size
    loader = build_train_loader(
        dataset, batch_size=cfg.batch_size, seed=cfg.seed, env=env, workers=cfg.workers
    )
    steps_per_epoch = len(loader) // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(f"an epoch has {len(loader)} batches, fewer than --accum-steps {cfg.accum_steps}")

    # model
    try:
        vit = vit_config(
            cfg.model, img_size=img_size, in_chans=info.channels, num_classes=0, **cfg.model_sizes()
        )
        mae = MAEConfig(
            decoder_embed_dim=cfg.decoder_embed_dim,
            decoder_depth=cfg.decoder_depth,
            decoder_num_heads=cfg.decoder_num_heads,
            mask_ratio=cfg.mask_ratio,
            norm_pix_loss=cfg.norm_pix_loss,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    model = MaskedAutoencoder(vit, mae).to(env.device)
    _logger.info("MAE %s: %.2fM parameters", vit.name, sum(p.numel() for p in model.parameters()) / 1e6)

    # optimisation
    batch = effective_batch_size(cfg.batch_size, cfg.accum_steps, env.world_size)
    lr = cfg.lr or scaled_lr(cfg.blr, batch)
    optimizer = build_optimizer(model, lr=lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    scheduler = build_scheduler(
        optimizer,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=warmup_steps_for(cfg.warmup_epochs, steps_per_epoch),
        min_lr=cfg.min_lr,
    )
    start_epoch, step = 0, 0
    if resume_run:
        start_epoch, step, _ = resume(run_dir, model, optimizer, scheduler, env)
    train_model = wrap_model(torch.compile(model) if cfg.compile else model, env)
    _logger.info(
        "pretrain %s on %s: %d images, effective batch %d, lr %.3g, %d steps/epoch, epochs %d-%d",
        vit.name, cfg.dataset, len(dataset), batch, lr, steps_per_epoch, start_epoch, cfg.epochs - 1,
    )  # fmt: skip

    meta = base_meta(
        cfg,
        model=vit.to_dict(),
        dataset=dataset,
        preprocess=eval_preprocess_config(info, img_size, 1.0, "bicubic"),
    )
    meta["mae"] = mae.to_dict()

    def loss_fn(model: torch.nn.Module, images: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
        loss, _pred, _mask = model(images, mask_ratio=cfg.mask_ratio)
        return loss

    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        stats = engine.train_one_epoch(
            train_model, loader, loss_fn, optimizer, scheduler,
            env=env, epoch=epoch, step=step, steps_per_epoch=steps_per_epoch,
            accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad, amp_dtype=amp_dtype, progress=progress,
        )  # fmt: skip
        step = stats.step
        record = {
            "epoch": epoch, "step": step, "train_loss": stats.loss, "lr": stats.lr,
            "images_per_s": stats.images_per_s, "time": stats.seconds,
        }  # fmt: skip
        meta["metrics"] = {"train_loss": stats.loss}
        save_last(
            run_dir, model, meta, optimizer=optimizer, scheduler=scheduler,
            epoch=epoch, step=step, best_metric=None, env=env,
        )  # fmt: skip
        if env.is_main:
            append_history(run_dir, record)
        _logger.info(
            "epoch %d/%d  loss %.4f  lr %.3g  %.0f img/s  %.1fs",
            epoch, cfg.epochs - 1, stats.loss, stats.lr, stats.images_per_s, stats.seconds,
        )  # fmt: skip

    if env.is_main:
        _plot(cfg, run_dir, unwrap(model), img_size)


def _plot(cfg: PretrainConfig, run_dir: Path, model: MaskedAutoencoder, img_size: int) -> None:
    """Loss curve and reconstructions of a few (un-augmented) training images."""
    plots_dir = run_dir / "plots"
    plots.plot_curves(read_history(run_dir), plots_dir / "loss.png")
    dataset = load_split(cfg, "train", lambda info: build_eval_transform(info, img_size))
    picks = torch.linspace(0, len(dataset) - 1, steps=min(8, len(dataset))).long().tolist()
    images = torch.stack([dataset[i][0] for i in picks]).to(next(model.parameters()).device)
    model.eval()
    masked, reconstruction, pasted = model.reconstruct(images)
    plots.plot_reconstructions(
        images, masked, reconstruction, pasted, mean=dataset.info.mean, std=dataset.info.std,
        path=plots_dir / "reconstructions.png",
    )  # fmt: skip
