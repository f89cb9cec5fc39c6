"""The images of a ``POST /v1/predict`` request: read from its body, then decoded within its deadline.

Three bodies carry images: the image file itself (``Content-Type: image/*`` or
``application/octet-stream``), a multipart form (field ``files``) and JSON (base64 ``images``). Every
value in them is validated by ``livt.serving.inputs``. Decoding reads every header first (format,
pixels each and in all), so what a request costs is bounded before any pixel is decoded; small
requests decode in the event loop, large ones in the decoding threads.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from livt.inference.preprocess import (
    ImageError,
    ImageTooLargeError,
    PreprocessConfig,
    open_upload,
    preprocess_image,
)
from livt.serving.batching import InferenceTimeoutError
from livt.serving.errors import ServingError, missed_deadline
from livt.serving.inputs import PredictInput, RequestModels, decode_base64_image, text_values
from livt.serving.settings import ServeSettings

MULTIPART = "multipart/form-data"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
_FORMATS = "an image file (image/png, image/jpeg, ...)"
# A request whose images are this small in all (bytes and pixels) is decoded in the event loop.
INLINE_DECODE_BYTES = 64 * 1024
INLINE_DECODE_PIXELS = 64 * 64
_FORM_FIELDS = 8  # top_k and prior, and room for a client's mistakes to be named


def media_type(content_type: str) -> str:
    """``image/png`` from ``Content-Type: Image/PNG; q=1``: what decides how a body is read."""
    return content_type.split(";")[0].strip().lower()


def is_image_file(media: str) -> bool:
    """Whether a body of this media type is one image file (see ``media_type``)."""
    return media.startswith("image/") or media == OCTET_STREAM


async def read_predict_request(request: Request, requests: RequestModels) -> PredictInput:
    content_type = media_type(request.headers.get("content-type", ""))
    if content_type == MULTIPART:
        return await _read_multipart(request, requests)
    if content_type == JSON:
        return await requests.json_predict(request)
    if is_image_file(content_type):
        # An empty body is one empty file: decoding says "empty", as for an empty upload.
        options = requests.options(request.query_params.multi_items())
        return PredictInput([await request.body()], options)
    raise ServingError(
        415,
        f"send {_FORMATS} as the body, {MULTIPART} (field 'files') or {JSON} (base64 'images'); "
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
        return PredictInput([await u.read() for u in uploads], options)
    finally:
        await form.close()


def decode_inline(
    files: list[bytes | str], cfg: PreprocessConfig, settings: ServeSettings
) -> np.ndarray | None:
    """The model input, decoded right here when the request is small, else None (see ``decode_in_pool``).

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


async def decode_in_pool(
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
