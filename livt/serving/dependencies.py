"""What routes share: the app's serving state and the optional API key check."""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request

from livt.serving.batching import DynamicBatcher
from livt.serving.errors import ServingError
from livt.serving.inputs import RequestModels
from livt.serving.metrics import ServingMetrics
from livt.serving.model import ServedModel
from livt.serving.settings import ServeSettings


@dataclass
class ServingState:
    """Created by the lifespan: one model, batcher, metrics registry, request models and decoder per app."""

    settings: ServeSettings
    model: ServedModel
    batcher: DynamicBatcher
    metrics: ServingMetrics
    requests: RequestModels
    decoder: ThreadPoolExecutor


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


# The dependencies are coroutines although they never wait: FastAPI runs a plain function in a
# worker thread, and two thread hand-offs per request cost more than the whole route on a small model.


async def get_state(request: Request) -> ServingState:
    state = getattr(request.app.state, "serving", None)
    if state is None:
        raise ServingError(503, "the model is not loaded yet", {"Retry-After": "1"})
    return state


async def require_api_key(request: Request) -> None:
    """If ``LIVT_API_KEY`` is set, demand it as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    expected = get_settings(request).api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer":
        given = token.strip()
    # compare_digest takes the same time wherever the strings differ: no timing oracle.
    if given is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ServingError(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
