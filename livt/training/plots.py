"""PNG figures of a run (matplotlib, Agg backend): curves, reconstructions, per-class and calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from livt.training.metrics import ReliabilityBins


def _save(fig: plt.Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss per epoch, and validation accuracies when the records have them."""
    epochs = [r["epoch"] for r in history]
    has_val = any("val" in r for r in history)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5, 3.5), squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax.set(xlabel="epoch", ylabel="train loss", title="loss")
    if has_val:
        ax = axes[0, 1]
        for key in ("top1", "balanced_acc", "few"):
            values = [r["val"].get(key) for r in history if "val" in r]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=key)
        ax.set(xlabel="epoch", ylabel="val accuracy", title="validation", ylim=(0, 1))
        ax.legend()
    _save(fig, path)


def plot_reconstructions(
    images: torch.Tensor,
    masked: torch.Tensor,
    reconstruction: torch.Tensor,
    pasted: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    path: Path,
) -> None:
    """One row per image: original, masked input, reconstruction, reconstruction + visible patches."""
    columns = {"original": images, "masked": masked, "reconstruction": reconstruction, "pasted": pasted}
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.6 * n), squeeze=False)
    for col, (title, batch) in enumerate(columns.items()):
        pixels = (batch.detach().float().cpu() * std_t + mean_t).clamp(0, 1)  # undo the normalisation
        for row in range(n):
            img = pixels[row].permute(1, 2, 0).numpy()
            ax = axes[row, col]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
            if row == 0:
                ax.set_title(title, fontsize=8)
    _save(fig, path)


def plot_per_class_accuracy(
    per_class: Sequence[float | None] | Mapping[str, Sequence[float | None]],
    train_counts: Sequence[int],
    path: Path,
) -> None:
    """Test accuracy of every class against its number of training images (log x axis).

    ``per_class`` is one run's accuracies, or ``{label: accuracies}`` to compare runs in one figure.
    """
    series = per_class if isinstance(per_class, Mapping) else {"": per_class}
    counts = np.asarray(train_counts, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, values in series.items():
        acc = np.array([np.nan if a is None else a for a in values], dtype=float)
        ax.scatter(counts, acc, s=14, label=label or None)
    ax.set_xscale("log")
    ax.set(xlabel="training images of the class", ylabel="test accuracy", ylim=(-0.02, 1.02))
    ax.set_title("per-class accuracy vs training count")
    if len(series) > 1:
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_val_curves(
    histories: Mapping[str, Sequence[dict[str, Any]]], path: Path, *, key: str = "balanced_acc"
) -> None:
    """Validation ``key`` against epochs trained for several runs (``{label: metrics.jsonl records}``)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, history in histories.items():
        records = [r for r in history if r.get("val", {}).get(key) is not None]
        # a record's "epoch" is 0-based: after it, epoch + 1 epochs are trained
        ax.plot([r["epoch"] + 1 for r in records], [r["val"][key] for r in records], marker="o", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epochs trained", ylabel=f"val {key}", ylim=(0, 1), title=f"val {key} per epoch")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_reliability(bins: ReliabilityBins, path: Path, *, title: str = "reliability") -> None:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration."""
    width = np.diff(bins.edges)
    filled = bins.count > 0
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.bar(bins.edges[:-1][filled], bins.accuracy[filled], width=width[filled], align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrix (rows: true class); class names shown for up to 30 classes."""
    matrix = np.asarray(confusion, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(12.0, 3 + 0.3 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if len(classes) <= 30:
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, labels=classes, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels=classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    _save(fig, path)
