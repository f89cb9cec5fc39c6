"""``/v1``: predict on image files with a request-time prior, and describe the model.

``POST /v1/predict`` takes its images in one of three bodies: the image file itself
(``Content-Type: image/png``, ``image/jpeg``, ... or ``application/octet-stream``; one image, with
``top_k`` and ``prior`` as query parameters), a multipart form (field ``files``, repeatable), or
JSON with base64 ``images``. The raw body is the cheapest to parse, so the fastest for one image.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams, UploadFile

from livt.serving.dependencies import ServingState, get_state, require_api_key
from livt.serving.errors import ServingError, responses
from livt.serving.model import top_k as pick_top_k
from livt.serving.preprocess import ImageError, ImageTooLargeError, PreprocessConfig, preprocess_bytes
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
_OCTET_STREAM = "application/octet-stream"
_OPTIONS = ("top_k", "prior")  # the query parameters of a raw image body
_FORMATS = "an image file (image/png, image/jpeg, ...)"
# Images of up to this many pixels in all decode in the event loop, if the model input is no larger.
INLINE_DECODE_PIXELS = 64 * 64
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
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            _OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": "with an image body only: how many classes to return (default 5)",
            "schema": {"type": "integer", "minimum": 1, "default": 5},
        },
        {
            "name": "prior",
            "in": "query",
            "required": False,
            "description": "with an image body only: model | balanced | train | a JSON list of one number "
            "per class",
            "schema": {"type": "string"},
        },
    ],
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    openapi_extra=_REQUEST_BODY,
    responses=responses(400, 401, 413, 415, 502, 503, 504),
    summary="Classify images (an image file as the body, multipart field 'files', or JSON base64 'images')",
)
async def predict(request: Request, state: ServingState = Depends(get_state)) -> Response:
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
        prior = state.resolve_prior(options.prior)
        batch = await _preprocess(options.files, model.info.preprocess, settings.max_image_pixels)
        result = await reservation.submit(batch, settings.timeout_s)
    logits, probabilities = result.outputs
    prediction = model.apply_prior(logits, probabilities, prior.offset)
    if not (np.isfinite(prediction.logits).all() and np.isfinite(prediction.probabilities).all()):
        raise ServingError(502, "the model produced non-finite outputs for this input")
    state.metrics.queue_time.observe(result.queue_s)
    classes = model.info.classes
    response = PredictResponse(
        model=_model_ref(state),
        prior=prior.mode,
        prior_note=prior.note,
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
    # Serialised here: FastAPI would dump, validate and dump the response model again (~25 us).
    return Response(response.model_dump_json(), media_type=_JSON)


@router.get("/model", response_model=ModelInfo, responses=responses(401))
async def model_info(state: ServingState = Depends(get_state)) -> ModelInfo:
    """The served artifact's metadata: classes, prior, calibration, metrics, preprocessing, versions."""
    info = state.model.info
    return ModelInfo(
        name=state.settings.model_name,
        version=info.version,
        sha256=info.sha256,
        platform=state.model.backend.platform,
        classes=list(info.classes),
        prior=info.metadata.get("prior", {}),
        calibration=info.calibration,
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
    elif content_type.startswith("image/") or content_type == _OCTET_STREAM:
        options = _read_image_body(await request.body(), request.query_params)
    else:
        raise ServingError(
            415,
            f"send {_FORMATS} as the body, {_MULTIPART} (field 'files') or {_JSON} (base64 'images'); "
            f"got Content-Type {content_type or 'none'!r}",
        )
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
    top_k, prior = _parse_options(form.get("top_k"), form.get("prior"), "form field")
    return _Options(files, top_k, prior)


def _read_image_body(body: bytes, query: QueryParams) -> _Options:
    unknown = sorted(set(query) - set(_OPTIONS))
    if unknown:
        raise ServingError(
            400, f"unknown query parameter {unknown[0]!r}; an image body takes {list(_OPTIONS)}"
        )
    # An empty body is one empty file: decoding says "empty", as for an empty upload.
    top_k, prior = _parse_options(query.get("top_k"), query.get("prior"), "query parameter")
    return _Options([body], top_k, prior)


def _parse_options(top_k: object, prior_text: object, where: str) -> tuple[int, object]:
    """``top_k`` and ``prior`` given as text (form fields or query parameters), validated as in JSON."""
    prior: object = None
    if isinstance(prior_text, str) and prior_text.strip():
        prior = prior_text.strip()
        if prior.startswith("["):
            try:
                prior = json.loads(prior)
            except json.JSONDecodeError as exc:
                raise ServingError(400, f"prior is not a valid JSON list: {exc}") from exc
    try:
        parsed = PredictJSONRequest.model_validate({"images": ["-"], "top_k": top_k or 5, "prior": prior})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ServingError(400, f"invalid {where} {err['loc'][0]}: {err['msg']}") from exc
    return parsed.top_k, parsed.prior


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


async def _preprocess(files: list[bytes], cfg: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """The model input for the request's images, decoded in the event loop when they are small.

    Handing work to a thread and back costs more than decoding a Fashion-MNIST 28 x 28 PNG (about
    50 us), and with a small model that hand-off was a fifth of the serving throughput. So small
    images are decoded right here, under a pixel cap that is checked from the header before any
    pixel is decoded; images over it are decoded in a worker thread, under the real limit, so a
    large image does not hold up the event loop.
    """
    inline_cap = min(max_pixels, INLINE_DECODE_PIXELS // len(files))
    if cfg.resize * cfg.resize <= INLINE_DECODE_PIXELS:
        try:
            return _preprocess_all(files, cfg, inline_cap)
        except ImageTooLargeError:
            if inline_cap == max_pixels:
                raise
    return await run_in_threadpool(_preprocess_all, files, cfg, max_pixels)


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
