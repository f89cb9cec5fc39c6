"""MGP: masked generative pretraining of a ViT encoder on the long-tailed training images.

Labels are never used. The run folder keeps the whole MAE (encoder keys ``encoder.*``), which
``livt-train finetune --init RUN_DIR`` loads into a classifier. ``--init`` continues MGP from a
run folder or a released checkpoint (``livt.training.init_weights``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from livt.data import build_eval_transform, build_train_transform, eval_preprocess_config
from livt.models import MAEConfig, MaskedAutoencoder
from livt.training import plots, stage
from livt.training.config import ConfigError, PretrainConfig
from livt.training.distributed import DistEnv
from livt.training.init_weights import InitWeights, load_init, log_init, read_init, run_model_config
from livt.training.rundir import RunFolder, read_history

_logger = logging.getLogger(__name__)


def pretrain(
    cfg: PretrainConfig, *, resume_run: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run MGP as ``cfg`` says and return the run folder."""
    return stage.run_stage(cfg, _pretrain, resume_run=resume_run, overwrite=overwrite, progress=progress)


def _pretrain(
    cfg: PretrainConfig, folder: RunFolder, env: DistEnv, *, amp_dtype: torch.dtype | None, progress: bool
) -> Path:

    # data: the long-tailed training split with crop + flip only
    dataset = stage.load_split(cfg, "train")
    info = dataset.info

    # model: the --init checkpoint's shape (and decoder, where it has one) unless --model says otherwise
    init = read_init(cfg.init) if cfg.init else None
    vit = run_model_config(cfg, init, info.image_size, in_chans=info.channels, num_classes=0)
    img_size = vit.img_size
    mae = _mae_config(cfg, init)
    dataset.transform = build_train_transform(info, img_size, stage="pretrain", scale=(cfg.crop_scale, 1.0))
    model = MaskedAutoencoder(vit, mae)
    loaded = load_init(model, init) if init is not None else None
    if loaded is not None:
        log_init(loaded)
    model.to(env.device)
    _logger.info("MAE %s: %.2fM parameters", vit.name, sum(p.numel() for p in model.parameters()) / 1e6)

    opt = stage.build_optimisation(cfg, model, dataset, env)
    meta = stage.base_meta(
        cfg,
        model=vit.to_dict(),
        dataset=dataset,
        preprocess=eval_preprocess_config(info, img_size, 1.0, "bicubic"),
    )
    meta.update(mae=mae.to_dict(), init=loaded)

    def loss_fn(model: torch.nn.Module, images: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
        loss, _pred, _mask = model(images, mask_ratio=cfg.mask_ratio)
        return loss

    with stage.start_run(cfg, folder, env, model, opt, amp_dtype=amp_dtype, progress=progress) as run:
        _logger.info(
            "pretrain %s on %s: %d images, %d px, effective batch %d, lr %.3g, %d steps/epoch, epochs %d-%d",
            vit.name, cfg.dataset, len(dataset), img_size, opt.effective_batch, opt.lr, opt.steps_per_epoch,
            run.start_epoch + 1, cfg.epochs,
        )  # fmt: skip
        for epoch in run.epochs():
            stats = run.train_epoch(epoch, loss_fn)
            meta["metrics"] = {"train_loss": stats.loss}
            run.save_last(meta, epoch)
            run.record_epoch(epoch, stats)
        if env.is_main:
            _plot(cfg, run.run_dir, model, img_size)
    return run.run_dir


def _mae_config(cfg: PretrainConfig, init: InitWeights | None) -> MAEConfig:
    """The decoder: the checkpoint's shape where it has a decoder (so that it loads), else the config's."""
    source = init.mae if init is not None else None
    shape = (
        (source.decoder_embed_dim, source.decoder_depth, source.decoder_num_heads)
        if source is not None
        else (cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads)
    )
    try:
        return MAEConfig(*shape, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _plot(cfg: PretrainConfig, run_dir: Path, model: MaskedAutoencoder, img_size: int) -> None:
    """Loss curve and reconstructions of a few (un-augmented) training images."""
    plots_dir = run_dir / "plots"
    plots.plot_curves(read_history(run_dir), plots_dir / "loss.png")
    dataset = stage.load_split(cfg, "train")
    dataset.transform = build_eval_transform(dataset.info, img_size)
    picks = torch.linspace(0, len(dataset) - 1, steps=min(8, len(dataset))).long().tolist()
    images = torch.stack([dataset[i][0] for i in picks]).to(next(model.parameters()).device)
    model.eval()
    masked, reconstruction, pasted = model.reconstruct(images)
    plots.plot_reconstructions(
        images, masked, reconstruction, pasted, mean=dataset.info.mean, std=dataset.info.std,
        path=plots_dir / "reconstructions.png",
    )  # fmt: skip
