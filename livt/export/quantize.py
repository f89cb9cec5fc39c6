"""INT8 quantisation of an exported model.

- ``quantize_int8_dynamic``: weights INT8, activations quantised on the fly; ORT's recommended CPU
  path for transformers (no calibration data).
- ``quantize_int8_static``: QDQ (QuantizeLinear/DequantizeLinear pairs) with activation ranges
  calibrated on training images. The explicit Q/DQ form is what TensorRT builds INT8 engines from.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from livt.artifact import INPUT_NAME
from livt.export.metadata import write_onnx_metadata

logger = logging.getLogger(__name__)

INT8_MODES = {"dynamic": "int8-dynamic", "static": "int8-qdq"}
# Quantising the softmax/LayerNorm path costs accuracy for little speed; keep matmuls and convs.
_QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]


def quantize_int8_dynamic(src: Path, dst: Path, metadata: dict[str, Any]) -> None:
    """Dynamic INT8 quantisation (per-channel weights) of ``src`` into ``dst``."""
    with _preprocessed(src) as pre:
        quantize_dynamic(
            pre, dst, op_types_to_quantize=_QUANTIZED_OPS, per_channel=True, weight_type=QuantType.QInt8
        )
    _restamp(dst, metadata)


def quantize_int8_static(src: Path, dst: Path, metadata: dict[str, Any], calibration: np.ndarray) -> None:
    """Static QDQ INT8 quantisation of ``src`` into ``dst``, ranges calibrated on ``calibration`` images."""
    if len(calibration) == 0:
        raise ValueError("static INT8 quantisation needs at least one calibration image")
    with _preprocessed(src) as pre:
        quantize_static(
            pre,
            dst,
            _ImageReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=_QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # Symmetric (zero-point 0) Q/DQ: the only kind TensorRT builds INT8 engines from.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    _restamp(dst, metadata)


@contextlib.contextmanager
def _preprocessed(src: Path) -> Iterator[Path]:
    """``src`` after ORT's quantisation pre-processing (shape inference, constant folding)."""
    with tempfile.TemporaryDirectory(dir=Path(src).parent) as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(src), str(pre))
        yield pre


class _ImageReader(CalibrationDataReader):
    """Feeds calibration images to ``quantize_static`` in small batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 16) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def _restamp(path: Path, metadata: dict[str, Any]) -> None:
    _save(onnx.load(str(path)), path, metadata)


def _save(model: onnx.ModelProto, path: Path, metadata: dict[str, Any]) -> None:
    write_onnx_metadata(model, metadata)
    onnx.save(model, str(path))
