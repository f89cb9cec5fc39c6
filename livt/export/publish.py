"""Move verified artifacts from the staging folder into place: ONNX, TensorRT engine, Triton.

Nothing reaches the destination before it is verified; each file lands by an atomic rename, and a
Triton model folder is swapped as a whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import VARIANT_SUFFIXES, checksum_path, engine_sidecar_path, write_checksum
from livt.export.errors import VerificationError
from livt.export.options import ExportOptions
from livt.export.report import REPORT_FILE, ExportReport, write_json
from livt.export.variants import FP32, Metadata, check_agreement


@dataclass
class ExportResult:
    """What an export wrote: the artifact to serve first, every file, and the report."""

    artifact: Path
    written: list[Path]
    report: dict[str, Any]
    removed: list[Path] = field(default_factory=list)  # stale variants of an earlier export


@dataclass(frozen=True)
class EngineJob:
    """What an engine or Triton export publishes from: the options, the verified ONNX variants, the
    folded PyTorch model and the check inputs to verify the engine against, the metadata writer, the
    destination, the staging folder and the report being filled."""

    opts: ExportOptions
    variants: dict[str, Path]
    folded: Any
    x_check: np.ndarray
    metadata: Metadata
    out: Path
    tmp: Path
    report: ExportReport


def publish_onnx(variants: dict[str, Path], out: Path, report: ExportReport) -> ExportResult:
    targets = {
        name: out.with_name(out.name.removesuffix(".onnx") + VARIANT_SUFFIXES[name]) for name in variants
    }
    report.artifacts = {name: str(path) for name, path in targets.items()}
    staged_report = variants[FP32].parent / REPORT_FILE
    report.write(staged_report)
    sums = {name: write_checksum(path, targets[name].name) for name, path in variants.items()}
    written = []
    for name, path in variants.items():
        # Checksum first: in between, serving refuses the pair (mismatch) rather than serving unchecked.
        os.replace(sums[name], checksum_path(targets[name]))
        os.replace(path, targets[name])
        written += [targets[name], checksum_path(targets[name])]
    os.replace(staged_report, out.parent / REPORT_FILE)
    removed = _remove_stale_variants(out, set(variants))
    return ExportResult(written[0], [*written, out.parent / REPORT_FILE], report.to_dict(), removed)


def _remove_stale_variants(out: Path, exported: set[str]) -> list[Path]:
    """Delete the variants of ``out`` this export did not write (an earlier export's INT8 file, say).

    Left in place, such a file keeps a valid checksum and reads as part of this export, though
    it is another model.
    """
    removed = []
    for name, suffix in VARIANT_SUFFIXES.items():
        stale = out.with_name(out.name.removesuffix(".onnx") + suffix)
        if name in exported:
            continue
        for path in (stale, checksum_path(stale)):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def publish_engine(job: EngineJob) -> ExportResult:
    out, tmp, report = job.out, job.tmp, job.report
    plan = tmp / out.name
    build_verified_engine(job, plan)
    report.artifacts = {"tensorrt": str(out)}
    report.write(tmp / REPORT_FILE)
    os.replace(engine_sidecar_path(plan), engine_sidecar_path(out))
    os.replace(plan, out)
    os.replace(tmp / REPORT_FILE, out.parent / REPORT_FILE)
    return ExportResult(out, [out, engine_sidecar_path(out), out.parent / REPORT_FILE], report.to_dict())


def publish_triton(job: EngineJob) -> ExportResult:
    from livt.export.metadata import read_onnx_metadata
    from livt.export.triton import write_triton_model

    opts, out, tmp, report = job.opts, job.out, job.tmp, job.report
    staged = tmp / "repository" / opts.triton_name
    if opts.triton_platform == "tensorrt_plan":
        model_file = tmp / "model.plan"
        model_meta = build_verified_engine(job, model_file)
    else:
        name = next(n for n in ("onnx-int8-dynamic", "onnx-int8-qdq", FP32) if n in job.variants)
        model_file = job.variants[name]
        model_meta = read_onnx_metadata(model_file)
    files = write_triton_model(
        staged, model_file, model_meta, platform=opts.triton_platform, max_batch_size=opts.triton_max_batch
    )
    final = out / opts.triton_name
    report.artifacts = {"triton": str(final)}
    report.write(staged / REPORT_FILE)
    out.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Swap the folders so the repository never holds a half-written model.
        os.replace(final, tmp / "previous")
    os.replace(staged, final)
    written = [final / f.relative_to(staged) for f in files] + [final / REPORT_FILE]
    return ExportResult(final / files[-1].relative_to(staged), written, report.to_dict())


def build_verified_engine(job: EngineJob, plan: Path) -> dict[str, Any]:
    """Build ``plan`` (+ sidecar) from the fp32 or Q/DQ ONNX and verify it with the server's runner."""
    from livt.export.onnx import compare, run_torch
    from livt.export.tensorrt import build_engine
    from livt.inference.backends.tensorrt import TensorRTBackend

    opts, x_check = job.opts, job.x_check
    profile = opts.engine_profile
    src = job.variants["onnx-int8-qdq"] if opts.int8 else job.variants[FP32]
    build = build_engine(
        src,
        plan,
        profile,
        fp16=opts.fp16,
        int8=opts.int8,
        workspace_gib=opts.workspace_gib,
        timing_cache_dir=opts.timing_cache_dir,
    )
    sidecar = {
        **job.metadata(quantization="int8-qdq" if opts.int8 else None),
        **build,
        "precision": "int8" if opts.int8 else ("fp16" if opts.fp16 else "fp32"),
        "profile": {
            "min_batch": profile.min_batch,
            "opt_batch": profile.opt_batch,
            "max_batch": profile.max_batch,
        },
    }
    write_json(engine_sidecar_path(plan), sidecar)
    # What is checked is what is served: the engine runs through livt-serve's own TensorRT backend.
    backend = TensorRTBackend(plan)
    chunks = [
        backend.run(x_check[i : i + profile.max_batch]) for i in range(0, len(x_check), profile.max_batch)
    ]
    served = (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
    parity = compare(run_torch(job.folded, x_check), served)
    job.report.parity["tensorrt"] = parity.to_dict()
    if opts.int8 or opts.fp16:
        check_agreement(
            "tensorrt", parity.top1_agreement, opts.int8_min_agreement, parity.max_abs_diff_logits
        )
    elif parity.max_abs_diff_logits > max(opts.atol, 1e-3):
        # TF32 and fused kernels: an FP32 engine matches PyTorch to ~1e-3, not 1e-4.
        raise VerificationError(
            f"tensorrt: logits differ from PyTorch by {parity.max_abs_diff_logits:.3g}; nothing was written"
        )
    return sidecar
