"""The export pipeline behind ``livt-export``: load a run, fold, export, verify, then publish.

Everything is written into a temporary folder beside the destination and verified there; only a
fully verified export is moved into place, so a failed export leaves no artifact behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import checksum_path, engine_sidecar_path, write_checksum
from livt.export.errors import ExportError, VerificationError
from livt.export.metadata import build_metadata
from livt.prior import DEFAULT_RULE, PRIOR_RULES, PriorError

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "tensorrt", "triton")
CALIBRATION_CHOICES = ("auto", "none", "temperature", "bcts", "vector")
REPORT_FILE = "export_report.json"
DEFAULT_MANY, DEFAULT_FEW = 100, 20
_EVAL_KEYS = ("top1", "balanced_acc", "many", "medium", "few", "ece", "nll")


@dataclass
class ExportOptions:
    """Everything ``livt-export`` can be asked for; ``validate`` rejects unsupported combinations."""

    run_dir: Path
    out: Path
    format: str = "onnx"
    prior: str = "balanced"
    prior_rule: str = DEFAULT_RULE
    calibrate: str | None = None  # None: no calibration; "auto": chosen on val; or one method
    calibration_folds: int = 5
    optimize: bool = False
    int8: bool = False
    int8_mode: str | None = None  # "dynamic" | "static"; None: dynamic for ONNX, static (Q/DQ) for TensorRT
    fp16: bool = False
    opset: int = 17
    atol: float = 1e-4
    int8_min_agreement: float = 0.9
    checkpoint: str = "best"
    data_root: Path | None = None
    verify_samples: int = 256
    calibration_images: int = 256
    eval_split: str | None = "test"
    eval_limit: int | None = None
    many: int | None = None  # None: the run's recorded threshold (metrics.json), else DEFAULT_MANY
    few: int | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_gib: float = 4.0
    timing_cache_dir: Path | None = None
    triton_name: str = "livt"
    triton_platform: str = "onnxruntime_onnx"
    triton_max_batch: int = 128
    threads: int | None = None
    workers: int = 0  # data loading processes for the streamed splits (0: in this process)

    def validate(self) -> None:
        """Raise ``ExportError`` naming the first unsupported option or combination."""
        engine = self.format == "tensorrt" or (
            self.format == "triton" and self.triton_platform == "tensorrt_plan"
        )
        if self.format not in FORMATS:
            raise ExportError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.calibrate not in (None, *CALIBRATION_CHOICES):
            raise ExportError(f"--calibrate must be one of {CALIBRATION_CHOICES}, got {self.calibrate!r}")
        if self.prior_rule not in PRIOR_RULES:
            raise ExportError(f"--prior-rule must be one of {PRIOR_RULES}, got {self.prior_rule!r}")
        if self.calibration_folds < 2:
            raise ExportError(f"--calibration-folds must be >= 2, got {self.calibration_folds}")
        if self.fp16 and not engine:
            raise ExportError("--fp16 needs a TensorRT engine (--format tensorrt); ONNX exports stay FP32")
        if not engine and any(b is not None for b in (self.min_batch, self.opt_batch, self.max_batch)):
            raise ExportError(
                "--min-batch/--opt-batch/--max-batch shape a TensorRT engine; use --format tensorrt"
            )
        if self.int8_mode is not None and not self.int8:
            raise ExportError("--int8-mode needs --int8")
        if self.int8_mode not in (None, "dynamic", "static"):
            raise ExportError(f"--int8-mode must be 'dynamic' or 'static', got {self.int8_mode!r}")
        if engine and self.optimize:
            raise ExportError("--optimize fuses ops for ONNX Runtime; TensorRT optimises the graph itself")
        if engine and self.int8_mode == "dynamic":
            raise ExportError("TensorRT INT8 needs explicit Q/DQ: use --int8-mode static (or leave it out)")
        if self.format == "onnx" and Path(self.out).suffix != ".onnx":
            raise ExportError(f"--out for --format onnx must end in .onnx, got {self.out}")
        if self.format == "tensorrt" and Path(self.out).suffix not in (".plan", ".engine"):
            raise ExportError(f"--out for --format tensorrt must end in .plan or .engine, got {self.out}")
        if self.format == "triton" and Path(self.out).suffix:
            raise ExportError(f"--out for --format triton is a model repository folder, got {self.out}")
        if self.eval_split not in (None, "val", "test"):
            raise ExportError(f"--eval-split must be 'val', 'test' or 'none', got {self.eval_split!r}")
        if self.atol < 0 or not 0 <= self.int8_min_agreement <= 1:
            raise ExportError("--atol must be >= 0 and --int8-min-agreement within [0, 1]")
        if self.opset < 17:
            raise ExportError(f"--opset {self.opset} is too old: LayerNormalization needs opset >= 17")
        # An unset threshold comes from the run (see _with_group_thresholds), which checks the pair again.
        if any(v is not None and v < 0 for v in (self.few, self.many)) or (
            self.few is not None and self.many is not None and self.few > self.many
        ):
            raise ExportError(f"need 0 <= --few ({self.few}) <= --many ({self.many})")
        if self.verify_samples < 1:
            raise ExportError("--verify-samples must be >= 1")
        if self.workers < 0:
            raise ExportError(f"--workers must be >= 0, got {self.workers}")

    @property
    def resolved_int8_mode(self) -> str | None:
        if not self.int8:
            return None
        return self.int8_mode or ("dynamic" if self.format == "onnx" else "static")

    @property
    def builds_engine(self) -> bool:
        return self.format == "tensorrt" or (
            self.format == "triton" and self.triton_platform == "tensorrt_plan"
        )


@dataclass
class ExportResult:
    """What an export wrote: the artifact to serve first, every file, and the report."""

    artifact: Path
    written: list[Path]
    report: dict[str, Any] = field(default_factory=dict)


def run_export(opts: ExportOptions) -> ExportResult:
    """Export ``opts.run_dir`` as ``opts`` asks. Raises ``ExportError`` / ``VerificationError``."""
    from livt.export.fold import FoldedClassifier, resolve_prior_fold
    from livt.export.source import load_source, load_subset, open_split

    opts.validate()
    if opts.builds_engine:
        from livt.export.tensorrt import EngineProfile, unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise ExportError(f"cannot build a TensorRT engine: {reason}")
        EngineProfile(opts.min_batch or 1, opts.opt_batch or 8, opts.max_batch or 128)
    source = load_source(opts.run_dir, opts.checkpoint)
    opts = _with_group_thresholds(opts, source.run_metrics)
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

    # Splits are opened, not loaded: whole splits are streamed batch by batch (a val or test split
    # of ImageNet-LT at 224 px would be tens of GB as float32), and only the small verification
    # subset is held as an array.
    val = _open_val(source, opts)
    if opts.eval_split == "test":
        eval_set = open_split(source, "test", data_root=opts.data_root)
    else:
        eval_set = val if opts.eval_split == "val" else None
    check_set = val if val is not None else eval_set
    if check_set is None:
        check_set = open_split(source, "test", data_root=opts.data_root)
    x_check, _ = load_subset(check_set, opts.verify_samples)

    choice = _calibrate(source, val, opts) if opts.calibrate not in (None, "none") else None
    calibration = choice.calibration if choice is not None else None
    folded = FoldedClassifier(source.model, fold.offset, calibration)
    calibration_meta = (
        {**calibration.to_dict(), "split": "val", "images": choice.images} if choice is not None else None
    )

    def metadata(quantization: str | None = None) -> dict[str, Any]:
        return build_metadata(
            meta,
            prior=fold.to_dict(),
            calibration=calibration_meta,
            run_metrics=source.run_metrics,
            source_sha256=source.weights_sha256,
            quantization=quantization,
        )

    report: dict[str, Any] = {
        "run": str(source.run_dir),
        "checkpoint": str(source.ckpt_dir),
        "format": opts.format,
        "prior": fold.to_dict(),
        "calibration": _calibration_report(choice, opts) if choice is not None else None,
        "parity": {},
        "evaluation": None,
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp_name:
        tmp = Path(tmp_name)
        variants = _export_onnx_variants(opts, source, folded, x_check, metadata, tmp, report)
        if eval_set is not None:
            report["evaluation"], fp32_logits, targets = _evaluate(variants, eval_set, source, fold, opts)
            if choice is not None and opts.eval_split == "test":
                # The fp32 artifact's logits are c(z) + offset: recover z and score every candidate
                # calibrator on the same images, without decoding the split a second time.
                raw = (fp32_logits - fold.offset - calibration.bias) / calibration.scale
                _score_candidates(report["calibration"], choice, raw, targets, opts.eval_split)
        if opts.format == "onnx":
            files = _publish_onnx(variants, out, report)
            return ExportResult(files[0], files, report)
        if opts.format == "tensorrt":
            files = _publish_engine(opts, variants, folded, x_check, metadata, out, tmp, report)
            return ExportResult(files[0], files, report)
        return _publish_triton(opts, variants, folded, x_check, metadata, out, tmp, report)


def _with_group_thresholds(opts: ExportOptions, run_metrics: dict[str, Any]) -> ExportOptions:
    """Fill unset ``many``/``few`` from the run's metrics.json, so export groups classes as training did."""
    many = opts.many if opts.many is not None else run_metrics.get("many_threshold", DEFAULT_MANY)
    few = opts.few if opts.few is not None else run_metrics.get("few_threshold", DEFAULT_FEW)
    if not 0 <= few <= many:
        raise ExportError(
            f"need 0 <= few ({few}) <= many ({many}) (unset ones come from the run's metrics.json)"
        )
    logger.info("many-shot: > %d training images, few-shot: < %d", many, few)
    return replace(opts, many=int(many), few=int(few))


def _open_val(source: Any, opts: ExportOptions) -> Any | None:
    """The val split, or None when the run has none and nothing requires it (``val_per_class=0``)."""
    from livt.export.source import open_split

    try:
        return open_split(source, "val", data_root=opts.data_root)
    except ExportError as exc:
        needed_by = (
            "--calibrate"
            if opts.calibrate not in (None, "none")
            else "--eval-split val"
            if opts.eval_split == "val"
            else None
        )
        if needed_by:
            raise ExportError(f"{needed_by} needs the val split: {exc}") from exc
        logger.info("no val split (%s); verifying on test images", exc)
        return None


def _torch_logits(module: Any, dataset: Any, opts: ExportOptions) -> tuple[np.ndarray, np.ndarray]:
    """``module``'s logits and the targets over ``dataset``, streamed batch by batch."""
    from livt.export.onnx import run_torch
    from livt.export.source import iter_batches

    logits, targets = [], []
    for x, y in iter_batches(dataset, workers=opts.workers):
        logits.append(run_torch(module, x)[0])
        targets.append(y)
    return np.concatenate(logits), np.concatenate(targets)


def _calibrate(source: Any, val: Any, opts: ExportOptions) -> Any:
    """Fit the calibrator on the raw (balanced) logits of the balanced val split, unweighted."""
    from livt.export.calibration import CALIBRATORS, select_calibration
    from livt.export.fold import FoldedClassifier

    raw = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32))
    z_val, y_val = _torch_logits(raw, val, opts)
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


def _calibration_report(choice: Any, opts: ExportOptions) -> dict[str, Any]:
    return {
        "method": choice.calibration.method,
        "selection": "auto" if opts.calibrate == "auto" else "fixed",
        "criterion": f"{choice.folds}-fold cross-validated NLL, balanced val split, unweighted",
        "split": "val",
        "images": choice.images,
        "params": choice.calibration.to_dict(),
        "candidates": {m: {"val_cv": s} for m, s in choice.scores.items()},
    }


def _score_candidates(
    report: dict[str, Any], choice: Any, raw: np.ndarray, targets: np.ndarray, split: str
) -> None:
    """Each candidate's NLL and ECE (balanced prior) on the eval split, fitted on val."""
    from livt.training.metrics import compute_metrics

    counts = [1] * raw.shape[1]  # the groups are not reported here
    for method, calibration in choice.candidates.items():
        m = compute_metrics(calibration.apply(raw), targets, counts)
        report["candidates"][method][split] = {"nll": m["nll"], "ece": m["ece"]}


def _export_onnx_variants(
    opts: ExportOptions, source: Any, folded: Any, x_check: np.ndarray, metadata: Any, tmp: Path, report: dict
) -> dict[str, Path]:
    """Export the fp32 ONNX and the requested variants into ``tmp``, verifying each on ``x_check``."""
    from livt.export.onnx import compare, export_onnx, make_session, run_onnx, run_torch
    from livt.export.quantize import INT8_MODES, optimize_onnx, quantize_int8_dynamic, quantize_int8_static
    from livt.export.source import load_subset, open_split

    reference = run_torch(folded, x_check)
    variants: dict[str, Path] = {"onnx-fp32": tmp / "model.onnx"}
    export_onnx(folded, variants["onnx-fp32"], source.input_shape, metadata(), opset=opts.opset)
    if opts.optimize:
        variants["onnx-optimized"] = tmp / "model.opt.onnx"
        cfg = source.meta["model"]
        optimize_onnx(
            variants["onnx-fp32"],
            variants["onnx-optimized"],
            metadata(),
            num_heads=int(cfg["num_heads"]),
            hidden_size=int(cfg["embed_dim"]),
        )
    mode = opts.resolved_int8_mode
    if mode is not None:
        name = f"onnx-{INT8_MODES[mode]}"
        variants[name] = tmp / ("model.int8.onnx" if mode == "dynamic" else "model.qdq.onnx")
        if mode == "dynamic":
            quantize_int8_dynamic(variants["onnx-fp32"], variants[name], metadata(INT8_MODES[mode]))
        else:
            train = open_split(source, "train", data_root=opts.data_root)
            images, _ = load_subset(train, opts.calibration_images)
            quantize_int8_static(variants["onnx-fp32"], variants[name], metadata(INT8_MODES[mode]), images)

    for name, path in variants.items():
        parity = compare(reference, run_onnx(make_session(path, threads=opts.threads), x_check))
        report["parity"][name] = parity.to_dict()
        if "int8" in name:
            _check_agreement(name, parity.top1_agreement, opts.int8_min_agreement, parity.max_abs_diff_logits)
        elif parity.max_abs_diff_logits > opts.atol:
            raise VerificationError(
                f"{name}: ONNX Runtime and PyTorch logits differ by {parity.max_abs_diff_logits:.3g} > --atol "
                f"{opts.atol:g} on {parity.samples} images (top-1 agreement {parity.top1_agreement:.3f}); "
                "nothing was written"
            )
    return variants


def _check_agreement(name: str, agreement: float, threshold: float, max_diff: float) -> None:
    if agreement < threshold:
        raise VerificationError(
            f"{name}: top-1 agreement with PyTorch {agreement:.3f} < threshold {threshold:.3f} "
            f"(max logit diff {max_diff:.3g}); nothing was written"
        )


def _evaluate(
    variants: dict[str, Path], dataset: Any, source: Any, fold: Any, opts: ExportOptions
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Every variant's metrics on the eval split, in one streamed pass (each batch decoded once).

    Returns the report entry and the fp32 variant's logits and the targets.
    """
    from livt.export.onnx import make_session, run_onnx
    from livt.export.source import iter_batches
    from livt.training.metrics import compute_metrics

    sessions = {name: make_session(path, threads=opts.threads) for name, path in variants.items()}
    logits: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    targets = []
    for x, y in iter_batches(dataset, limit=opts.eval_limit, workers=opts.workers):
        for name, session in sessions.items():
            logits[name].append(run_onnx(session, x)[0])
        targets.append(y)
    y = np.concatenate(targets)
    all_logits = {name: np.concatenate(parts) for name, parts in logits.items()}
    results = {}
    for name, z in all_logits.items():
        metrics = compute_metrics(z, y, source.meta["class_counts"], many=opts.many, few=opts.few)
        results[name] = {k: (None if metrics[k] is None else float(metrics[k])) for k in _EVAL_KEYS}
    entry = {
        "split": opts.eval_split,
        "samples": len(y),
        # The artifacts' outputs are scored as they are: under the folded prior, on this split's labels.
        "prior": fold.mode,
        "split_labels": "balanced" if len(set(np.bincount(y).tolist()) - {0}) == 1 else "as in the split",
        "groups": {"many": f"> {opts.many} training images", "few": f"< {opts.few} training images"},
        "variants": results,
    }
    return entry, all_logits["onnx-fp32"], y


def _publish_onnx(variants: dict[str, Path], out: Path, report: dict) -> list[Path]:
    suffix = {
        "onnx-fp32": ".onnx",
        "onnx-optimized": ".opt.onnx",
        "onnx-int8-dynamic": ".int8.onnx",
        "onnx-int8-qdq": ".qdq.onnx",
    }
    targets = {name: out.with_name(out.name.removesuffix(".onnx") + suffix[name]) for name in variants}
    report["artifacts"] = {name: str(path) for name, path in targets.items()}
    report_path = out.parent / REPORT_FILE
    _write_json(variants["onnx-fp32"].parent / REPORT_FILE, report)
    sums = {name: write_checksum(path, targets[name].name) for name, path in variants.items()}
    written = []
    for name, path in variants.items():
        # Checksum first: in between, serving refuses the pair (mismatch) rather than serving unchecked.
        os.replace(sums[name], checksum_path(targets[name]))
        os.replace(path, targets[name])
        written += [targets[name], checksum_path(targets[name])]
    os.replace(variants["onnx-fp32"].parent / REPORT_FILE, report_path)
    return [*written, report_path]


def _build_verified_engine(
    opts: ExportOptions,
    variants: dict[str, Path],
    folded: Any,
    x_check: np.ndarray,
    metadata: Any,
    plan: Path,
    report: dict,
) -> dict[str, Any]:
    """Build ``plan`` (+ sidecar) from the fp32 or Q/DQ ONNX and verify it on the GPU."""
    from livt.export.onnx import compare, run_torch
    from livt.export.tensorrt import EngineProfile, build_engine, load_engine, run_engine

    profile = EngineProfile(opts.min_batch or 1, opts.opt_batch or 8, opts.max_batch or 128)
    src = variants["onnx-int8-qdq"] if opts.int8 else variants["onnx-fp32"]
    build = build_engine(
        src,
        plan,
        profile,
        fp16=opts.fp16,
        int8=opts.int8,
        workspace_gib=opts.workspace_gib,
        timing_cache_dir=opts.timing_cache_dir,
    )
    quantization = "int8-qdq" if opts.int8 else None
    sidecar = {
        **metadata(quantization),
        **build,
        "precision": "int8" if opts.int8 else ("fp16" if opts.fp16 else "fp32"),
        "profile": {
            "min_batch": profile.min_batch,
            "opt_batch": profile.opt_batch,
            "max_batch": profile.max_batch,
        },
    }
    _write_json(engine_sidecar_path(plan), sidecar)
    parity = compare(run_torch(folded, x_check), run_engine(load_engine(plan), x_check, profile.max_batch))
    report["parity"]["tensorrt"] = parity.to_dict()
    if opts.int8 or opts.fp16:
        _check_agreement(
            "tensorrt", parity.top1_agreement, opts.int8_min_agreement, parity.max_abs_diff_logits
        )
    elif parity.max_abs_diff_logits > max(opts.atol, 1e-3):
        # TF32 and fused kernels: an FP32 engine matches PyTorch to ~1e-3, not 1e-4.
        raise VerificationError(
            f"tensorrt: logits differ from PyTorch by {parity.max_abs_diff_logits:.3g}; nothing was written"
        )
    return sidecar


def _publish_engine(
    opts, variants, folded, x_check, metadata, out: Path, tmp: Path, report: dict
) -> list[Path]:
    plan = tmp / out.name
    _build_verified_engine(opts, variants, folded, x_check, metadata, plan, report)
    report["artifacts"] = {"tensorrt": str(out)}
    _write_json(tmp / REPORT_FILE, report)
    os.replace(engine_sidecar_path(plan), engine_sidecar_path(out))
    os.replace(plan, out)
    os.replace(tmp / REPORT_FILE, out.parent / REPORT_FILE)
    return [out, engine_sidecar_path(out), out.parent / REPORT_FILE]


def _publish_triton(
    opts, variants, folded, x_check, metadata, out: Path, tmp: Path, report: dict
) -> ExportResult:
    from livt.export.triton import write_triton_model

    staged = tmp / "repository" / opts.triton_name
    if opts.triton_platform == "tensorrt_plan":
        model_file = tmp / "model.plan"
        model_meta = _build_verified_engine(opts, variants, folded, x_check, metadata, model_file, report)
    else:
        name = next(
            n for n in ("onnx-int8-dynamic", "onnx-int8-qdq", "onnx-optimized", "onnx-fp32") if n in variants
        )
        model_file = variants[name]
        from livt.export.metadata import read_onnx_metadata

        model_meta = read_onnx_metadata(model_file)
    files = write_triton_model(
        staged, model_file, model_meta, platform=opts.triton_platform, max_batch_size=opts.triton_max_batch
    )
    final = out / opts.triton_name
    report["artifacts"] = {"triton": str(final)}
    _write_json(staged / REPORT_FILE, report)
    out.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Swap the folders so the repository never holds a half-written model.
        old = tmp / "previous"
        os.replace(final, old)
    os.replace(staged, final)
    written = [final / f.relative_to(staged) for f in files] + [final / REPORT_FILE]
    return ExportResult(final / files[-1].relative_to(staged), written, report)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def evaluation_table(report: dict[str, Any]) -> str:
    """The per-variant accuracy table of an export report (empty string without an evaluation)."""
    evaluation = report.get("evaluation")
    if not evaluation:
        return ""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    lines = [
        f"{evaluation['split']} split, {evaluation['samples']} images ({evaluation['split_labels']} labels), "
        f"scored under the folded prior '{evaluation['prior']}'",
        f"{'variant':<20} {'top1':>7} {'bal.acc':>7} {'many':>7} {'medium':>7} {'few':>7} {'ECE':>7} {'agree':>7}",
    ]
    for name, m in evaluation["variants"].items():
        agree = report["parity"].get(name, {}).get("top1_agreement")
        lines.append(
            f"{name:<20} {pct(m['top1']):>7} {pct(m['balanced_acc']):>7} {pct(m['many']):>7} "
            f"{pct(m['medium']):>7} {pct(m['few']):>7} {pct(m['ece']):>7} {pct(agree):>7}"
        )
    return "\n".join(lines)


def calibration_table(report: dict[str, Any]) -> str:
    """What the calibration minimised and each candidate's scores (empty without a calibration)."""
    cal = report.get("calibration")
    if not cal:
        return ""
    params = cal["params"]
    t = "" if params["temperature"] is None else f", T = {params['temperature']:.4f}"
    lines = [
        f"calibration: {cal['method']}{t} ({cal['selection']}; {cal['criterion']}, {cal['images']} images)",
        f"{'candidate':<12} {'val NLL':>8} {'val ECE':>8} {'test NLL':>9} {'test ECE':>9}",
    ]
    for method, scores in cal["candidates"].items():
        test = scores.get("test", {})
        lines.append(
            f"{method:<12} {scores['val_cv']['nll']:>8.4f} {100 * scores['val_cv']['ece']:>7.2f}% "
            + (f"{test['nll']:>9.4f} {100 * test['ece']:>8.2f}%" if test else f"{'-':>9} {'-':>9}")
        )
    lines.append("(val: held-out folds; test: balanced test split, fitted on all of val; balanced prior)")
    return "\n".join(lines)
