"""Open Inference Protocol v2 (KServe / Triton HTTP): metadata, readiness and ``infer``.

Supports the classification extension (``"classification": k`` on a requested output answers
BYTES ``"score:index:label"``) and the binary tensor data extension (``Inference-Header-Content-
Length``, ``binary_data_size``, ``binary_data`` / ``binary_data_output``), so a stock
``tritonclient.http`` client works unmodified. ``parameters.prior`` works as in ``/v1/predict``.
"""

from __future__ import annotations

import struct
import time

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from livt import __version__
from livt.artifact import INPUT_NAME, OUTPUT_NAMES
from livt.serving.dependencies import StateDep, require_api_key
from livt.serving.errors import ServingError, responses
from livt.serving.inputs import HEADER_LENGTH
from livt.serving.schemas import (
    InferOutput,
    InferResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    Readiness,
    ServerMetadata,
    TensorMetadata,
)
from livt.serving.state import ServingState

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


# Each route with a version has its own function: one function under both paths would make
# ``version`` a query parameter of the path without it, which the API does not take.


@router.get("/models/{name}", response_model=ModelMetadata, responses=responses(401, 404))
async def model_metadata(name: str, state: StateDep) -> ModelMetadata:
    return _metadata(state, name, "")


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=responses(401, 404))
async def model_version_metadata(name: str, version: str, state: StateDep) -> ModelMetadata:
    return _metadata(state, name, version)


def _metadata(state: ServingState, name: str, version: str) -> ModelMetadata:
    _check_model(state, name, version)
    info = state.model.info
    return ModelMetadata(
        name=name,
        versions=[info.version],
        platform=state.model.backend.platform,
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, *info.preprocess.input_shape])],
        outputs=[TensorMetadata(name=n, datatype="FP32", shape=[-1, info.num_classes]) for n in OUTPUT_NAMES],
        parameters=state.model.choice.describe(),
    )


@router.get("/models/{name}/ready", response_model=ModelReadiness, responses=responses(401, 404))
async def model_ready(name: str, state: StateDep) -> ModelReadiness:
    _check_model(state, name, "")
    return ModelReadiness(name=name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready", response_model=ModelReadiness, responses=responses(401, 404)
)
async def model_version_ready(name: str, version: str, state: StateDep) -> ModelReadiness:
    _check_model(state, name, version)
    return ModelReadiness(name=name, ready=True)


_INFER = {
    "response_model": InferResponse,
    "responses": responses(400, 401, 404, 413, 502, 503, 504),
    "summary": "Run inference on FP32 tensors (JSON or binary tensor data)",
}


@router.post("/models/{name}/infer", **_INFER)
async def infer(name: str, request: Request, state: StateDep) -> Response:
    """Inputs: one FP32 tensor ``input`` ``[N, C, H, W]``. Outputs: ``logits``, ``probabilities``.

    When any output is binary the body is the JSON header followed by the tensors' bytes, with
    ``Inference-Header-Content-Length`` giving the header's length.
    """
    return await _infer(state, name, "", request)


@router.post("/models/{name}/versions/{version}/infer", **_INFER)
async def infer_version(name: str, version: str, request: Request, state: StateDep) -> Response:
    """As ``/v2/models/{name}/infer``, for the model's one version."""
    return await _infer(state, name, version, request)


async def _infer(state: ServingState, name: str, version: str, request: Request) -> Response:
    start = time.perf_counter()
    _check_model(state, name, version)
    requests = state.requests
    req, binary = await requests.infer_request(request)
    batch = requests.input_batch(req, binary)
    params = req.parameters or requests.infer_parameters()
    requested = req.outputs or [requests.requested_output(name=n) for n in OUTPUT_NAMES]

    model = state.model
    answer = await state.infer(
        batch, state.resolve_prior(params.prior), start + state.settings.timeout_s, observe=params.observe
    )
    tensors = {"logits": answer.prediction.logits, "probabilities": answer.prediction.probabilities}

    outputs, chunks = [], []
    for out in requested:
        array, datatype = tensors[out.name], "FP32"
        k = min(out.parameters.classification, model.info.num_classes) if out.parameters else 0
        if k:
            array, datatype = _classify(array, k, model.info.classes), "BYTES"
        binary_data = out.parameters.binary_data if out.parameters else None
        if params.binary_data_output if binary_data is None else binary_data:
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
