"""Open Inference Protocol v2 (KServe / Triton HTTP): metadata, readiness and ``infer``.

Supports the classification extension (``"classification": k`` on a requested output answers
BYTES ``"score:index:label"``) and the binary tensor data extension (``Inference-Header-Content-
Length``, ``binary_data_size``, ``binary_data`` / ``binary_data_output``), so a stock
``tritonclient.http`` client works unmodified. ``parameters.prior`` works as in ``/v1/predict``.
"""

from __future__ import annotations

import struct

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from livt import __version__
from livt.artifact import INPUT_NAME, OUTPUT_NAMES
from livt.serving.dependencies import ServingState, get_state, require_api_key
from livt.serving.errors import ServingError, responses
from livt.serving.schemas import (
    InferOutput,
    InferRequest,
    InferResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    Readiness,
    RequestedOutput,
    ServerMetadata,
    TensorMetadata,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["classification", "binary_tensor_data"]

public = APIRouter(prefix="/v2", tags=["v2"])
router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[Depends(require_api_key)])


@public.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="livt", version=__version__, extensions=EXTENSIONS)


@public.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(live=True)


@public.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(request: Request) -> Response:
    is_ready = getattr(request.app.state, "serving", None) is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", response_model=ModelMetadata, responses=responses(401, 404))
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=responses(401, 404))
async def model_metadata(
    name: str, version: str = "", state: ServingState = Depends(get_state)
) -> ModelMetadata:
    _check_model(state, name, version)
    info = state.model.info
    return ModelMetadata(
        name=name,
        versions=[info.version],
        platform=state.model.backend.platform,
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, *info.preprocess.input_shape])],
        outputs=[TensorMetadata(name=n, datatype="FP32", shape=[-1, info.num_classes]) for n in OUTPUT_NAMES],
    )


@router.get("/models/{name}/ready", response_model=ModelReadiness, responses=responses(401, 404))
@router.get(
    "/models/{name}/versions/{version}/ready", response_model=ModelReadiness, responses=responses(401, 404)
)
async def model_ready(
    name: str, version: str = "", state: ServingState = Depends(get_state)
) -> ModelReadiness:
    _check_model(state, name, version)
    return ModelReadiness(name=name, ready=True)


@router.post(
    "/models/{name}/infer",
    response_model=InferResponse,
    responses=responses(400, 401, 404, 413, 502, 503, 504),
    summary="Run inference on FP32 tensors (JSON or binary tensor data)",
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferResponse,
    responses=responses(400, 401, 404, 413, 502, 503, 504),
)
async def infer(
    name: str, request: Request, version: str = "", state: ServingState = Depends(get_state)
) -> Response:
    """Inputs: one FP32 tensor ``input`` ``[N, C, H, W]``. Outputs: ``logits``, ``probabilities``.

    When any output is binary the body is the JSON header followed by the tensors' bytes, with
    ``Inference-Header-Content-Length`` giving the header's length.
    """
    _check_model(state, name, version)
    body = await request.body()
    header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
    req = InferRequest.model_validate_json(header)
    batch = _input_batch(req, binary, state)
    params = req.parameters or {}
    requested = req.outputs or [RequestedOutput(name=n) for n in OUTPUT_NAMES]
    for out in requested:
        if out.name not in OUTPUT_NAMES:
            raise ServingError(400, f"unknown output {out.name!r}; outputs are {list(OUTPUT_NAMES)}")

    model = state.model
    prior = state.resolve_prior(params.get("prior"))
    result = await state.batcher.submit(batch, state.settings.timeout_s)
    prediction = model.apply_prior(*result.outputs, prior.offset)
    if not (np.isfinite(prediction.logits).all() and np.isfinite(prediction.probabilities).all()):
        raise ServingError(502, "the model produced non-finite outputs for this input")
    state.metrics.queue_time.observe(result.queue_s)
    tensors = {"logits": prediction.logits, "probabilities": prediction.probabilities}

    outputs, chunks = [], []
    binary_default = bool(params.get("binary_data_output", False))
    for out in requested:
        out_params = out.parameters or {}
        array, datatype = tensors[out.name], "FP32"
        k = _classification_count(out, model.info.num_classes)
        if k:
            array, datatype = _classify(array, k, model.info.classes), "BYTES"
        if out_params.get("binary_data", binary_default):
            raw = _serialize(array, datatype)
            chunks.append(raw)
            outputs.append(
                InferOutput(
                    name=out.name,
                    shape=list(array.shape),
                    datatype=datatype,
                    parameters={"binary_data_size": len(raw)},
                )
            )
        else:
            outputs.append(
                InferOutput(
                    name=out.name, shape=list(array.shape), datatype=datatype, data=array.ravel().tolist()
                )
            )
    response = InferResponse(model_name=name, model_version=model.info.version, id=req.id, outputs=outputs)
    head = response.model_dump_json(exclude_none=True).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def _check_model(state: ServingState, name: str, version: str) -> None:
    if name != state.settings.model_name:
        raise ServingError(404, f"unknown model {name!r}; this server serves {state.settings.model_name!r}")
    if version and version != state.model.info.version:
        raise ServingError(
            404, f"unknown version {version!r} of model {name!r}; it has {state.model.info.version!r}"
        )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise ServingError(400, f"{HEADER_LENGTH} {header_length!r} does not fit a body of {len(body)} bytes")
    n = int(header_length)
    return body[:n], body[n:]


def _input_batch(req: InferRequest, binary: bytes, state: ServingState) -> np.ndarray:
    if len(req.inputs) != 1 or req.inputs[0].name != INPUT_NAME:
        raise ServingError(
            400, f"expected exactly one input named {INPUT_NAME!r}, got {[i.name for i in req.inputs]}"
        )
    tensor = req.inputs[0]
    if tensor.datatype != "FP32":
        raise ServingError(400, f"input datatype must be FP32, got {tensor.datatype!r}")
    expected = list(state.model.info.preprocess.input_shape)
    if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] < 1:
        raise ServingError(
            400, f"input shape must be [N, {', '.join(map(str, expected))}], got {tensor.shape}"
        )
    if tensor.shape[0] > state.settings.max_images:
        raise ServingError(
            413, f"batch of {tensor.shape[0]} images; the limit is {state.settings.max_images}"
        )
    count = int(np.prod(tensor.shape))
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if size != len(binary) or size != count * 4:
            raise ServingError(
                400, f"binary_data_size {size} must equal the {len(binary)} bytes sent and 4 * {count} values"
            )
        values = np.frombuffer(binary, dtype="<f4").astype(np.float32)
    else:
        if binary or tensor.data is None:
            raise ServingError(400, "the input needs 'data', or binary_data_size with binary tensor data")
        try:
            values = np.asarray(tensor.data, dtype=np.float32).ravel()
        except (TypeError, ValueError) as exc:
            raise ServingError(400, "input data must be a flat or nested list of numbers") from exc
        if values.size != count:
            raise ServingError(400, f"input has {values.size} values; shape {tensor.shape} needs {count}")
    if not np.isfinite(values).all():
        raise ServingError(400, "input contains NaN or infinite values")
    return values.reshape(tensor.shape)


def _classification_count(out: RequestedOutput, num_classes: int) -> int:
    k = (out.parameters or {}).get("classification", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ServingError(400, f"classification on {out.name!r} must be a non-negative integer, got {k!r}")
    return min(k, num_classes)


def _classify(values: np.ndarray, k: int, classes: tuple[str, ...]) -> np.ndarray:
    """Triton's classification strings ``"score:index:label"``, best first, shape ``[N, k]``."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.array(
        [[f"{row[i]:f}:{i}:{classes[i]}" for i in idx] for row, idx in zip(values, order, strict=True)],
        dtype=object,
    )


def _serialize(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        # Each element: its byte length as little-endian uint32, then the bytes.
        return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in array.ravel()))
    return np.ascontiguousarray(array, dtype="<f4").tobytes()
