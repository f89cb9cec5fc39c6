"""``/v1``: predict on image files with a request-time prior, and describe the model.

``POST /v1/predict`` takes its images in one of three bodies: the image file itself
(``Content-Type: image/png``, ``image/jpeg``, ... or ``application/octet-stream``; one image), a
multipart form (field ``files``, repeatable), or JSON with base64 ``images``. The raw body is the
cheapest to parse, so the fastest for one image. ``top_k``, ``prior`` and ``observe`` (false:
leave images sent again out of the traffic's prior estimate) are query parameters whatever the
body, or form fields / JSON keys of a form or JSON body (not both). Every value is read by
``livt.serving.inputs``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response

from livt.inference.model import top_k as pick_top_k
from livt.prior import REQUEST_PRIORS
from livt.serving.dependencies import StateDep, require_api_key
from livt.serving.errors import responses
from livt.serving.schemas import ClassScore, ImagePrediction, ModelInfo, ModelRef, PredictResponse, Timing
from livt.serving.state import ServingState
from livt.serving.uploads import JSON, decode_in_pool, decode_inline, read_predict_request

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)])


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=responses(400, 401, 413, 415, 502, 503, 504),
    summary="Classify images (an image file as the body, multipart field 'files', or JSON base64 'images')",
)
async def predict(request: Request, state: StateDep) -> Response:
    """Top-k classes per image under the requested prior.

    413: body, image pixels or image count over the limits. 415: not an accepted image format.
    502: the model failed or returned non-finite numbers. 503: queue full (Retry-After). 504: deadline missed.
    """
    start = time.perf_counter()
    settings, model = state.settings, state.model
    deadline = start + settings.timeout_s
    # The body first: a slow upload must not hold a place that forming batches wait for.
    given = await read_predict_request(request, state.requests)
    with state.batcher.reserve() as reservation:
        options = given.options
        prior = state.resolve_prior(options.prior)
        batch = decode_inline(given.files, model.info.preprocess, settings)
        if batch is None:
            # Forming batches wait for reserved requests: not for one that decodes in a thread.
            reservation.release()
            batch = await decode_in_pool(
                given.files, model.info.preprocess, settings, state.decoder, deadline
            )
        answer = await state.infer(batch, prior, deadline, reservation, observe=options.observe)
    result = answer.batch
    classes = model.info.classes
    response = PredictResponse(
        model=_model_ref(state),
        prior=answer.prior.mode,
        prior_note=answer.prior.note,
        predictions=[
            ImagePrediction(
                top_k=[
                    ClassScore(label=classes[i], index=i, probability=p)
                    for i, p in pick_top_k(row, options.top_k)
                ]
            )
            for row in answer.prediction.probabilities
        ],
        timing=Timing(
            queue_ms=result.queue_s * 1e3,
            inference_ms=result.inference_s * 1e3,
            total_ms=(time.perf_counter() - start) * 1e3,
            batch_size=result.batch_size,
        ),
    )
    # Serialised here: FastAPI would dump, validate and dump the response model again (~25 us).
    return Response(response.model_dump_json(), media_type=JSON)


@router.get("/model", response_model=ModelInfo, responses=responses(401))
async def model_info(state: StateDep) -> ModelInfo:
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
        priors=list(REQUEST_PRIORS),
        balanced_logits=state.model.has_balanced_logits,
        engine=state.model.choice.describe(),
    )


def _model_ref(state: ServingState) -> ModelRef:
    info = state.model.info
    return ModelRef(
        name=state.settings.model_name,
        version=info.version,
        architecture=str(info.metadata.get("model_name", "")),
    )
