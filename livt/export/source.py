"""The export source: a fine-tuned run folder's checkpoint, model and evaluation data."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from livt.export.errors import ExportError
from livt.export.metadata import sha256_file
from livt.training.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
)

logger = logging.getLogger(__name__)

_REQUIRED_META = ("stage", "model", "classes", "class_counts", "loss", "tau", "preprocess", "dataset")


@dataclass
class ExportSource:
    """A fine-tuned checkpoint ready for export."""

    run_dir: Path
    ckpt_dir: Path
    meta: dict[str, Any]
    model: nn.Module
    weights_sha256: str
    run_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        pp = self.meta["preprocess"]
        return (int(pp["channels"]), int(pp["img_size"]), int(pp["img_size"]))


def load_source(run_dir: Path, checkpoint: str = "best") -> ExportSource:
    """Load a fine-tuned run folder's checkpoint (``best`` falls back to ``last``) as an eval model.

    Raises ``ExportError`` for a missing folder, a pretrain run or an incomplete ``meta.json``.
    """
    from livt.models import ViTConfig, create_classifier

    run_dir = Path(run_dir)
    try:
        ckpt_dir = find_checkpoint(run_dir, checkpoint)
        meta = load_checkpoint_meta(ckpt_dir)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    if meta.get("stage") != "finetune":
        raise ExportError(
            f"{ckpt_dir} is a {meta.get('stage')!r} checkpoint; export needs a fine-tuned classifier "
            "(run `livt-train finetune` on it first)"
        )
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ExportError(f"{ckpt_dir}/meta.json lacks {missing}; was it written by livt-train?")
    if len(meta["classes"]) != len(meta["class_counts"]) or meta["model"].get("num_classes") != len(
        meta["classes"]
    ):
        raise ExportError(f"{ckpt_dir}/meta.json: classes, class_counts and model.num_classes disagree")

    model = create_classifier(ViTConfig.from_dict(meta["model"]))
    model.load_state_dict(load_model_weights(ckpt_dir), strict=True)
    model.eval()
    metrics_path = run_dir / "metrics.json"
    run_metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    return ExportSource(run_dir, ckpt_dir, meta, model, sha256_file(ckpt_dir / WEIGHTS_FILE), run_metrics)


def load_split(
    source: ExportSource, split: str, *, data_root: Path | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``split`` through the eval transform of ``meta.json``'s preprocess, as float32 arrays.

    Returns ``(x [N, C, H, W], y [N])``; ``limit`` takes an evenly spaced subset so every class of a
    class-sorted split is represented.
    """
    from livt.data import DatasetInfo, DatasetNotFoundError, build_dataset, build_eval_transform

    meta, pp = source.meta, source.meta["preprocess"]
    options = dict(meta["dataset"].get("options") or {})
    root = data_root if data_root is not None else meta["dataset"].get("data_root")
    info = DatasetInfo(
        name=meta["dataset"]["name"],
        classes=tuple(meta["classes"]),
        channels=int(pp["channels"]),
        image_size=int(pp["img_size"]),
        mean=tuple(pp["mean"]),
        std=tuple(pp["std"]),
    )
    transform = build_eval_transform(
        info, int(pp["img_size"]), crop_pct=float(pp["crop_pct"]), interpolation=pp["interpolation"]
    )
    try:
        dataset = build_dataset(
            meta["dataset"]["name"], split, data_root=root, transform=transform, **options
        )
    except (DatasetNotFoundError, OSError, ValueError) as exc:
        raise ExportError(f"cannot read the {split!r} split of {meta['dataset']['name']}: {exc}") from exc
    n = len(dataset)
    if n == 0:
        raise ExportError(f"the {split!r} split of {meta['dataset']['name']} is empty")
    indices = range(n) if limit is None or limit >= n else np.linspace(0, n - 1, limit).round().astype(int)
    images, targets = zip(*(dataset[int(i)] for i in indices), strict=True)
    x = torch.stack(list(images)).numpy().astype(np.float32)
    return x, np.asarray(targets, dtype=np.int64)
