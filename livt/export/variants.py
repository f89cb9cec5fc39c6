"""The ONNX artifacts of one export (fp32, INT8), each verified against PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from livt.export.errors import VerificationError
from livt.export.options import ExportOptions
from livt.export.source import ExportSource

Metadata = Callable[..., dict[str, Any]]  # metadata(quantization=None) -> the artifact's livt JSON
FP32 = "onnx-fp32"


def export_variants(
    opts: ExportOptions,
    source: ExportSource,
    folded: Any,
    x_check: np.ndarray,
    metadata: Metadata,
    tmp: Path,
    parity: dict[str, dict[str, float]],
) -> dict[str, Path]:
    """Write the fp32 ONNX and the requested variants into ``tmp``; record each one's ``parity``.

    Raises ``VerificationError`` when a variant strays from PyTorch on ``x_check``.
    """
    from livt.export.onnx import compare, export_onnx, make_session, run_onnx, run_torch
    from livt.export.quantize import INT8_MODES, quantize_int8_dynamic, quantize_int8_static
    from livt.export.source import load_subset, open_split

    reference = run_torch(folded, x_check)
    variants: dict[str, Path] = {FP32: tmp / "model.onnx"}
    export_onnx(folded, variants[FP32], source.input_shape, metadata(), opset=opts.opset)
    mode = opts.resolved_int8_mode
    if mode is not None:
        name = f"onnx-{INT8_MODES[mode]}"
        variants[name] = tmp / ("model.int8.onnx" if mode == "dynamic" else "model.qdq.onnx")
        if mode == "dynamic":
            quantize_int8_dynamic(variants[FP32], variants[name], metadata(quantization=INT8_MODES[mode]))
        else:
            train = open_split(source, "train", data_root=opts.data_root)
            images, _ = load_subset(train, opts.calibration_images)
            quantize_int8_static(
                variants[FP32], variants[name], metadata(quantization=INT8_MODES[mode]), images
            )

    for name, path in variants.items():
        result = compare(reference, run_onnx(make_session(path, threads=opts.threads), x_check))
        parity[name] = result.to_dict()
        if "int8" in name:
            check_agreement(name, result.top1_agreement, opts.int8_min_agreement, result.max_abs_diff_logits)
        elif result.max_abs_diff_logits > opts.atol:
            raise VerificationError(
                f"{name}: ONNX Runtime and PyTorch logits differ by {result.max_abs_diff_logits:.3g} > --atol "
                f"{opts.atol:g} on {result.samples} images (top-1 agreement {result.top1_agreement:.3f}); "
                "nothing was written"
            )
    return variants


def check_agreement(name: str, agreement: float, threshold: float, max_diff: float) -> None:
    """A reduced-precision variant must keep ``threshold`` of the reference's top-1 answers."""
    if agreement < threshold:
        raise VerificationError(
            f"{name}: top-1 agreement with PyTorch {agreement:.3f} < threshold {threshold:.3f} "
            f"(max logit diff {max_diff:.3g}); nothing was written"
        )
