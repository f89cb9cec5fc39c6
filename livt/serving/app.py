"""The FastAPI application: ``create_app(settings)`` and the lifespan that owns the model."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from livt import __version__
from livt.inference.model import ServedModel
from livt.label_shift import total_variation
from livt.serving.batching import DynamicBatcher
from livt.serving.errors import install_error_handlers
from livt.serving.inputs import RequestLimits, RequestModels
from livt.serving.limits import BodySizeLimitMiddleware
from livt.serving.openapi import install_openapi
from livt.serving.prior_monitor import PriorMonitor, PriorSnapshot
from livt.serving.prometheus import MetricsMiddleware, ServingMetrics
from livt.serving.raw_predict import RawImagePredictMiddleware
from livt.serving.routers import metrics, predict, prior, ui, v2
from livt.serving.security import BrowserGuardMiddleware
from livt.serving.settings import ServeSettings
from livt.serving.state import ServingState, load_model

logger = logging.getLogger(__name__)

DECODE_NICE = 10  # added to the decoding threads' nice value (19 at most): they get what the rest leaves


def create_app(settings: ServeSettings, *, model: ServedModel | None = None) -> FastAPI:
    """Build the app. The model loads in the lifespan (once), unless an already loaded ``model`` is given.

    A model that cannot be loaded raises ``ArtifactError`` at start-up, so the server never
    answers with a broken model.
    """
    app_metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = model if model is not None else load_model(settings)
        state = start_serving(settings, served, app_metrics)
        app.state.serving = state
        logger.info(
            "serving %s (%s, version %s) as %r",
            served.info.path,
            served.backend.platform,
            served.info.version,
            settings.model_name,
        )
        try:
            yield
        finally:
            app.state.serving = None
            stop_serving(state)

    app = FastAPI(
        title="livt",
        version=__version__,
        description="Long-tailed image classification with a request-time label prior (LiVT).",
        lifespan=lifespan,
        docs_url=None,  # served below from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.serving = None
    install_error_handlers(app)
    app.include_router(ui.router)
    app.include_router(predict.router)
    app.include_router(prior.router)
    app.include_router(v2.public)
    app.include_router(v2.router)
    app.include_router(metrics.router)
    app.mount("/static", StaticFiles(directory=Path(str(ui.STATIC_DIR))), name="static")
    _serve_docs(app)
    install_openapi(app)
    # The last added middleware is the outermost: metrics see the body-limit's 413s and the Host
    # check's 400s too, and every response, those included, gets the browser-facing headers.
    predict_route = next(
        r for r in predict.router.routes if isinstance(r, APIRoute) and r.endpoint is predict.predict
    )
    app.add_middleware(RawImagePredictMiddleware, route=predict_route)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        BrowserGuardMiddleware,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
    )
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)
    return app


def start_serving(settings: ServeSettings, served: ServedModel, app_metrics: ServingMetrics) -> ServingState:
    """The batcher, prior monitor, request models and decoding threads around a loaded model, started."""
    app_metrics.set_engine(served.choice.describe())
    if served.info.num_classes <= settings.metrics_max_classes:
        app_metrics.bind_classes(served.info.classes)
    monitor = _prior_monitor(settings, served, app_metrics)

    def on_batch(size: int, seconds: float, outputs: tuple[np.ndarray, ...]) -> None:
        app_metrics.observe_batch(size, seconds)
        app_metrics.observe_predictions(served.balanced_logits(outputs[0]).argmax(axis=1))

    batcher = DynamicBatcher(
        served.run,
        max_batch=settings.max_batch,
        max_delay_s=settings.max_delay_ms / 1000,
        max_queue=settings.max_queue,
        on_batch=on_batch,
    )
    batcher.start()
    if monitor is not None:
        monitor.start()
    limits = RequestLimits(
        max_images=settings.max_images,
        max_top_k=settings.max_top_k,
        num_classes=served.info.num_classes,
        input_shape=served.info.preprocess.input_shape,
    )
    decoder = ThreadPoolExecutor(
        settings.decode_threads, thread_name_prefix="livt-decode", initializer=_background_priority
    )
    return ServingState(settings, served, batcher, app_metrics, RequestModels(limits), decoder, monitor)


def stop_serving(state: ServingState) -> None:
    """Finish what is queued, then stop the threads ``start_serving`` started."""
    state.batcher.close()
    state.decoder.shutdown(cancel_futures=True)
    if state.prior_monitor is not None:
        state.prior_monitor.close()


def _prior_monitor(
    settings: ServeSettings, served: ServedModel, metrics: ServingMetrics
) -> PriorMonitor | None:
    """The traffic's prior estimator, where the model has balanced logits and the window is on."""
    if settings.prior_window == 0 or not served.has_balanced_logits:
        return None
    train_pi = np.asarray(served.info.class_counts, dtype=np.float64) / sum(served.info.class_counts)

    def publish(snapshot: PriorSnapshot) -> None:
        est = snapshot.estimate
        metrics.observe_prior(est.pi, est.std, est.images, total_variation(est.pi, train_pi))

    return PriorMonitor(
        served.info.num_classes,
        window=settings.prior_window,
        min_images=settings.prior_min_images,
        interval_s=settings.prior_interval_s,
        bootstrap=settings.prior_bootstrap,
        on_estimate=publish,
    )


def _background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux's nice is per thread): large decodes wait.

    The event loop and the model serve every request; a large decode serves one. Under an
    adversarial load of costly images, letting them take cores away on equal terms doubled the
    good requests' p99 latency. Pillow releases the GIL while it decodes, so the loop is not left
    waiting on a thread that is itself waiting for a core.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + DECODE_NICE))


def _serve_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the assets of the fastapi-offline package.

    FastAPI's own pages load their scripts from a CDN: no docs on a network without one, and a
    third party's code running on this origin.
    """
    import fastapi_offline

    assets = "/docs-assets"
    app.mount(
        assets, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            redoc_js_url=f"{root}{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{assets}/favicon.png",
            with_google_fonts=False,
        )
