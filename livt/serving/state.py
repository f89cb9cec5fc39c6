"""The serving state the lifespan builds, and the one inference path every route takes.

``ServingState.infer`` is what a prediction is, whatever the route: the batch joins a model call
within the request's deadline, the artifact's outputs move to the request's prior, and outputs
that are not finite are refused (the client's fault or the model's, see ``check_finite``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from livt.inference.artifact import ArtifactError
from livt.inference.model import Prediction, PriorSpec, RequestPrior, ServedModel, open_model
from livt.prior import MODEL_PRIOR, PriorError
from livt.serving.batching import BatchResult, DynamicBatcher, InferenceTimeoutError, Reservation
from livt.serving.errors import check_finite, missed_deadline
from livt.serving.inputs import RequestModels
from livt.serving.prior_monitor import PriorMonitor
from livt.serving.prometheus import ServingMetrics
from livt.serving.settings import ServeSettings


def load_model(settings: ServeSettings) -> ServedModel:
    """The artifact named by ``settings`` on the engine they ask for, checked against the settings."""
    served = open_model(
        settings.model,
        sha256=settings.sha256,
        require_checksum=settings.require_checksum,
        backend=settings.backend,
        precision=settings.precision,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
        intra_op_spinning=settings.intra_op_spinning,
    )
    if settings.default_prior != MODEL_PRIOR and not served.has_balanced_logits:
        raise ArtifactError(
            f"{settings.model}: --default-prior {settings.default_prior} needs balanced logits, but the "
            f"model was trained with {served.info.loss!r} and tau {served.info.tau:g} (use --default-prior model)"
        )
    return served


@dataclass(frozen=True)
class Inference:
    """One request's answer: its outputs under its prior, and how its model call went."""

    prediction: Prediction
    prior: RequestPrior
    batch: BatchResult


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

    async def infer(
        self,
        batch: np.ndarray,
        prior: RequestPrior,
        deadline: float,
        reservation: Reservation | None = None,
        *,
        observe: bool = True,
    ) -> Inference:
        """Run ``batch`` (through ``reservation`` when the request holds one) by ``deadline``.

        With ``observe`` the batch's balanced logits join the prior window: per request, not per
        model call, so a client re-sending images it already sent can leave them out.
        """
        timeout_s = max(deadline - time.perf_counter(), 0.0)
        try:
            if reservation is not None:
                result = await reservation.submit(batch, timeout_s)
            else:
                result = await self.batcher.submit(batch, timeout_s)
        except InferenceTimeoutError:
            raise missed_deadline(self.settings.timeout_s) from None
        prediction = self.model.apply_prior(*result.outputs, prior.offset)
        if observe and self.prior_monitor is not None:
            # Before the finiteness check: the monitor leaves non-finite rows out itself.
            self.prior_monitor.observe(self.model.balanced_logits(result.outputs[0]))
        check_finite((prediction.logits, prediction.probabilities), batch, self.model.info.preprocess)
        self.metrics.queue_time.observe(result.queue_s)
        return Inference(prediction, prior, result)

    def resolve_prior(self, spec: PriorSpec) -> RequestPrior:
        """A request's prior (None: the server's default); ``PriorError`` for one that cannot be used."""
        return self.model.resolve_prior(
            self.settings.default_prior if spec is None else spec, estimated=self._estimated
        )

    def _estimated(self) -> tuple[np.ndarray | None, str | None]:
        """The traffic's prior, or None with a note while the window holds too few images."""
        if self.prior_monitor is None:
            raise PriorError(self.prior_unavailable_reason())
        snapshot = self.prior_monitor.snapshot
        images = 0 if snapshot is None else snapshot.estimate.images
        if images < self.prior_monitor.min_images:
            note = f"estimated prior not ready ({images} of {self.prior_monitor.min_images} images): balanced used"
            return None, note
        return snapshot.estimate.pi, None

    def prior_unavailable_reason(self) -> str:
        if not self.model.has_balanced_logits:
            info = self.model.info
            return (
                f"the model was trained with {info.loss!r} and tau {info.tau:g}: it has no balanced logits, "
                "so there is no prior to estimate or apply"
            )
        return "prior estimation is off (start the server with --prior-window N > 0)"
