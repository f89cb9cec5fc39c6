"""A Triton Inference Server model repository entry for an exported model.

Layout: ``DIR/NAME/config.pbtxt``, ``DIR/NAME/1/model.onnx`` (or ``model.plan``, or the OpenVINO
IR ``model.xml`` + ``model.bin``) and ``DIR/NAME/labels.txt``. Both outputs name the labels file, so
Triton's classification extension (``class_count`` in a request) returns class names. The livt
metadata rides along in ``parameters`` (and, in the IR, in its ``rt_info``).

The OpenVINO backend (``backend: "openvino"``, not a ``platform``) reads IR by default: the ONNX is
converted here with f32 weights kept (``save_model`` would halve them to fp16), so its outputs are
the ONNX's. Its ``parameters`` also tune the backend: one stream with the latency hint, as one
instance with dynamic batching needs (the batch axis stays dynamic in the IR).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from livt.artifact import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES
from livt.export.errors import ExportError

PLATFORMS = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan", "openvino": "model.xml"}
OPENVINO_PARAMETERS = {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
LABELS_FILE = "labels.txt"


def write_triton_model(
    model_dir: Path,
    model_file: Path,
    metadata: dict[str, Any],
    *,
    platform: str = "onnxruntime_onnx",
    max_batch_size: int = 128,
    preferred_batch_sizes: Sequence[int] = (8, 32),
    max_queue_delay_us: int = 500,
) -> list[Path]:
    """Fill ``model_dir`` (``DIR/NAME``) with version 1 of ``model_file``, its config and labels.

    Returns the files written.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, got {platform!r}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    model_dir = Path(model_dir)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / PLATFORMS[platform]
    if platform == "openvino":
        model_files = write_openvino_ir(model_file, target, metadata)
    else:
        shutil.copyfile(model_file, target)
        model_files = [target]
    labels = model_dir / LABELS_FILE
    labels.write_text("".join(f"{c}\n" for c in metadata["classes"]), encoding="utf-8")
    config = model_dir / "config.pbtxt"
    preferred = [b for b in preferred_batch_sizes if b <= max_batch_size]
    config.write_text(
        triton_config(model_dir.name, metadata, platform, max_batch_size, preferred, max_queue_delay_us),
        encoding="utf-8",
    )
    return [config, labels, *model_files]


def write_openvino_ir(onnx_file: Path, xml: Path, metadata: dict[str, Any]) -> list[Path]:
    """``onnx_file`` as OpenVINO IR (``xml`` and its ``.bin``), f32 weights, the metadata in ``rt_info``.

    Returns ``[bin, xml]``: the model file last, as :func:`write_triton_model` returns it.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise ExportError(f"--triton-platform openvino needs OpenVINO (pip install openvino): {exc}") from exc
    try:
        model = ov.convert_model(str(onnx_file))
    except Exception as exc:  # the frontends raise their own types (OpConversionFailure, RuntimeError...)
        raise ExportError(f"OpenVINO cannot convert {onnx_file.name}: {exc}") from exc
    model.set_rt_info(json.dumps(metadata), METADATA_KEY)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return [xml.with_suffix(".bin"), xml]


def triton_config(
    name: str,
    metadata: dict[str, Any],
    platform: str,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    max_queue_delay_us: int,
) -> str:
    """The ``config.pbtxt`` text; dims exclude the batch axis (Triton adds it for ``max_batch_size > 0``)."""
    input_dims = metadata["input"]["shape"][1:]
    num_classes = len(metadata["classes"])
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_CPU"
    runtime = f'backend: "{platform}"' if platform == "openvino" else f'platform: "{platform}"'
    parameters = {METADATA_KEY: json.dumps(metadata)} | (
        OPENVINO_PARAMETERS if platform == "openvino" else {}
    )
    outputs = ",\n".join(
        f'  {{\n    name: "{out}"\n    data_type: TYPE_FP32\n    dims: [ {num_classes} ]\n'
        f'    label_filename: "{LABELS_FILE}"\n  }}'
        for out in OUTPUT_NAMES
    )
    return (
        f'name: "{name}"\n'
        f"{runtime}\n"
        f"max_batch_size: {max_batch_size}\n"
        f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_FP32\n'
        f"    dims: [ {', '.join(str(d) for d in input_dims)} ]\n  }}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred_batch_sizes)} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n"
        + "".join(
            f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{_pbtxt_escape(value)}" }}\n}}\n'
            for key, value in parameters.items()
        )
    )


def _pbtxt_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
