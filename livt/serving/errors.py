"""Every failure is a JSON ``{"error": message}`` with the right status; this module maps them.

Client faults are 4xx: bad input 400, unauthorised 401, unknown model 404, too large 413, not an
accepted image 415. Service faults: a model that returns non-finite numbers or fails is 502 (the
model behind the API answered badly; the request may be retried), a full queue 503 with
``Retry-After``, a missed deadline 504. Anything unforeseen is a 500 JSON body, never a dead worker.
"""

from __future__ import annotations

import logging

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from livt.inference.preprocess import ImageError, PreprocessConfig
from livt.prior import PriorError
from livt.serving.batching import BatcherClosedError, InferenceError, InferenceTimeoutError, QueueFullError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
# nginx's status for a client that closed the connection before the answer: never sent, only counted.
CLIENT_CLOSED = 499
TOO_MANY = "too_many"  # the pydantic error type of a count over its limit: 413, like the other limits


class ErrorResponse(BaseModel):
    """The body of every error."""

    error: str


class ServingError(Exception):
    """An error with its HTTP status (and optional headers) chosen where it is raised."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses=`` entries documenting the given error statuses."""
    return {code: {"model": ErrorResponse} for code in codes}


def exception_response(exc: Exception) -> JSONResponse:
    """The JSON error response for ``exc``: the one mapping from failures to statuses."""
    if isinstance(exc, ServingError):
        return error_response(exc.status_code, exc.message, exc.headers)
    if isinstance(exc, ImageError):
        return error_response(exc.status_code, str(exc))
    if isinstance(exc, PriorError):
        return error_response(400, f"invalid prior: {exc}")
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        too_many = [e for e in errors if e["type"] == TOO_MANY]
        if too_many:
            return error_response(413, _describe(too_many))
        return error_response(400, f"invalid request: {_describe(errors)}")
    if isinstance(exc, RequestValidationError):
        return error_response(400, f"invalid request: {_describe(exc.errors())}")
    if isinstance(exc, QueueFullError):
        return error_response(503, f"busy: {exc}", {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, BatcherClosedError):
        return error_response(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, InferenceError):
        return error_response(502, str(exc))
    if isinstance(exc, InferenceTimeoutError):
        return error_response(504, str(exc))
    if isinstance(exc, StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), exc.headers)
    if isinstance(exc, ClientDisconnect):
        # The client's doing, and common (a closed tab, a timed-out client): not a server error.
        logger.debug("client closed the connection before its request was read")
        return error_response(CLIENT_CLOSED, "client closed the connection")
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__})")


# The types exception_response maps, registered with FastAPI one by one: its handlers match by type.
HANDLED = (
    ServingError,
    ImageError,
    PriorError,
    ValidationError,
    RequestValidationError,
    QueueFullError,
    BatcherClosedError,
    InferenceError,
    InferenceTimeoutError,
    StarletteHTTPException,
    ClientDisconnect,
    Exception,
)


def install_error_handlers(app: FastAPI) -> None:
    """Register ``exception_response`` on ``app`` for every failure."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return exception_response(exc)

    for exc_type in HANDLED:
        app.add_exception_handler(exc_type, handle)


def missed_deadline(timeout_s: float) -> InferenceTimeoutError:
    """The 504 of a request past its deadline (``--timeout-s``), wherever it was: decoding, queued, running."""
    return InferenceTimeoutError(f"the request did not finish within {timeout_s:g} s")


def check_finite(outputs: tuple[np.ndarray, ...], batch: np.ndarray, cfg: PreprocessConfig) -> None:
    """Non-finite outputs are the model's fault (502), unless the input lies past what any pixel gives (400).

    Preprocessing maps pixels into a known range per channel; a v2 client may send anything finite,
    and values far past that range (3.4e38) overflow the model's arithmetic: that is the client's doing.
    """
    if all(np.isfinite(out).all() for out in outputs):
        return
    low, high = cfg.input_range()
    margin = 0.01 * (high - low)
    if ((batch < low - margin) | (batch > high + margin)).any():
        ranges = ", ".join(f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(low.ravel(), high.ravel(), strict=True))
        raise ServingError(
            400,
            "the model's outputs overflowed on this input, whose values lie outside the range "
            f"preprocessed pixels have ({ranges} per channel)",
        )
    raise ServingError(502, "the model produced non-finite outputs for this input")


def _describe(errors: list) -> str:
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)
