"""``/v1``: predict on image files with a request-time prior, and describe the model."""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from livt.serving.dependencies import ServingState, get_state, require_api_key
from livt.serving.errors import ServingError, responses
from livt.serving.model import top_k as pick_top_k
from livt.serving.preprocess import ImageError, PreprocessConfig, preprocess_bytes
from livt.serving.schemas import (
    ClassScore,
    ImagePrediction,
    ModelInfo,
    ModelRef,
    PredictJSONRequest,
    PredictResponse,
    Timing,
)

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)])

_MULTIPART = "multipart/form-data"
_JSON = "application/json"
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            _MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "top_k": {"type": "integer", "minimum": 1, "default": 5},
                        "prior": {
                            "type": "string",
                            "description": "model | balanced | train | a JSON list of one number per class",
                        },
                    },
                }
            },
            _JSON: {"schema": PredictJSONRequest.model_json_schema()},
        },
    }
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    openapi_extra=_REQUEST_BODY,
    responses=responses(400, 401, 413, 415, 502, 503, 504),
    summary="Classify images (multipart field 'files', or JSON base64 'images')",
)
async def predict(request: Request, state: ServingState = Depends(get_state)) -> PredictResponse:
    """Top-k classes per image under the requested prior.

    413: body, image pixels or image count over the limits. 415: not an accepted image format.
    502: the model failed or returned non-finite numbers. 503: queue full (Retry-After). 504: deadline missed.
    """
    start = time.perf_counter()
    settings, model = state.settings, state.model
    with state.batcher.reserve() as reservation:
        options = await _read_request(request, state)
        if options.top_k > settings.max_top_k:
            raise ServingError(400, f"top_k must be at most {settings.max_top_k}, got {options.top_k}")
        prior_mode, offset = model.resolve_prior(options.prior)
        batch = await run_in_threadpool(
            _preprocess_all, options.files, model.info.preprocess, settings.max_image_pixels
        )
        result = await reservation.submit(batch, settings.timeout_s)
    logits, probabilities = result.outputs
    prediction = model.apply_prior(logits, probabilities, offset)
    if not (np.isfinite(prediction.logits).all() and np.isfinite(prediction.probabilities).all()):
        raise ServingError(502, "the model produced non-finite outputs for this input")
    state.metrics.queue_time.observe(result.queue_s)
    classes = model.info.classes
    return PredictResponse(
        model=_model_ref(state),
        prior=prior_mode,
        predictions=[
            ImagePrediction(
                top_k=[
                    ClassScore(label=classes[i], index=i, probability=p)
                    for i, p in pick_top_k(row, options.top_k)
                ]
            )
            for row in prediction.probabilities
        ],
        timing=Timing(
            queue_ms=result.queue_s * 1e3,
            inference_ms=result.inference_s * 1e3,
            total_ms=(time.perf_counter() - start) * 1e3,
            batch_size=result.batch_size,
        ),
    )


@router.get("/model", response_model=ModelInfo, responses=responses(401))
async def model_info(state: ServingState = Depends(get_state)) -> ModelInfo:
    """The served artifact's metadata: classes, prior, temperature, metrics, preprocessing, versions."""
    info = state.model.info
    return ModelInfo(
        name=state.settings.model_name,
        version=info.version,
        sha256=info.sha256,
        platform=state.model.backend.platform,
        classes=list(info.classes),
        prior=info.metadata.get("prior", {}),
        temperature=info.temperature,
        metrics=info.metadata.get("metrics"),
        metadata=info.metadata,
    )


@dataclass
class _Options:
    files: list[bytes]
    top_k: int
    prior: object


async def _read_request(request: Request, state: ServingState) -> _Options:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == _MULTIPART:
        options = await _read_multipart(request)
    elif content_type == _JSON:
        options = _read_json(await request.body())
    else:
        raise ServingError(415, f"send {_MULTIPART} (field 'files') or {_JSON} (base64 'images')")
    if not options.files:
        raise ServingError(400, "no images in the request")
    if len(options.files) > state.settings.max_images:
        raise ServingError(
            413, f"{len(options.files)} images in one request; the limit is {state.settings.max_images}"
        )
    return options


async def _read_multipart(request: Request) -> _Options:
    form = await request.form()
    uploads = form.getlist("files")
    if any(not isinstance(u, UploadFile) for u in uploads):
        raise ServingError(400, "form field 'files' must hold file uploads")
    files = [await u.read() for u in uploads]
    prior_text = form.get("prior")
    prior: object = None
    if isinstance(prior_text, str) and prior_text.strip():
        prior = prior_text.strip()
        if prior.startswith("["):
            try:
                prior = json.loads(prior)
            except json.JSONDecodeError as exc:
                raise ServingError(400, f"prior is not a valid JSON list: {exc}") from exc
    top_k = form.get("top_k") or 5
    try:
        parsed = PredictJSONRequest.model_validate({"images": ["-"], "top_k": top_k, "prior": prior})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ServingError(400, f"invalid form field {err['loc'][0]}: {err['msg']}") from exc
    return _Options(files, parsed.top_k, parsed.prior)


def _read_json(body: bytes) -> _Options:
    parsed = PredictJSONRequest.model_validate_json(body)
    files = []
    for i, text in enumerate(parsed.images):
        # Accept data URLs as a browser's FileReader writes them.
        payload = text.split(",", 1)[1] if text.startswith("data:") else text
        try:
            files.append(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ServingError(400, f"images[{i}] is not valid base64") from exc
    return _Options(files, parsed.top_k, parsed.prior)


def _preprocess_all(files: list[bytes], cfg: PreprocessConfig, max_pixels: int) -> np.ndarray:
    arrays = []
    for i, data in enumerate(files):
        try:
            arrays.append(preprocess_bytes(data, cfg, max_pixels=max_pixels))
        except ImageError as exc:
            raise type(exc)(f"image {i}: {exc}") from exc
    return np.stack(arrays)


def _model_ref(state: ServingState) -> ModelRef:
    info = state.model.info
    return ModelRef(
        name=state.settings.model_name,
        version=info.version,
        architecture=str(info.metadata.get("model_name", "")),
    )
