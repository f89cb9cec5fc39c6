"""What every inference engine offers the model layer, and the names of engines and precisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from livt.inference.artifact import ArtifactError

ENGINES = ("ort", "openvino", "tensorrt")
PRECISIONS = ("fp32", "bf16", "int8")


class BackendUnavailableError(ArtifactError):
    """The engine or precision asked for cannot run here (package, device or CPU feature missing)."""


class Backend(Protocol):
    """An engine over one artifact file: a float32 ``[N, C, H, W]`` batch in, ``(logits, probabilities)`` out."""

    engine: str  # one of ENGINES
    precision: str  # one of PRECISIONS (a TensorRT engine: what it was built for, fp16 included)
    platform: str  # the Open Inference Protocol platform string
    metadata_json: str  # the artifact's ``livt`` metadata
    input_shape: tuple[int | None, ...]  # [N, C, H, W], None for dynamic dimensions

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def checked_precision(path: Path, metadata_json: str, precision: str | None) -> str:
    """The precision a file runs at: ``int8`` for a quantised export, else ``precision`` (default fp32).

    A quantised file cannot run at another precision, nor an fp32 one at int8: the INT8 variant is its
    own file (``X.int8.onnx``, ``X.qdq.onnx``, ``X.ov-int8.onnx``) and the caller picks it.
    """
    try:
        quantized = bool(json.loads(metadata_json).get("quantization"))
    except (json.JSONDecodeError, AttributeError):
        quantized = False  # the metadata's own check reports it
    if quantized and precision not in (None, "int8"):
        raise BackendUnavailableError(f"{path} is an INT8 model: it runs at int8, not {precision}")
    if not quantized and precision == "int8":
        raise BackendUnavailableError(f"{path} is not quantised: int8 needs the INT8 file livt-export wrote")
    return "int8" if quantized else precision or "fp32"
