"""Prometheus metrics: one registry per app, labelled by route template."""

from __future__ import annotations

import httpx
import numpy as np

from livt.serving.prometheus import ServingMetrics

from .conftest import metric_value


def test_registries_are_per_app():
    a, b = ServingMetrics(), ServingMetrics()
    a.observe_batch(4, 0.01)
    assert b"livt_batch_size_sum 4.0" in a.render()
    assert b"livt_batch_size_sum 0.0" in b.render()


def test_prior_spread_is_nan_where_none_was_measured():
    metrics = ServingMetrics()
    metrics.bind_classes(["a", "b"])
    metrics.observe_prior(np.array([0.7, 0.3]), None, 1, 0.2)
    assert b'livt_prior_estimate_std{class="a"} NaN' in metrics.render()
    metrics.observe_prior(np.array([0.7, 0.3]), np.array([0.05, 0.05]), 2, 0.2)
    assert b'livt_prior_estimate_std{class="a"} 0.05' in metrics.render()


def test_metrics_use_route_templates(server: str):
    httpx.get(f"{server}/v2/models/someone-elses/ready")
    httpx.get(f"{server}/no/such/path")
    assert (
        metric_value(server, "livt_http_requests_total", route="/v2/models/{name}/ready", status="404") >= 1
    )
    assert metric_value(server, "livt_http_requests_total", route="unmatched", status="404") >= 1
    assert metric_value(server, "livt_http_requests_in_flight") == 1  # this scrape itself
