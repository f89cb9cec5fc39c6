"""The report of a scored split: ``metrics.json``, a ``classification_report``-style table and the plots.

Shared by the end of fine-tuning (the test split, read once by the best checkpoint) and
``livt-train evaluate``. Values are rounded to what the data can tell: an accuracy over ``n`` images
moves in steps of ``1/n``, so it gets the decimals that resolve that step (3 for 200 images, 5 for
10,000) and no more; ECE, MCE and NLL, which are not counts, get 4.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livt.files import atomic_write_text
from livt.metrics import (
    SCALAR_METRICS,
    class_scores,
    compute_metrics,
    reliability_bins,
    tail_accuracy,
)
from livt.training import plots

_CONTINUOUS = ("ece", "mce", "nll")


def decimals_for(n: int) -> int:
    """Decimals that resolve a fraction of ``n`` counts (its step ``1/n``), at least 2."""
    return max(2, math.ceil(math.log10(2 * max(n, 1))))


def round_fraction(value: float | None, n: int) -> float | None:
    return None if value is None else round(value, decimals_for(n))


def round_summary(metrics: dict[str, Any], n: int) -> dict[str, Any]:
    """The ``SCALAR_METRICS`` of ``metrics`` rounded for a split of ``n`` images."""
    return {
        k: (None if metrics[k] is None else round(metrics[k], 4 if k in _CONTINUOUS else decimals_for(n)))
        for k in SCALAR_METRICS
    }


def round_per_class(
    per_class: Sequence[float | None], confusion: Sequence[Sequence[int]]
) -> list[float | None]:
    """Per-class accuracies, each rounded for its own number of images (a row of ``confusion``)."""
    support = np.asarray(confusion).sum(axis=1)
    return [round_fraction(a, int(n)) for a, n in zip(per_class, support, strict=True)]


def write_report(
    out_dir: Path,
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    classes: Sequence[str],
    train_counts: Sequence[int],
    many: int,
    few: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json`` and the per-class, reliability and confusion plots; return the metrics.

    ``metrics.json``: the scalar metrics, ``classes`` (per class name: precision, recall, F1,
    support, training count, shot group), ``confusion`` (rows true, columns predicted, in class
    order), ``per_class`` (recall by class index) and ``train_counts`` for tools, then ``extra``.
    """
    metrics = compute_metrics(logits, targets, train_counts, many=many, few=few)
    n = metrics["num_samples"]
    scores = class_scores(metrics["confusion"])
    predicted = np.asarray(metrics["confusion"]).sum(axis=0)  # what a precision is a fraction of
    per_class = {
        name: {
            "precision": round_fraction(scores["precision"][c], int(predicted[c])),
            "recall": round_fraction(scores["recall"][c], scores["support"][c]),
            "f1": round_fraction(scores["f1"][c], scores["support"][c]),
            "support": scores["support"][c],
            "train_count": int(train_counts[c]),
            "group": _group(train_counts[c], many, few),
        }
        for c, name in enumerate(classes)
    }
    tail3 = tail_accuracy(metrics["per_class"], train_counts, k=min(3, len(train_counts)))
    report = {
        **round_summary(metrics, n),
        "num_samples": n,
        "many_threshold": many,
        "few_threshold": few,
        "tail3": round_fraction(tail3, n),
        "classes": per_class,
        "confusion": metrics["confusion"],
        "per_class": [entry["recall"] for entry in per_class.values()],
        "train_counts": [int(c) for c in train_counts],
        **(extra or {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    plots_dir = out_dir / "plots"
    plots.plot_per_class_accuracy(
        metrics["per_class"], train_counts, plots_dir / "per_class_accuracy.png",
        classes=classes, many=many, few=few,
    )  # fmt: skip
    bins = reliability_bins(logits.softmax(dim=1), targets)
    plots.plot_reliability(bins, plots_dir / "reliability.png", ece=metrics["ece"])
    plots.plot_confusion(metrics["confusion"], classes, plots_dir / "confusion.png")
    return report


def format_report(report: dict[str, Any], title: str) -> str:
    """``report`` (as ``write_report`` returns it) as a table, scikit-learn's ``classification_report``
    plus each class's training count and shot group, then the Many/Medium/Few rows."""
    entries = report["classes"]
    many, few = report["many_threshold"], report["few_threshold"]
    groups = {"many": f"> {many}", "medium": f"{few}-{many}", "few": f"< {few}"}
    summary = ["accuracy (top-1)", "macro avg", *(f"{g} ({rule} train)" for g, rule in groups.items())]
    width = max(len(name) for name in [*entries, *summary])
    d = decimals_for(report["num_samples"])

    def cell(value: float | None, digits: int) -> str:
        return f"{'-':>9}" if value is None else f"{value:>9.{digits}f}"

    def row(name: str, precision: str, recall: str, f1: str, support: str, train: str, note: str = "") -> str:
        return f"{name:<{width}} {precision:>9} {recall:>9} {f1:>9} {support:>8} {train:>7}  {note}".rstrip()

    lines = [title, row("", "precision", "recall", "f1-score", "support", "train")]
    for name, e in entries.items():
        recall_digits = decimals_for(e["support"])
        lines.append(row(
            name, cell(e["precision"], recall_digits), cell(e["recall"], recall_digits),
            cell(e["f1"], recall_digits), str(e["support"]), str(e["train_count"]), e["group"],
        ))  # fmt: skip
    f1s = [e["f1"] for e in entries.values() if e["f1"] is not None]
    precisions = [e["precision"] for e in entries.values() if e["precision"] is not None]
    n = str(report["num_samples"])
    lines += [
        "",
        row(summary[0], "", "", cell(report["top1"], d), n, ""),
        row(
            summary[1],
            cell(_mean(precisions), d),
            cell(report["balanced_acc"], d),
            cell(_mean(f1s), d),
            n,
            "",
        ),
    ]
    for label, group in zip(summary[2:], groups, strict=True):
        members = sum(1 for e in entries.values() if e["group"] == group)
        lines.append(row(label, "", cell(report[group], d), "", "", str(members), "classes"))
    lines.append(
        f"balanced accuracy (macro recall) {percent(report['balanced_acc'])}, top-1 {percent(report['top1'])}, "
        f"top-5 {percent(report['top5'])}, ECE {report['ece']:.4f}, NLL {report['nll']:.4f}"
    )
    return "\n".join(lines)


def _group(count: int, many: int, few: int) -> str:
    return "many" if count > many else "few" if count < few else "medium"


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def percent(value: float | None) -> str:
    """A fraction for the console: ``0.8452`` -> ``84.5 %``."""
    return "-" if value is None else f"{100 * value:.1f} %"
