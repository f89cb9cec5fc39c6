"""``GET /v1/prior``: the label prior estimated from the images the service has seen."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from fastapi import APIRouter, Depends

from livt.label_shift import total_variation
from livt.serving.dependencies import StateDep, require_api_key
from livt.serving.errors import ServingError, responses
from livt.serving.schemas import PriorEstimateResponse

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)])


@router.get("/prior", response_model=PriorEstimateResponse, responses=responses(401, 409))
async def estimated_prior(state: StateDep) -> PriorEstimateResponse:
    """The EM estimate of the traffic's label prior over the last ``window`` images.

    ``ready`` says whether requests asking for the ``estimated`` prior get it (else balanced).
    409: the model has no balanced logits, or the server runs without a prior window.
    """
    monitor = state.prior_monitor
    if monitor is None:
        raise ServingError(409, state.prior_unavailable_reason())
    info = state.model.info
    train = np.asarray(info.class_counts, dtype=np.float64) / sum(info.class_counts)
    snapshot = monitor.snapshot
    estimate = None if snapshot is None else snapshot.estimate
    images = 0 if estimate is None else estimate.images
    uniform = np.full(info.num_classes, 1.0 / info.num_classes)
    return PriorEstimateResponse(
        classes=list(info.classes),
        estimate=None if estimate is None else estimate.pi.tolist(),
        std=None if estimate is None or estimate.std is None else estimate.std.tolist(),
        images=images,
        seen=monitor.seen,
        window=monitor.window,
        min_images=monitor.min_images,
        ready=images >= monitor.min_images,
        distance_to_train=None if estimate is None else total_variation(estimate.pi, train),
        distance_to_balanced=None if estimate is None else total_variation(estimate.pi, uniform),
        train=train.tolist(),
        updated_at=None
        if snapshot is None
        else datetime.fromtimestamp(snapshot.updated_at, tz=timezone.utc).isoformat(),
    )
