"""The OpenVINO engine: the ``.onnx`` artifact read by OpenVINO, compiled for the CPU at a precision.

OpenVINO reads the ONNX file itself (its ``livt`` metadata arrives as ``rt_info["framework"]``), so one
artifact, one checksum and one metadata contract serve both engines. ``fp32`` and ``bf16`` are the
same file compiled with another ``INFERENCE_PRECISION_HINT`` (bf16 only where the CPU has it);
``int8`` is the NNCF-quantised file ``livt-export --format openvino`` writes (``X.ov-int8.onnx``).
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES
from livt.inference.artifact import ArtifactError
from livt.inference.backends.base import BackendUnavailableError, checked_precision

logger = logging.getLogger(__name__)

_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the ops left unquantised stay f32


def openvino_available() -> bool:
    """Whether the openvino package is installed."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (AVX-512 BF16 or AMX); False without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOBackend:
    """An OpenVINO ``CompiledModel`` on the CPU over the ``.onnx`` artifact."""

    platform = "openvino"
    engine = "openvino"

    def __init__(self, path: Path, *, precision: str | None = None, threads: int = 0):
        if precision is not None and precision not in _HINTS:
            raise BackendUnavailableError(
                f"OpenVINO precision must be one of {list(_HINTS)}, got {precision!r}"
            )
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailableError(
                "the OpenVINO engine needs openvino: pip install 'livt[serve]'"
            ) from exc
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BackendUnavailableError(
                f"this CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')}) has no bf16 support "
                "(AVX-512 BF16 or AMX): use --precision fp32 or int8"
            )
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line messages
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{path}: OpenVINO cannot read the model ({reason})") from exc
        _check_signature(model, path)
        self.metadata_json = _metadata(model, path)
        self.precision = precision = checked_precision(path, self.metadata_json, precision)
        self.input_shape = tuple(
            d.get_length() if d.is_static else None for d in model.input(INPUT_NAME).get_partial_shape()
        )
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(model, "CPU", config)
        self._local = threading.local()  # an infer request per calling thread: requests are not thread-safe
        logger.info("openvino %s on %s (%s)", precision, path, ov.__version__)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        outputs = request.infer({INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return outputs[OUTPUT_NAMES[0]], outputs[OUTPUT_NAMES[1]]


def _check_signature(model: Any, path: Path) -> None:
    inputs = [i.get_any_name() for i in model.inputs]
    outputs = [o.get_any_name() for o in model.outputs]
    if inputs != [INPUT_NAME] or any(n not in outputs for n in OUTPUT_NAMES):
        raise ArtifactError(
            f"{path}: incompatible model: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}, "
            f"found inputs {inputs} and outputs {outputs}"
        )
    if model.input(INPUT_NAME).get_element_type().get_type_name() != "f32":
        raise ArtifactError(f"{path}: incompatible model: input is not float32")


def _metadata(model: Any, path: Path) -> str:
    key = ["framework", METADATA_KEY]
    if not model.has_rt_info(key):
        raise ArtifactError(
            f"{path}: the ONNX model carries no {METADATA_KEY!r} metadata (export it with livt-export)"
        )
    return model.get_rt_info(key).astype(str)
