"""A serialized TensorRT engine ``X.plan`` with its metadata sidecar ``X.plan.json``.

TensorRT is imported lazily and only for ``.plan`` files; device memory goes through the CUDA
driver API with ctypes, so the serving image needs no PyTorch or CUDA Python bindings.
"""

from __future__ import annotations

import ctypes
import json
import threading
from pathlib import Path

import numpy as np

from livt.artifact import (
    INPUT_NAME,
    OUTPUT_NAMES,
    EngineMismatchError,
    check_engine_compatible,
    read_engine_sidecar,
)
from livt.inference.artifact import ArtifactError
from livt.inference.backends.base import BackendUnavailableError


class TensorRTBackend:
    """A serialized TensorRT engine ``X.plan`` with its metadata sidecar ``X.plan.json``."""

    platform = "tensorrt_plan"
    engine = "tensorrt"

    def __init__(self, path: Path, *, precision: str | None = None):
        try:
            meta = read_engine_sidecar(path)
        except EngineMismatchError as exc:
            raise ArtifactError(str(exc)) from exc
        # Fixed when the engine was built; livt-export records it in the sidecar.
        self.precision = str(meta.get("precision", "fp32"))
        if precision is not None and precision != self.precision:
            raise BackendUnavailableError(
                f"{path}: this TensorRT engine was built for {self.precision}, not {precision} (rebuild it with "
                "livt-export --format tensorrt [--fp16] [--int8])"
            )
        self.metadata_json = json.dumps(meta)
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailableError(
                "serving a TensorRT engine needs the tensorrt package: pip install 'livt[tensorrt]'"
            ) from exc
        try:
            self._cuda = _CudaDriver()
        except OSError as exc:
            raise BackendUnavailableError(
                f"{path}: a TensorRT engine needs an NVIDIA GPU and driver ({exc})"
            ) from exc
        found = {
            "tensorrt_version": trt.__version__,
            "gpu_name": self._cuda.device_name(),
            "compute_capability": self._cuda.compute_capability(),
        }
        try:
            check_engine_compatible(path, found)
        except EngineMismatchError as exc:
            raise ArtifactError(str(exc)) from exc
        self._cuda.make_current()
        self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{path}: TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.stream()
        self._lock = threading.Lock()
        self.input_shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(INPUT_NAME))

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        num_classes = self._engine.get_tensor_shape(OUTPUT_NAMES[0])[-1]
        outputs = [np.empty((batch.shape[0], num_classes), dtype=np.float32) for _ in OUTPUT_NAMES]
        with self._lock:
            self._cuda.make_current()
            # False (not an exception) for a shape outside the engine's optimization profile; running
            # anyway would read out of bounds. The batcher reports the RuntimeError as a 502.
            if not self._context.set_input_shape(INPUT_NAME, batch.shape):
                raise RuntimeError(
                    f"TensorRT engine rejected input shape {list(batch.shape)} "
                    f"(outside its optimization profile; engine input {list(self._engine.get_tensor_shape(INPUT_NAME))})"
                )
            buffers = [self._cuda.alloc(a.nbytes) for a in (batch, *outputs)]
            try:
                for name, ptr in zip((INPUT_NAME, *OUTPUT_NAMES), buffers, strict=True):
                    self._context.set_tensor_address(name, ptr)
                self._cuda.copy_to_device(buffers[0], batch)
                if not self._context.execute_async_v3(self._stream):
                    raise RuntimeError("TensorRT execution failed")
                self._cuda.synchronize(self._stream)
                for ptr, out in zip(buffers[1:], outputs, strict=True):
                    self._cuda.copy_to_host(out, ptr)
            finally:
                for ptr in buffers:
                    self._cuda.free(ptr)
        return outputs[0], outputs[1]


class _CudaDriver:
    """The few CUDA driver API calls the TensorRT backend needs (device 0, its primary context)."""

    _CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}

    def __init__(self) -> None:
        self._lib = ctypes.CDLL("libcuda.so.1")
        self._call("cuInit", 0)
        device = ctypes.c_int()
        self._call("cuDeviceGet", ctypes.byref(device), 0)
        self._device = device.value
        self._context = ctypes.c_void_p()
        self._call("cuDevicePrimaryCtxRetain", ctypes.byref(self._context), self._device)

    def _call(self, name: str, *args: object) -> None:
        status = getattr(self._lib, name)(*args)
        if status != 0:
            raise OSError(f"CUDA driver call {name} failed with error {status}")

    def make_current(self) -> None:
        self._call("cuCtxSetCurrent", self._context)

    def device_name(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self._call("cuDeviceGetName", buf, 256, self._device)
        return buf.value.decode()

    def compute_capability(self) -> str:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("cuDeviceGetAttribute", ctypes.byref(major), self._CC_MAJOR, self._device)
        self._call("cuDeviceGetAttribute", ctypes.byref(minor), self._CC_MINOR, self._device)
        return f"{major.value}.{minor.value}"

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self._call("cuStreamCreate", ctypes.byref(handle), 0)
        return handle.value or 0

    def synchronize(self, stream: int) -> None:
        self._call("cuStreamSynchronize", ctypes.c_void_p(stream))

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self._call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1)))
        return ptr.value

    def free(self, ptr: int) -> None:
        self._call("cuMemFree_v2", ctypes.c_uint64(ptr))

    def copy_to_device(self, ptr: int, array: np.ndarray) -> None:
        self._call(
            "cuMemcpyHtoD_v2",
            ctypes.c_uint64(ptr),
            array.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_size_t(array.nbytes),
        )

    def copy_to_host(self, array: np.ndarray, ptr: int) -> None:
        self._call(
            "cuMemcpyDtoH_v2",
            array.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_uint64(ptr),
            ctypes.c_size_t(array.nbytes),
        )
