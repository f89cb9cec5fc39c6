"""The export source: a fine-tuned run folder's checkpoint, model and evaluation data."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from livt.export.errors import ExportError
from livt.training.checkpoint import CheckpointError, load_classifier, recorded_sha256

logger = logging.getLogger(__name__)


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

    Raises ``ExportError`` for a missing folder, a pretrain run, an incomplete ``meta.json`` or
    weights that do not match it (damaged, or of another model).
    """
    run_dir = Path(run_dir)
    try:
        model, ckpt_dir, meta = load_classifier(run_dir, checkpoint)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    run_metrics = _read_run_metrics(run_dir / "metrics.json")
    return ExportSource(run_dir, ckpt_dir, meta, model, recorded_sha256(ckpt_dir), run_metrics)


def _read_run_metrics(path: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` (``{}`` when there is none); ``ExportError`` when it is broken."""
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise ExportError(f"{path} is not a JSON object")
    return metrics


def open_split(source: ExportSource, split: str, *, data_root: Path | None = None) -> Any:
    """The ``split`` data set with the eval transform of ``meta.json``'s preprocess (nothing decoded yet).

    Raises ``ExportError`` when the split cannot be built (no data, no such split) or is empty.
    """
    from livt.data import DatasetInfo, DatasetNotFoundError, build_dataset, build_eval_transform

    meta, pp = source.meta, source.meta["preprocess"]
    options = dict(meta["dataset"].get("options") or {})
    root = data_root if data_root is not None else meta["dataset"].get("data_root")
    try:
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
        dataset = build_dataset(
            meta["dataset"]["name"], split, data_root=root, transform=transform, **options
        )
    except (DatasetNotFoundError, OSError, ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"cannot read the {split!r} split of {meta['dataset']['name']}: {exc}") from exc
    if len(dataset) == 0:
        raise ExportError(f"the {split!r} split of {meta['dataset']['name']} is empty")
    return dataset


def spread_indices(n: int, limit: int | None) -> np.ndarray:
    """``limit`` evenly spaced indices of ``range(n)`` (all of them without a limit), so every class
    of a class-sorted split is represented."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)


def iter_batches(
    dataset: Any, *, limit: int | None = None, batch_size: int = 64, workers: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x [B, C, H, W] float32, y [B])`` batches over ``dataset`` (``limit``: a spread subset).

    Streams: only one batch of decoded images is in memory at a time (plus the loader's prefetch).
    """
    from torch.utils.data import DataLoader, Subset

    subset = Subset(dataset, spread_indices(len(dataset), limit).tolist())
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers)
    for images, targets in loader:
        yield images.numpy().astype(np.float32, copy=False), targets.numpy().astype(np.int64)


def load_subset(dataset: Any, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """A spread subset of at most ``limit`` images of ``dataset`` as arrays ``(x [N, C, H, W], y [N])``.

    For the small sets kept whole (parity checks, INT8 calibration); whole splits are streamed
    with ``iter_batches``.
    """
    batches = list(iter_batches(dataset, limit=limit))
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
