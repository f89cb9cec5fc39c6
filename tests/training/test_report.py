"""The report of a scored split: metrics.json keyed by class name, rounding, the table, the plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from livt.metrics import reliability_bins
from livt.training import plots
from livt.training.report import decimals_for, format_report, write_report

CLASSES = ["cat", "dog", "eel"]
TRAIN_COUNTS = [300, 40, 6]


def _scored(n_per_class: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    targets = torch.arange(3).repeat_interleave(n_per_class)
    logits = torch.randn(len(targets), 3, generator=gen)
    logits[torch.arange(len(targets)), targets] += torch.tensor([2.0, 1.0, 0.0])[targets]
    return logits, targets


def test_decimals_resolve_one_image():
    assert [decimals_for(n) for n in (1, 20, 200, 300, 10_000)] == [2, 2, 3, 3, 5]


def test_metrics_json_is_keyed_by_class_name_and_rounded(tmp_path: Path):
    logits, targets = _scored()
    report = write_report(
        tmp_path, logits, targets, classes=CLASSES, train_counts=TRAIN_COUNTS, many=100, few=20
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == report
    assert list(saved["classes"]) == CLASSES
    cat = saved["classes"]["cat"]
    assert set(cat) == {"precision", "recall", "f1", "support", "train_count", "group"}
    assert (cat["support"], cat["train_count"], cat["group"]) == (100, 300, "many")
    assert [saved["classes"][c]["group"] for c in CLASSES] == ["many", "medium", "few"]
    pred = logits.argmax(1)
    hits = ((pred == 0) & (targets == 0)).sum().item()
    assert cat["recall"] == round(hits / 100, 3) and cat["precision"] == round(
        hits / (pred == 0).sum().item(), 3
    )
    assert saved["confusion"][0][0] == hits and sum(map(sum, saved["confusion"])) == 300
    # 300 images: accuracies in steps of 1/300 get 3 decimals; ECE and NLL 4
    assert saved["top1"] == round((pred == targets).float().mean().item(), 3)
    assert all(len(str(saved[k]).split(".")[-1]) <= 4 for k in ("ece", "nll"))
    assert saved["per_class"] == [saved["classes"][c]["recall"] for c in CLASSES]
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "per_class_accuracy.png", "reliability.png", "confusion.png"}  # fmt: skip


def test_the_table_has_a_row_per_class_and_the_shot_groups(tmp_path: Path):
    logits, targets = _scored()
    report = write_report(
        tmp_path, logits, targets, classes=CLASSES, train_counts=TRAIN_COUNTS, many=100, few=20
    )
    table = format_report(report, "test split:").splitlines()
    assert table[0] == "test split:" and table[1].split() == [
        "precision",
        "recall",
        "f1-score",
        "support",
        "train",
    ]
    cat = table[2].split()
    assert (
        cat[0] == "cat"
        and cat[2] == f"{report['classes']['cat']['recall']:.3f}"
        and cat[-3:] == ["100", "300", "many"]
    )
    assert any(
        line.startswith("few (< 20 train)") and line.split()[4] == f"{report['few']:.3f}" for line in table
    )
    assert table[-1].startswith("balanced accuracy (macro recall) ")
    header = len(table[1])
    assert all(len(line.rsplit(None, 1)[0]) == header for line in table[2:5])  # the columns line up


def test_reliability_legend_covers_nothing_and_names_ece(tmp_path: Path, monkeypatch):
    logits, targets = _scored()
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.plot_reliability(reliability_bins(logits.softmax(1), targets), tmp_path / "r.png", ece=0.0123)
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = next(a.get_legend() for a in fig.axes if a.get_legend() is not None)
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    assert "ECE 0.0123" in fig.axes[0].get_title()
    counts = [t.get_text() for t in fig.axes[1].texts]
    assert sum(map(int, counts)) == 300  # every bin's count written on it
    plt.close(fig)


def test_curves_mark_the_best_epoch_and_keep_top1_visible_under_balanced(tmp_path: Path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    history = [{"epoch": e, "train_loss": 2.0 - e / 4, "lr": 1e-3 * (1 - e / 4),
                "val": {"top1": 0.3 + e / 10, "balanced_acc": 0.3 + e / 10, "few": 0.1, "loss": 2.1 - e / 5}}
               for e in range(4)]  # fmt: skip
    plots.plot_curves(history, tmp_path / "c.png", best_epoch=2)
    loss_ax, acc_ax, lr_ax = figures[0].axes
    assert [line.get_label() for line in loss_ax.get_lines()][:2] == ["train", "val"]
    top1, balanced = acc_ax.get_lines()[:2]
    assert top1.get_linewidth() > balanced.get_linewidth() and balanced.get_linestyle() == "--"
    assert list(top1.get_xdata()) == [1, 2, 3, 4]  # epochs counted from 1
    for ax in (loss_ax, acc_ax, lr_ax):
        assert any(list(line.get_xdata()) == [3, 3] for line in ax.get_lines())  # best epoch 2 -> 3rd
    plt.close(figures[0])


@pytest.mark.parametrize("names", [True, False])
def test_per_class_plot_names_the_classes_and_draws_the_thresholds(tmp_path, monkeypatch, names):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.plot_per_class_accuracy([0.9, 0.5, None], TRAIN_COUNTS, tmp_path / "p.png",
                                  classes=CLASSES if names else None, many=100, few=20)  # fmt: skip
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.texts if t.get_text() in CLASSES] == (["cat", "dog"] if names else [])
    assert {line.get_xdata()[0] for line in ax.get_lines()} == {20, 100}
    assert {t.get_text() for t in ax.texts} >= {"few (< 20)", "medium", "many (> 100)"}
    plt.close(figures[0])
