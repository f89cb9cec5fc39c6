"""The artifacts of one export (fp32, INT8 files) and the engine runs over them, each verified against PyTorch.

A *file* is what is published (``onnx-fp32``, ``onnx-int8-dynamic`` / ``onnx-int8-qdq``,
``openvino-int8``); a *run* is an engine at a precision over one file (``openvino-bf16`` is the fp32
file compiled for bf16). Every run gets a parity entry, and a row in the accuracy table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from livt.export.errors import VerificationError
from livt.export.options import ExportOptions
from livt.export.source import ExportSource

if TYPE_CHECKING:
    from livt.inference.backends import Backend

Metadata = Callable[..., dict[str, Any]]  # metadata(quantization=None) -> the artifact's livt JSON
FP32 = "onnx-fp32"
OPENVINO_INT8 = "openvino-int8"


@dataclass(frozen=True)
class EngineRun:
    """One engine at one precision over one exported file (``file``: its key in the files)."""

    engine: str
    precision: str
    file: str

    def open(self, files: dict[str, Path], threads: int | None) -> Backend:
        """The server's own backend for this run (ONNX Runtime on the CPU)."""
        from livt.inference.backends import open_backend

        providers = ["CPUExecutionProvider"] if self.engine == "ort" else None
        return open_backend(
            files[self.file], self.engine, self.precision, providers=providers, threads=threads or 0
        )


def run_in_batches(backend: Backend, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, probabilities)`` of ``backend`` over ``x``, ``batch_size`` images at a time."""
    outs = [backend.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def engine_runs(files: dict[str, Path]) -> dict[str, EngineRun]:
    """Every engine x precision the export's files allow here (bf16 only where the CPU has it)."""
    runs = {
        name: EngineRun("ort", "int8" if "int8" in name else "fp32", name)
        for name in files
        if name.startswith("onnx-")
    }
    if OPENVINO_INT8 in files:
        from livt.inference.backends.openvino import cpu_has_bf16

        runs["openvino-fp32"] = EngineRun("openvino", "fp32", FP32)
        if cpu_has_bf16():
            runs["openvino-bf16"] = EngineRun("openvino", "bf16", FP32)
        runs[OPENVINO_INT8] = EngineRun("openvino", "int8", OPENVINO_INT8)
    return runs


def export_variants(
    opts: ExportOptions,
    source: ExportSource,
    folded: Any,
    x_check: np.ndarray,
    metadata: Metadata,
    tmp: Path,
    parity: dict[str, dict[str, float]],
) -> dict[str, Path]:
    """Write the fp32 ONNX and the requested variants into ``tmp``; record each run's ``parity``.

    Raises ``VerificationError`` when a run strays from PyTorch on ``x_check``.
    """
    from livt.export.onnx import compare, export_onnx, run_torch

    reference = run_torch(folded, x_check)
    files: dict[str, Path] = {FP32: tmp / "model.onnx"}
    export_onnx(folded, files[FP32], source.input_shape, metadata(), opset=opts.opset)
    _write_int8(opts, source, files, metadata, tmp)
    for name, run in engine_runs(files).items():
        result = compare(reference, run_in_batches(run.open(files, opts.threads), x_check))
        parity[name] = result.to_dict()
        if run.precision != "fp32":
            check_agreement(name, result.top1_agreement, opts.int8_min_agreement, result.max_abs_diff_logits)
        elif result.max_abs_diff_logits > opts.atol:
            raise VerificationError(
                f"{name}: {run.engine} and PyTorch logits differ by {result.max_abs_diff_logits:.3g} > --atol "
                f"{opts.atol:g} on {result.samples} images (top-1 agreement {result.top1_agreement:.3f}); "
                "nothing was written"
            )
    return files


def _write_int8(
    opts: ExportOptions, source: ExportSource, files: dict[str, Path], metadata: Metadata, tmp: Path
) -> None:
    """ONNX Runtime's INT8 file (``--int8``) and OpenVINO's (``--format openvino``) beside the fp32 one."""
    from livt.export.quantize import INT8_MODES, quantize_int8_dynamic, quantize_int8_static
    from livt.export.source import load_subset, open_split

    mode = opts.resolved_int8_mode
    if mode is not None:
        name = f"onnx-{INT8_MODES[mode]}"
        files[name] = tmp / ("model.int8.onnx" if mode == "dynamic" else "model.qdq.onnx")
        if mode == "dynamic":
            quantize_int8_dynamic(files[FP32], files[name], metadata(quantization=INT8_MODES[mode]))
        else:
            train = open_split(source, "train", data_root=opts.data_root)
            images, _ = load_subset(train, opts.calibration_images)
            quantize_int8_static(files[FP32], files[name], metadata(quantization=INT8_MODES[mode]), images)
    if opts.format == "openvino":
        from livt.export.errors import ExportError
        from livt.export.openvino import NNCF_QUANTIZATION, quantize_int8_nncf

        try:
            split = open_split(source, "val", data_root=opts.data_root)
        except ExportError:
            split = open_split(source, "train", data_root=opts.data_root)  # a run without a val split
        images, _ = load_subset(split, opts.calibration_images)
        files[OPENVINO_INT8] = tmp / "model.ov-int8.onnx"
        quantize_int8_nncf(
            files[FP32], files[OPENVINO_INT8], metadata(quantization=NNCF_QUANTIZATION), images
        )


def check_agreement(name: str, agreement: float, threshold: float, max_diff: float) -> None:
    """A reduced-precision variant must keep ``threshold`` of the reference's top-1 answers."""
    if agreement < threshold:
        raise VerificationError(
            f"{name}: top-1 agreement with PyTorch {agreement:.3f} < threshold {threshold:.3f} "
            f"(max logit diff {max_diff:.3g}); nothing was written"
        )
