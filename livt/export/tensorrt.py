"""Build and run TensorRT engines from the exported ONNX (TensorRT imported lazily).

Precision: ``--fp16`` lets TensorRT pick FP16 kernels but pins every normalization and softmax
layer to FP32 (layer precision constraints, obeyed): opset-17 ``LayerNormalization`` parses to one
normalization layer, whose variance overflows easily in FP16. INT8 uses explicit quantization: the
engine is built from the static Q/DQ ONNX (``quantize.quantize_int8_static``); implicit INT8
calibrators are deprecated in TensorRT 10 and not used.

The timing cache is keyed by GPU, compute capability, TensorRT version and the ONNX file's sha256,
so a cache is only reused where its timings are valid.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from livt.artifact import INPUT_NAME, sha256_file
from livt.export.errors import ExportError
from livt.export.options import EngineProfile

logger = logging.getLogger(__name__)


def unavailable_reason() -> str | None:
    """Why a TensorRT engine cannot be built here (``None`` when it can)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'livt[tensorrt]' on a machine with an NVIDIA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available; TensorRT engines are built on the GPU they will run on"
    return None


def runtime_environment() -> dict[str, str]:
    """This machine's TensorRT version, GPU name and compute capability (``livt.artifact.ENGINE_KEYS``)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
    }


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    profile: EngineProfile,
    *,
    fp16: bool = False,
    int8: bool = False,
    workspace_gib: float = 4.0,
    timing_cache_dir: Path | None = None,
) -> dict[str, str]:
    """Build ``plan_path`` from ``onnx_path``; return the sidecar fields describing the build.

    ``int8`` expects an ONNX with explicit Q/DQ nodes.
    """
    import tensorrt as trt

    reason = unavailable_reason()
    if reason:
        raise ExportError(reason)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    shape = tuple(network.get_input(0).shape)[1:]
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        INPUT_NAME, (profile.min_batch, *shape), (profile.opt_batch, *shape), (profile.max_batch, *shape)
    )
    config.add_optimization_profile(opt_profile)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_fp32(network, trt)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)

    environment = runtime_environment()
    onnx_sha256 = sha256_file(onnx_path)
    cache_file = None
    if timing_cache_dir is not None:
        cache_file = Path(timing_cache_dir) / _timing_cache_name(environment, onnx_sha256)
        cache_bytes = cache_file.read_bytes() if cache_file.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {**environment, "onnx_sha256": onnx_sha256}


def _pin_fp32(network: Any, trt: Any) -> None:
    keep = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in keep:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def _timing_cache_name(environment: dict[str, str], onnx_sha256: str) -> str:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", environment["gpu_name"]).strip("-")
    return (
        f"{gpu}-sm{environment['compute_capability']}-trt{environment['tensorrt_version']}-"
        f"{onnx_sha256[:16]}.cache"
    )
