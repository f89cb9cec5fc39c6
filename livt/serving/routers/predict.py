"""``/v1``: predict on image files with a request-time prior, and describe the model.

``POST /v1/predict`` takes its images in one of three bodies: the image file itself
(``Content-Type: image/png``, ``image/jpeg``, ... or ``application/octet-stream``; one image), a
multipart form (field ``files``, repeatable), or JSON with base64 ``images``. The raw body is the
cheapest to parse, so the fastest for one image. ``top_k`` and ``prior`` are query parameters
whatever the body, or form fields / JSON keys of a form or JSON body (not both). Every value is
read by ``livt.serving.inputs``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from livt.serving.batching import InferenceTimeoutError
from livt.serving.dependencies import ServingState, get_state, require_api_key
from livt.serving.errors import ServingError, check_finite, missed_deadline, responses
from livt.serving.inputs import PredictInput, RequestModels, decode_base64_image, text_values
from livt.serving.model import top_k as pick_top_k
from livt.serving.preprocess import (
    ImageError,
    ImageTooLargeError,
    PreprocessConfig,
    open_upload,
    preprocess_image,
)
from livt.serving.schemas import ClassScore, ImagePrediction, ModelInfo, ModelRef, PredictResponse, Timing
from livt.serving.settings import ServeSettings

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)])

_MULTIPART = "multipart/form-data"
_JSON = "application/json"
_OCTET_STREAM = "application/octet-stream"
_FORMATS = "an image file (image/png, image/jpeg, ...)"
# A request whose images are this small in all (bytes and pixels) is decoded in the event loop.
INLINE_DECODE_BYTES = 64 * 1024
INLINE_DECODE_PIXELS = 64 * 64
_FORM_FIELDS = 8  # top_k and prior, and room for a client's mistakes to be named


@router.post(
    "/predict",
    response_model=PredictResponse,
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
    deadline = start + settings.timeout_s
    with state.batcher.reserve() as reservation:
        options = await _read_request(request, state.requests)
        prior = state.resolve_prior(options.prior)
        batch = _decode_inline(options.files, model.info.preprocess, settings)
        if batch is None:
            # Forming batches wait for reserved requests: not for one that decodes in a thread.
            reservation.release()
            batch = await _decode_in_pool(
                options.files, model.info.preprocess, settings, state.decoder, deadline
            )
        try:
            result = await reservation.submit(batch, max(deadline - time.perf_counter(), 0.0))
        except InferenceTimeoutError:
            raise missed_deadline(settings.timeout_s) from None
    logits, probabilities = result.outputs
    prediction = model.apply_prior(logits, probabilities, prior.offset)
    check_finite((prediction.logits, prediction.probabilities), batch, model.info.preprocess)
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


async def _read_request(request: Request, requests: RequestModels) -> PredictInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == _MULTIPART:
        return await _read_multipart(request, requests)
    if content_type == _JSON:
        return await requests.json_predict(request)
    if content_type.startswith("image/") or content_type == _OCTET_STREAM:
        # An empty body is one empty file: decoding says "empty", as for an empty upload.
        options = requests.options(request.query_params.multi_items())
        return PredictInput([await request.body()], options.top_k, options.prior)
    raise ServingError(
        415,
        f"send {_FORMATS} as the body, {_MULTIPART} (field 'files') or {_JSON} (base64 'images'); "
        f"got Content-Type {content_type or 'none'!r}",
    )


async def _read_multipart(request: Request, requests: RequestModels) -> PredictInput:
    limit = requests.limits.max_images
    parser = MultiPartParser(request.headers, request.stream(), max_files=limit, max_fields=_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        # Starlette stops at the first file over max_files, so the count is never read in full.
        if exc.message.startswith("Too many files"):
            raise ServingError(413, f"more than {limit} images in one request; the limit is {limit}") from exc
        raise ServingError(400, f"invalid multipart body: {exc.message}") from exc
    try:
        uploads = form.getlist("files")
        if not uploads or any(not isinstance(u, UploadFile) for u in uploads):
            raise ServingError(400, "no images in the request: form field 'files' must hold file uploads")
        fields = [(name, value) for name, value in form.multi_items() if name != "files"]
        if any(not isinstance(value, str) for _, value in fields):
            raise ServingError(400, "only the form field 'files' may hold file uploads")
        options = requests.options(
            request.query_params.multi_items(), text_values(fields, "form field"), "form"
        )
        return PredictInput([await u.read() for u in uploads], options.top_k, options.prior)
    finally:
        await form.close()


def _decode_inline(
    files: list[bytes | str], cfg: PreprocessConfig, settings: ServeSettings
) -> np.ndarray | None:
    """The model input, decoded right here when the request is small, else None (see ``_decode_in_pool``).

    Handing work to a thread and back costs more than decoding a Fashion-MNIST 28 x 28 PNG (about
    50 us), and with a small model that hand-off was a fifth of the serving throughput. So small
    images are decoded in the event loop: the bytes are counted first, then the pixels from the headers.
    """
    if cfg.resize * cfg.resize > INLINE_DECODE_PIXELS or sum(map(len, files)) > INLINE_DECODE_BYTES:
        return None
    opened = _open_all(files, settings)
    if sum(img.width * img.height for img in opened) > INLINE_DECODE_PIXELS:
        return None
    return _decode_all(opened, cfg, None)


async def _decode_in_pool(
    files: list[bytes | str],
    cfg: PreprocessConfig,
    settings: ServeSettings,
    pool: ThreadPoolExecutor,
    deadline: float,
) -> np.ndarray:
    """The model input, decoded in the decoding threads, within the request's deadline.

    The pool is small (``--decode-threads``), so large requests wait for each other rather than
    take every core from the event loop and the model; the wait counts against the deadline, and a
    request past it stops before its next image.
    """
    work = asyncio.get_running_loop().run_in_executor(
        pool, lambda: _decode_all(_open_all(files, settings), cfg, deadline)
    )
    try:
        return await asyncio.wait_for(work, max(deadline - time.perf_counter(), 0.0))
    except (asyncio.TimeoutError, InferenceTimeoutError):
        raise missed_deadline(settings.timeout_s) from None


def _open_all(files: list[bytes | str], settings: ServeSettings) -> list[Image.Image]:
    """Every image's header, checked: format, pixels each and pixels in all; nothing decoded yet."""
    opened = []
    total = 0
    for i, data in enumerate(files):
        try:
            img = open_upload(
                decode_base64_image(i, data) if isinstance(data, str) else data,
                max_pixels=settings.max_image_pixels,
            )
        except ImageError as exc:
            raise type(exc)(f"image {i}: {exc}") from exc
        opened.append(img)
        total += img.width * img.height
    if total > settings.max_request_pixels:
        raise ImageTooLargeError(
            f"the request's {len(files)} images have {total} pixels in all, more than the limit of "
            f"{settings.max_request_pixels} per request"
        )
    return opened


def _decode_all(opened: list[Image.Image], cfg: PreprocessConfig, deadline: float | None) -> np.ndarray:
    arrays = []
    for i, img in enumerate(opened):
        if deadline is not None and time.perf_counter() > deadline:
            raise InferenceTimeoutError("past the deadline")
        try:
            arrays.append(preprocess_image(img, cfg))
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
