"""What routes share: the app's serving state and the optional API key check."""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from fastapi import Request

from livt.prior import PriorError
from livt.serving.batching import DynamicBatcher
from livt.serving.errors import ServingError
from livt.serving.inputs import RequestModels
from livt.serving.metrics import ServingMetrics
from livt.serving.model import ESTIMATED_PRIOR, PriorSpec, ServedModel
from livt.serving.prior_monitor import PriorMonitor
from livt.serving.settings import ServeSettings


@dataclass(frozen=True)
class RequestPrior:
    """The prior a request's probabilities are for: its mode, offset (None: the artifact's) and a note."""

    mode: str
    offset: np.ndarray | None
    note: str | None = None


@dataclass
class ServingState:
    """Created by the lifespan: one model, batcher, metrics registry, request models and decoder per app."""

    settings: ServeSettings
    model: ServedModel
    batcher: DynamicBatcher
    metrics: ServingMetrics
    requests: RequestModels
    decoder: ThreadPoolExecutor
    prior_monitor: PriorMonitor | None = None

    def resolve_prior(self, spec: PriorSpec) -> RequestPrior:
        """A request's prior (None: the server's default); ``PriorError`` for one that cannot be used."""
        if spec is None:
            spec = self.settings.default_prior
        if spec != ESTIMATED_PRIOR:
            return RequestPrior(*self.model.resolve_prior(spec))
        if self.prior_monitor is None:
            raise PriorError(self.prior_unavailable_reason())
        snapshot = self.prior_monitor.snapshot
        images = 0 if snapshot is None else snapshot.estimate.images
        if images < self.prior_monitor.min_images:
            return RequestPrior(
                "balanced",
                self.model.prior_offset(None),
                f"estimated prior not ready ({images} of {self.prior_monitor.min_images} images): balanced used",
            )
        return RequestPrior(ESTIMATED_PRIOR, self.model.prior_offset(snapshot.estimate.pi))

    def prior_unavailable_reason(self) -> str:
        if not self.model.has_balanced_logits:
            info = self.model.info
            return (
                f"the model was trained with {info.loss!r} and tau {info.tau:g}: it has no balanced logits, "
                "so there is no prior to estimate or apply"
            )
        return "prior estimation is off (start the server with --prior-window N > 0)"


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
