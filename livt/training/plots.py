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
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from livt.metrics import ReliabilityBins


def _save(fig: plt.Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # "tight" takes in what lies outside the axes (a legend kept off the data)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(history: Sequence[dict[str, Any]], path: Path, *, best_epoch: int | None = None) -> None:
    """Per epoch (counted from 1): train and val loss, val accuracies and the learning rate.

    ``best_epoch`` (0-based, as metrics.jsonl records epochs) is marked on every panel. Top-1 and
    balanced accuracy coincide on a balanced val split, so they are drawn in styles that stay
    distinguishable when one lies on the other.
    """
    epochs = [r["epoch"] + 1 for r in history]
    has_val = any("val" in r for r in history)
    panels = 3 if has_val else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    loss_ax, *acc_ax, lr_ax = axes[0]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", ms=3, label="train")
    if has_val:
        val_epochs = [r["epoch"] + 1 for r in history if "val" in r]
        val_loss = [r["val"].get("loss") for r in history if "val" in r]
        if any(v is not None for v in val_loss):
            loss_ax.plot(val_epochs, _nan(val_loss), marker="s", ms=3, label="val")
        ax = acc_ax[0]
        styles = {
            "top1": dict(color="tab:blue", lw=3.5, alpha=0.45, label="top-1"),
            "balanced_acc": dict(color="tab:orange", lw=1.3, ls="--", marker="o", ms=3, label="balanced"),
            "few": dict(color="tab:green", lw=1.0, ls=":", marker="^", ms=3, label="few-shot classes"),
        }
        for key, style in styles.items():
            values = [r["val"].get(key) for r in history if "val" in r]
            if any(v is not None for v in values):
                ax.plot(val_epochs, _nan(values), **style)
        ax.set(xlabel="epoch", ylabel="val accuracy", title="validation", ylim=(0, 1))
        ax.legend(fontsize=8, loc="best")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend(fontsize=8)
    lr_ax.plot(epochs, [r["lr"] for r in history], color="tab:purple", marker="o", ms=3)
    lr_ax.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="gray", ls="-.", lw=1)
    if best_epoch is not None:
        top = acc_ax[0] if acc_ax else loss_ax
        top.annotate(
            f"best epoch {best_epoch + 1}", xy=(best_epoch + 1, 1), xycoords=("data", "axes fraction"),
            xytext=(3, -12), textcoords="offset points", fontsize=8, color="gray",
        )  # fmt: skip
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
    *,
    classes: Sequence[str] | None = None,
    many: int | None = None,
    few: int | None = None,
) -> None:
    """Test accuracy of every class against its number of training images (log x axis).

    ``per_class`` is one run's accuracies, or ``{label: accuracies}`` to compare runs in one figure.
    ``classes`` names the points (up to 40 classes); ``many`` / ``few`` draw the shot-group thresholds.
    """
    series = per_class if isinstance(per_class, Mapping) else {"": per_class}
    counts = np.asarray(train_counts, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, values in series.items():
        acc = np.array([np.nan if a is None else a for a in values], dtype=float)
        ax.scatter(counts, acc, s=18, label=label or None, zorder=3)
        if classes is not None and len(classes) <= 40 and len(series) == 1:
            # Above and below in turn: neighbours in count (the classes' order) do not write over each other.
            for c, (name, x, y) in enumerate(zip(classes, counts, acc, strict=True)):
                if not np.isnan(y):
                    offset = (4, 3) if c % 2 == 0 else (4, -10)
                    ax.annotate(name, (x, y), xytext=offset, textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    lo, hi = counts.min() / 1.5, counts.max() * 1.5
    for threshold in (few, many):
        if threshold is not None and lo < threshold < hi:
            ax.axvline(threshold, color="gray", ls="--", lw=1, zorder=1)
    if many is not None and few is not None:
        for text, x in (
            (f"few (< {few})", np.sqrt(lo * min(max(few, lo), hi))),
            ("medium", np.sqrt(min(max(few, lo), hi) * min(max(many, lo), hi))),
            (f"many (> {many})", np.sqrt(min(max(many, lo), hi) * hi)),
        ):
            ax.text(x, 1.12, text, ha="center", va="bottom", fontsize=8, color="gray", clip_on=False)
    ax.set(xlabel="training images of the class (log scale)", ylabel="test accuracy", ylim=(-0.08, 1.1))
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlim(lo, hi)
    # Plain numbers at 1, 2, 5 x 10^k: a log axis with a decade or two shows too few otherwise.
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title("per-class accuracy vs training count", pad=22)
    if len(series) > 1:
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_reliability(
    bins: ReliabilityBins, path: Path, *, title: str = "reliability", ece: float | None = None
) -> None:
    """Accuracy against confidence per bin with the diagonal of perfect calibration, and below it
    how many images each bin holds; the legend sits outside the axes, so it covers no bar."""
    width = np.diff(bins.edges)
    filled = bins.count > 0
    fig, (ax, count_ax) = plt.subplots(
        2, 1, figsize=(4.6, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    left = bins.edges[:-1][filled]
    ax.bar(left, bins.accuracy[filled], width=width[filled], align="edge",
           edgecolor="black", alpha=0.7, label="accuracy of the bin")  # fmt: skip
    ax.plot(left + width[filled] / 2, bins.confidence[filled], "D", color="tab:red", ms=5,
            label="mean confidence of the bin")  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    heading = title if ece is None else f"{title}: ECE {ece:.4f}"
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=heading)
    count_ax.bar(
        left, bins.count[filled], width=width[filled], align="edge", color="tab:gray", edgecolor="black"
    )
    for x, w, n in zip(left, width[filled], bins.count[filled], strict=True):
        count_ax.annotate(str(int(n)), (x + w / 2, n), xytext=(0, 1), textcoords="offset points",
                          ha="center", va="bottom", fontsize=6)  # fmt: skip
    count_ax.set(xlabel="confidence", ylabel="images")
    handles, labels = ax.get_legend_handles_labels()
    count_ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.5), ncol=2, fontsize=7)
    count_ax.set_ylim(0, max(1, int(bins.count.max())) * 1.3)
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


def _nan(values: Sequence[float | None]) -> list[float]:
    return [np.nan if v is None else v for v in values]
