"""Evaluate a fine-tuned run: metrics, plots and per-image predictions on one split.

The eval transform is rebuilt from the checkpoint's ``preprocess`` block alone, the same block the
exported artifact carries, so these probabilities are the ones a server should reproduce.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from livt.data import DatasetInfo, build_dataset, build_eval_transform
from livt.data.formats import imagefolder
from livt.models import ViTConfig, create_classifier
from livt.training import engine, plots
from livt.training.checkpoint import (
    CheckpointError,
    atomic_write,
    atomic_write_text,
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
)
from livt.training.config import ConfigError, EvaluateConfig, FinetuneConfig, load_run_config
from livt.training.distributed import init_distributed
from livt.training.loaders import build_eval_loader
from livt.training.metrics import compute_metrics, reliability_bins, tail_accuracy
from livt.training.stage import log_source

_logger = logging.getLogger(__name__)

SCALAR_METRICS = ("top1", "top5", "balanced_acc", "many", "medium", "few", "ece", "mce", "nll")


def write_report(
    out_dir: Path,
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    classes: list[str],
    train_counts: list[int],
    many: int = 100,
    few: int = 20,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json`` and the per-class, reliability and confusion plots; return the metrics."""
    metrics = compute_metrics(logits, targets, train_counts, many=many, few=few)
    confusion = metrics.pop("confusion")
    report = {
        **metrics,
        "many_threshold": many,
        "few_threshold": few,
        "tail3": tail_accuracy(metrics["per_class"], train_counts, k=min(3, len(train_counts))),
        "train_counts": list(train_counts),
        **(extra or {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    plots_dir = out_dir / "plots"
    plots.plot_per_class_accuracy(metrics["per_class"], train_counts, plots_dir / "per_class_accuracy.png")
    plots.plot_reliability(reliability_bins(logits.softmax(dim=1), targets), plots_dir / "reliability.png")
    plots.plot_confusion(confusion, classes, plots_dir / "confusion.png")
    return report


def evaluate_run(cfg: EvaluateConfig, *, progress: bool = True) -> Path:
    """Evaluate ``cfg.run``'s ``cfg.checkpoint`` on ``cfg.split``; return the output folder."""
    env = init_distributed(cfg.device)
    run_dir = Path(cfg.run)
    ckpt = find_checkpoint(run_dir, cfg.checkpoint)
    meta = load_checkpoint_meta(ckpt)
    if meta.get("stage") != "finetune":
        raise ConfigError(f"{run_dir} is a {meta.get('stage')!r} run; evaluate needs a finetune run")
    run_cfg = _run_config(run_dir)

    # the eval transform exactly as recorded in meta.json
    pre = meta["preprocess"]
    info = DatasetInfo(
        name=meta["dataset"]["name"], classes=tuple(meta["classes"]), channels=pre["channels"],
        image_size=pre["img_size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
    )  # fmt: skip
    transform = build_eval_transform(
        info, pre["img_size"], crop_pct=pre["crop_pct"], interpolation=pre["interpolation"]
    )
    name = cfg.dataset or meta["dataset"]["name"]
    data_root = cfg.data_root or (run_cfg.data_root if run_cfg is not None else None)
    options = dict(meta["dataset"]["options"]) if name == meta["dataset"]["name"] else {}
    labelled = True
    if name == "imagefolder" and data_root is not None:
        options, labelled = _folder_options(options, data_root, cfg.split, meta)
    try:
        dataset = build_dataset(name, cfg.split, data_root=data_root, transform=transform, **options)
    except ValueError as exc:
        raise ConfigError(f"data set {name!r}: {exc}") from exc
    log_source(name, cfg.split, dataset)

    vit = ViTConfig.from_dict(meta["model"])
    if labelled and len(dataset.classes) != vit.num_classes:
        raise ConfigError(
            f"class-count mismatch: {run_dir} was trained on {vit.num_classes} classes but "
            f"{name} ({cfg.split}) has {len(dataset.classes)}"
        )
    model = create_classifier(vit)
    model.load_state_dict(load_model_weights(ckpt))
    model.to(env.device)

    loader = build_eval_loader(dataset, batch_size=cfg.batch_size, env=env, workers=cfg.workers)
    amp_dtype = engine.resolve_precision(cfg.precision, env.device)
    logits, targets = engine.evaluate(
        model, loader, env=env, amp_dtype=amp_dtype, progress=progress, desc=cfg.split
    )
    out_dir = Path(cfg.out) if cfg.out else run_dir / f"eval-{cfg.split}"
    if not env.is_main:
        return out_dir
    if not labelled:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_predictions(out_dir / "predictions.jsonl", dataset, logits, None, list(meta["classes"]))
        _logger.warning(
            "%s %s: the class folders %s are not the run's classes; wrote predictions only, no metrics",
            name, cfg.split, dataset.classes,
        )  # fmt: skip
        return out_dir
    report = write_report(
        out_dir, logits, targets, classes=list(meta["classes"]), train_counts=list(meta["class_counts"]),
        many=run_cfg.many if run_cfg else 100, few=run_cfg.few if run_cfg else 20,
        extra={"split": cfg.split, "dataset": name, "checkpoint": str(ckpt)},
    )  # fmt: skip
    _write_predictions(out_dir / "predictions.jsonl", dataset, logits, targets, list(meta["classes"]))
    _logger.info(
        "%s %s: top1 %.4f  balanced %.4f  many %s  medium %s  few %s  ece %.4f",
        name, cfg.split, report["top1"], report["balanced_acc"],
        *(_fmt(report[g]) for g in ("many", "medium", "few")), report["ece"],
    )  # fmt: skip
    return out_dir


def _folder_options(
    options: dict[str, Any], data_root: str, split: str, meta: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Image-folder options for scoring ``data_root/<split>`` and whether its labels are the run's classes.

    The folder is read as the run reads images (its channels and size) and its class folders are
    looked up by name among the run's classes, so it needs no train split. A folder with other class
    names (or unlabelled images in one folder) can only be scored for predictions.
    """
    pre = meta["preprocess"]
    folders = imagefolder.scan_classes(data_root, split)
    labelled = set(folders) <= set(meta["classes"])
    classes = list(meta["classes"]) if labelled else folders
    return {
        **options,
        "channels": pre["channels"],
        "image_size": pre["img_size"],
        "classes": classes,
    }, labelled


def _write_predictions(
    path: Path, dataset: Any, logits: torch.Tensor, targets: torch.Tensor | None, classes: list[str]
) -> None:
    """One JSON line per image: index, file (image-folder sets), target, prediction, probabilities.

    ``targets`` is ``None`` when the images' labels are not the run's classes: ``target`` is null.
    """
    probs = logits.softmax(dim=1)
    samples = getattr(dataset, "samples", None)
    target_list = targets.tolist() if targets is not None else [None] * len(probs)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for i, (p, t) in enumerate(zip(probs.tolist(), target_list, strict=True)):
                pred = max(range(len(p)), key=p.__getitem__)
                line = {"index": i, "path": str(samples[i][0]) if samples is not None else None, "target": t,
                        "pred": pred, "label": classes[pred], "probabilities": p}  # fmt: skip
                fh.write(json.dumps(line) + "\n")

    atomic_write(path, write)


def _run_config(run_dir: Path) -> FinetuneConfig | None:
    try:
        cfg = load_run_config(run_dir)
    except ConfigError as exc:
        _logger.warning("cannot read the run's config (%s): using defaults for data root and groups", exc)
        return None
    if not isinstance(cfg, FinetuneConfig):
        raise CheckpointError(f"{run_dir}/config.yaml is a {cfg.stage} config, not a finetune one")
    return cfg


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
