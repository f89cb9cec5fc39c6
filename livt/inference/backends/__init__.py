"""Every inference engine behind one interface (``Backend``), opened by engine and precision.

- ``ort``: ONNX Runtime over ``.onnx`` (CPU, CUDA or the TensorRT execution provider).
- ``openvino``: OpenVINO over the same ``.onnx`` on the CPU, fp32 / bf16 / int8.
- ``tensorrt``: a serialized ``.plan`` engine on an NVIDIA GPU.
"""

from __future__ import annotations

from pathlib import Path

from livt.inference.backends.base import ENGINES, PRECISIONS, Backend, BackendUnavailableError

__all__ = ["ENGINES", "PRECISIONS", "Backend", "BackendUnavailableError", "is_engine_file", "open_backend"]


def is_engine_file(path: Path) -> bool:
    """Whether ``path`` is a serialized TensorRT engine (else an ONNX model)."""
    return Path(path).suffix in (".plan", ".engine")


def open_backend(
    path: Path,
    engine: str | None = None,
    precision: str | None = None,
    *,
    providers: list[str] | None = None,
    threads: int = 0,
    spinning: bool = False,
) -> Backend:
    """Open ``path`` with ``engine`` (None: tensorrt for ``.plan``, else ort) at ``precision`` (None: the
    file's own); ``BackendUnavailableError`` says why not.

    ``threads`` is each engine's intra-op thread count (0: the engine's default); ``spinning`` lets
    ONNX Runtime's idle threads busy-wait.
    """
    path = Path(path)
    engine = engine or ("tensorrt" if is_engine_file(path) else "ort")
    if engine not in ENGINES:
        raise BackendUnavailableError(f"engine must be one of {ENGINES}, got {engine!r}")
    if precision is not None and precision not in PRECISIONS:
        raise BackendUnavailableError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if is_engine_file(path) != (engine == "tensorrt"):
        kind = "a TensorRT engine" if is_engine_file(path) else "an ONNX model"
        raise BackendUnavailableError(f"{path} is {kind}: the {engine} engine cannot run it")
    if engine == "tensorrt":
        from livt.inference.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, precision=precision)
    if engine == "openvino":
        from livt.inference.backends.openvino import OpenVINOBackend

        return OpenVINOBackend(path, precision=precision, threads=threads)
    from livt.inference.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        path,
        precision=precision,
        providers=providers,
        intra_op_threads=threads,
        intra_op_spinning=spinning,
    )
