"""What routes depend on: the app's serving state (``StateDep``) and the optional API key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from livt.serving.errors import ServingError
from livt.serving.settings import ServeSettings
from livt.serving.state import ServingState


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


# The dependencies are coroutines although they never wait: FastAPI runs a plain function in a
# worker thread, and two thread hand-offs per request cost more than the whole route on a small model.


async def get_state(request: Request) -> ServingState:
    state = getattr(request.app.state, "serving", None)
    if state is None:
        raise ServingError(503, "the model is not loaded yet", {"Retry-After": "1"})
    return state


StateDep = Annotated[ServingState, Depends(get_state)]


async def require_api_key(request: Request) -> None:
    """If ``LIVT_API_KEY`` is set, demand it as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    expected = get_settings(request).api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer":
        given = token.strip()
    # Header values arrive as bytes, which Starlette decodes as latin-1; clients (curl, browsers,
    # httpx) send a key as UTF-8, so the comparison is of those bytes. compare_digest takes the
    # same time wherever the values differ: no timing oracle.
    key = expected.get_secret_value().encode()
    if given is None or not hmac.compare_digest(given.encode("latin-1"), key):
        raise ServingError(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
