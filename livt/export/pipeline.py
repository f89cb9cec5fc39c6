"""The export behind ``livt-export``: load a run, calibrate, fold, export, verify, evaluate, publish.

Everything is written into a temporary folder beside the destination and verified there; only a
fully verified export is moved into place, so a failed export leaves no artifact behind.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from livt.export.errors import ExportError
from livt.export.metadata import build_metadata
from livt.export.options import ExportOptions
from livt.export.publish import ExportResult
from livt.export.report import ExportReport
from livt.prior import PriorError

logger = logging.getLogger(__name__)


@dataclass
class ExportSplits:
    """Which data each step reads, decided once: splits are opened (streamed later), not loaded."""

    val: Any | None  # calibration; None when the run has no val split and nothing needs one
    evaluation: Any | None  # the accuracy table (``--eval-split``)
    x_check: np.ndarray  # the images every variant is verified on (val, else test)
    eval_split: str | None  # the split ``evaluation`` is ("auto" resolved)


def run_export(opts: ExportOptions) -> ExportResult:
    """Export ``opts.run_dir`` as ``opts`` asks. Raises ``ExportError`` / ``VerificationError``."""
    from livt.export.evaluation import evaluate_variants, score_candidates
    from livt.export.fold import FoldedClassifier, resolve_prior_fold
    from livt.export.publish import EngineJob, publish_engine, publish_onnx, publish_triton
    from livt.export.source import load_source
    from livt.export.variants import export_variants

    if opts.builds_engine:
        from livt.export.tensorrt import unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise ExportError(f"cannot build a TensorRT engine: {reason}")
    source = load_source(opts.run_dir, opts.checkpoint)
    opts = group_thresholds(opts, source.meta)
    meta = source.meta
    try:
        fold = resolve_prior_fold(
            opts.prior,
            meta["class_counts"],
            meta["classes"],
            meta["loss"],
            float(meta["tau"]),
            opts.prior_rule,
        )
    except PriorError as exc:
        raise ExportError(f"--prior: {exc}") from exc
    # Before the costly steps: a destination that cannot be made fails at once, not after them.
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    splits = open_splits(source, opts)
    opts = replace(opts, eval_split=splits.eval_split)  # "auto" resolved: what the report names

    # On by default: the per-class bias the calibrator fits on val also sets Bal-BCE's tau for the
    # user (docs/study.md: it matched or beat retraining at the best tau of a sweep).
    choice = calibrate(source, splits.val, opts) if opts.calibrates and splits.val is not None else None
    calibration = choice.calibration if choice is not None else None
    folded = FoldedClassifier(source.model, fold.offset, calibration)
    metadata = partial(
        build_metadata,
        meta,
        prior=fold.to_dict(),
        calibration=None
        if choice is None
        else {**calibration.to_dict(), "split": "val", "images": choice.images},
        run_metrics=source.run_metrics,
        source_sha256=source.weights_sha256,
    )
    report = ExportReport(
        run=str(source.run_dir),
        checkpoint=str(source.ckpt_dir),
        format=opts.format,
        prior=fold.to_dict(),
        calibration=None if choice is None else calibration_report(choice, opts),
    )

    out = opts.out
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp_name:
        tmp = Path(tmp_name)
        variants = export_variants(opts, source, folded, splits.x_check, metadata, tmp, report.parity)
        if splits.evaluation is not None:
            report.evaluation, fp32_logits, targets = evaluate_variants(
                variants, splits.evaluation, meta["class_counts"], fold, opts
            )
            if choice is not None and opts.eval_split == "test":
                score_candidates(report.calibration, choice, fp32_logits, targets, fold)
        if opts.format in ("onnx", "openvino"):
            return publish_onnx(variants, out, report)
        publish = publish_engine if opts.format == "tensorrt" else publish_triton
        return publish(EngineJob(opts, variants, folded, splits.x_check, metadata, out, tmp, report))


def group_thresholds(opts: ExportOptions, meta: dict[str, Any]) -> ExportOptions:
    """Fill unset ``many``/``few`` from the run's meta.json, so export groups classes as training did."""
    from livt.training.checkpoint import recorded_thresholds

    run_many, run_few = recorded_thresholds(meta)
    many = opts.many if opts.many is not None else run_many
    few = opts.few if opts.few is not None else run_few
    if not 0 <= few <= many:
        raise ExportError(
            f"need 0 <= few ({few}) <= many ({many}) (unset ones come from the run's meta.json)"
        )
    logger.info("many-shot: > %d training images, few-shot: < %d", many, few)
    return replace(opts, many=int(many), few=int(few))


def open_splits(source: Any, opts: ExportOptions) -> ExportSplits:
    """The val split (calibration), the eval split (accuracy table) and the verification images."""
    from livt.export.source import load_subset, open_split

    try:
        val = open_split(source, "val", data_root=opts.data_root)
    except ExportError as exc:
        if opts.calibration_needs_val:
            raise ExportError(f"--calibrate {opts.calibrate} needs the val split: {exc}") from exc
        if opts.eval_split == "val":
            raise ExportError(f"--eval-split val needs the val split: {exc}") from exc
        logger.info("no val split (%s); exported uncalibrated, verifying on test images", exc)
        val = None
    split = opts.eval_split
    test = None
    if split == "test" or val is None:
        test = open_split(source, "test", data_root=opts.data_root)
    elif split == "auto":
        # test/ is optional in an image folder: a run without one is evaluated on val.
        try:
            test = open_split(source, "test", data_root=opts.data_root)
        except ExportError as exc:
            logger.info("no test split (%s): the accuracy table is on val", exc)
    if split == "auto":
        split = "test" if test is not None else "val"
    evaluation = {"test": test, "val": val, None: None}[split]
    x_check, _ = load_subset(val if val is not None else test, opts.verify_samples)
    return ExportSplits(val=val, evaluation=evaluation, x_check=x_check, eval_split=split)


def calibrate(source: Any, val: Any, opts: ExportOptions) -> Any:
    """Fit the calibrator on the raw (balanced) logits of the balanced val split, unweighted."""
    from livt.export.calibration import CALIBRATORS, select_calibration
    from livt.export.fold import FoldedClassifier
    from livt.export.onnx import run_torch
    from livt.export.source import iter_batches

    raw = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32))
    batches = [(run_torch(raw, x)[0], y) for x, y in iter_batches(val, workers=opts.workers)]
    z_val, y_val = np.concatenate([z for z, _ in batches]), np.concatenate([y for _, y in batches])
    methods = CALIBRATORS if opts.calibrate == "auto" else (opts.calibrate,)
    choice = select_calibration(z_val, y_val, methods, folds=opts.calibration_folds)
    if opts.calibrate != "auto" and choice.calibration.method == "none":
        # An explicit method is what the user asked for, even where it does not beat no calibration.
        choice.calibration = choice.candidates[opts.calibrate]
    logger.info(
        "calibration %s on %d balanced val images (%d-fold CV NLL %s)",
        choice.calibration.method, choice.images, choice.folds,
        ", ".join(f"{m} {s['nll']:.4f}" for m, s in choice.scores.items()),
    )  # fmt: skip
    return choice


def calibration_report(choice: Any, opts: ExportOptions) -> dict[str, Any]:
    return {
        "method": choice.calibration.method,
        "selection": "auto" if opts.calibrate == "auto" else "fixed",
        "criterion": f"{choice.folds}-fold cross-validated NLL, balanced val split, unweighted",
        "split": "val",
        "images": choice.images,
        "params": choice.calibration.to_dict(),
        "candidates": {m: {"val_cv": s} for m, s in choice.scores.items()},
    }
