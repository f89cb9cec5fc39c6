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
from livt.files import atomic_write
from livt.training import engine
from livt.training.checkpoint import load_classifier, recorded_thresholds
from livt.training.config import ConfigError, EvaluateConfig
from livt.training.distributed import init_distributed
from livt.training.loaders import build_eval_loader
from livt.training.report import format_report, write_report
from livt.training.stage import log_source

_logger = logging.getLogger(__name__)


def evaluate_run(cfg: EvaluateConfig, *, progress: bool = True) -> Path:
    """Evaluate ``cfg.run``'s ``cfg.checkpoint`` on ``cfg.split``; return the output folder."""
    env = init_distributed(cfg.device)
    run_dir = Path(cfg.run)
    model, ckpt, meta = load_classifier(run_dir, cfg.checkpoint)
    many, few = recorded_thresholds(meta)

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
    data_root = cfg.data_root or meta["dataset"].get("data_root")
    options = dict(meta["dataset"]["options"]) if name == meta["dataset"]["name"] else {}
    labelled = True
    if name == "imagefolder" and data_root is not None:
        options, labelled = _folder_options(options, data_root, cfg.split, meta)
    try:
        dataset = build_dataset(name, cfg.split, data_root=data_root, transform=transform, **options)
    except ValueError as exc:
        raise ConfigError(f"data set {name!r}: {exc}") from exc
    log_source(name, cfg.split, dataset)

    num_classes = len(meta["classes"])
    if labelled and len(dataset.classes) != num_classes:
        raise ConfigError(
            f"class-count mismatch: {run_dir} was trained on {num_classes} classes but "
            f"{name} ({cfg.split}) has {len(dataset.classes)}"
        )
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
        many=many, few=few, extra={"split": cfg.split, "dataset": name, "checkpoint": str(ckpt)},
    )  # fmt: skip
    _write_predictions(out_dir / "predictions.jsonl", dataset, logits, targets, list(meta["classes"]))
    _logger.info("%s", format_report(report, f"{name} {cfg.split} split, {ckpt}:"))
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
        # the run's own format: nothing is inferred from a folder that may have no train split
        "channels": pre["channels"],
        "image_size": pre["img_size"],
        "mean": pre["mean"],
        "std": pre["std"],
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
