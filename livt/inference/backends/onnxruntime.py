"""The ONNX Runtime engine: an ``InferenceSession`` over the ``.onnx`` artifact, any execution provider.

CPU, CUDA and the TensorRT execution provider all run here (``providers``); a raw TensorRT ``.plan``
is ``livt.inference.backends.tensorrt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from livt.artifact import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES
from livt.inference.artifact import ArtifactError
from livt.inference.backends.base import BackendUnavailableError, checked_precision

logger = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: list[str] | None, available: list[str]) -> list[str]:
    """The providers to use: ``requested`` if all are available, else the preferred ones available."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ArtifactError(
                f"execution providers {missing} are not available in this onnxruntime "
                f"(available: {', '.join(available)})"
            )
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` over the exported ``.onnx`` artifact."""

    platform = "onnxruntime_onnx"
    engine = "ort"

    def __init__(
        self,
        path: Path,
        *,
        precision: str | None = None,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        intra_op_spinning: bool = False,
    ):
        if precision == "bf16":
            raise BackendUnavailableError(
                "ONNX Runtime has no bf16 CPU execution for this model: use --backend openvino for bf16"
            )
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "serving an ONNX model needs onnxruntime: pip install 'livt[serve]'"
            ) from exc
        chosen = choose_providers(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # Idle pool threads spin (busy-wait) by default, for the next parallel section. In a server they
        # take the CPU from the event loop that decodes the next requests: on 2 cores spinning cost
        # about 15 % of the throughput at 32 concurrent requests and saved about 0.4 ms at concurrency 1.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if intra_op_spinning else "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{path}: not a loadable ONNX model ({reason})") from exc
        self.providers = self.session.get_providers()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [o.name for o in outputs]
        if [i.name for i in inputs] != [INPUT_NAME] or any(n not in names for n in OUTPUT_NAMES):
            raise ArtifactError(
                f"{path}: incompatible model: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}, "
                f"found inputs {[i.name for i in inputs]} and outputs {names}"
            )
        if inputs[0].type != "tensor(float)":
            raise ArtifactError(f"{path}: incompatible model: input is {inputs[0].type}, not tensor(float)")
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.metadata_json = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "")
        if not self.metadata_json:
            raise ArtifactError(
                f"{path}: the ONNX model carries no {METADATA_KEY!r} metadata (export it with livt-export)"
            )
        self.precision = checked_precision(path, self.metadata_json, precision)
        logger.info("onnxruntime session on %s with providers %s", path, self.providers)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probabilities = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return logits, probabilities
