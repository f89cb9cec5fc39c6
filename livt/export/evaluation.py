"""The per-variant accuracy table and the calibration candidates' scores, from one streamed pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from livt.export.calibration import CalibrationChoice
from livt.export.fold import PriorFold
from livt.export.options import ExportOptions
from livt.export.variants import FP32
from livt.metrics import SCALAR_METRICS


def evaluate_variants(
    variants: dict[str, Path], dataset: Any, class_counts: list[int], fold: PriorFold, opts: ExportOptions
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Every engine run's metrics on ``dataset`` (and its top-1 agreement with ONNX Runtime fp32), each
    batch decoded once for all of them.

    Returns the report entry, the fp32 variant's logits and the targets.
    """
    from livt.export.source import iter_batches
    from livt.export.variants import engine_runs, run_in_batches
    from livt.metrics import compute_metrics

    backends = {name: run.open(variants, opts.threads) for name, run in engine_runs(variants).items()}
    logits: dict[str, list[np.ndarray]] = {name: [] for name in backends}
    targets = []
    for x, y in iter_batches(dataset, limit=opts.eval_limit, workers=opts.workers):
        for name, backend in backends.items():
            logits[name].append(run_in_batches(backend, x)[0])
        targets.append(y)
    y = np.concatenate(targets)
    all_logits = {name: np.concatenate(parts) for name, parts in logits.items()}
    top1_fp32 = all_logits[FP32].argmax(1)
    results = {}
    for name, z in all_logits.items():
        metrics = compute_metrics(z, y, class_counts, many=opts.many, few=opts.few)
        results[name] = {k: (None if metrics[k] is None else float(metrics[k])) for k in SCALAR_METRICS}
        results[name]["agreement_fp32"] = float(np.mean(z.argmax(1) == top1_fp32))
    entry = {
        "split": opts.eval_split,
        "samples": len(y),
        # The artifacts' outputs are scored as they are: under the folded prior, on this split's labels.
        "prior": fold.mode,
        "split_labels": "balanced" if len(set(np.bincount(y).tolist()) - {0}) == 1 else "as in the split",
        "groups": {"many": f"> {opts.many} training images", "few": f"< {opts.few} training images"},
        "variants": results,
    }
    return entry, all_logits[FP32], y


def score_candidates(
    report: dict[str, Any],
    choice: CalibrationChoice,
    fp32_logits: np.ndarray,
    targets: np.ndarray,
    fold: PriorFold,
) -> None:
    """Each calibration candidate's NLL and ECE (balanced prior) on the test images, fitted on val.

    The fp32 artifact's logits are ``c(z) + offset``: ``z`` is recovered from them, so the test split
    is decoded once for the accuracy table and the candidates alike.
    """
    from livt.metrics import compute_metrics

    chosen = choice.calibration
    raw = (fp32_logits - fold.offset - chosen.bias) / chosen.scale
    counts = [1] * raw.shape[1]  # the groups are not reported here
    for method, calibration in choice.candidates.items():
        m = compute_metrics(calibration.apply(raw), targets, counts)
        report["candidates"][method]["test"] = {"nll": m["nll"], "ece": m["ece"]}
