"""Prometheus metrics, one registry per app (several apps in one process never collide)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "livt_http_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "livt_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "livt_http_requests_in_flight", "HTTP requests being handled", registry=self.registry
        )
        self.queue_time = Histogram(
            "livt_queue_seconds",
            "time a request waited for its batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_time = Histogram(
            "livt_inference_seconds", "model time per batch", buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "livt_batch_size", "images per model call", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.prior_images = Gauge(
            "livt_prior_estimate_images", "images the estimated prior rests on", registry=self.registry
        )
        self.prior_distance = Gauge(
            "livt_prior_distance_train",
            "total variation distance of the estimated prior to the training prior",
            registry=self.registry,
        )
        self.engine = Gauge(
            "livt_engine_info",
            "the engine and precision serving (1), the file they run and why they were chosen",
            ["engine", "precision", "file", "reason"],
            registry=self.registry,
        )
        self._per_class: tuple[list, list, list] | None = None

    def set_engine(self, description: dict[str, str]) -> None:
        """Publish what serves (``EngineChoice.describe()``)."""
        self.engine.labels(**description).set(1)

    def bind_classes(self, classes: Sequence[str]) -> None:
        """Per-class series for the estimated prior and the predicted classes (one child each)."""
        estimate = Gauge(
            "livt_prior_estimate", "estimated prior of the recent traffic", ["class"], registry=self.registry
        )
        spread = Gauge(
            "livt_prior_estimate_std",
            "bootstrap standard deviation of the estimated prior",
            ["class"],
            registry=self.registry,
        )
        predicted = Counter(
            "livt_predicted_images",
            "images by their most probable class under the balanced prior",
            ["class"],
            registry=self.registry,
        )
        self._per_class = tuple(
            [metric.labels(c) for c in classes] for metric in (estimate, spread, predicted)
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_time.observe(seconds)

    def observe_predictions(self, top_classes: np.ndarray) -> None:
        """Count a batch's top classes (a no-op without per-class series)."""
        if self._per_class is None:
            return
        counters = self._per_class[2]
        counts = np.bincount(top_classes, minlength=len(counters))
        for c in np.flatnonzero(counts):
            counters[c].inc(int(counts[c]))

    def observe_prior(
        self, pi: np.ndarray, std: np.ndarray | None, images: int, distance_train: float
    ) -> None:
        self.prior_images.set(images)
        self.prior_distance.set(distance_train)
        if self._per_class is not None:
            for child, value in zip(self._per_class[0], pi, strict=True):
                child.set(float(value))
            # NaN, Prometheus' "no value", where no spread can be measured.
            spread = np.full(len(pi), np.nan) if std is None else std
            for child, value in zip(self._per_class[1], spread, strict=True):
                child.set(float(value))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count every HTTP request by its route *template* (``/v2/models/{name}``), never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
