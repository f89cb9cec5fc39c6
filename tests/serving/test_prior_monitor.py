"""The traffic's prior window: a ring buffer of balanced logits and EM estimates from it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from livt.label_shift import total_variation
from livt.serving.prior_monitor import PriorMonitor


def _logits(rng: np.random.Generator, pi: np.ndarray, n: int, k: int) -> np.ndarray:
    """Calibrated balanced logits for labels drawn from ``pi``: the exact log posterior (up to a
    constant) of a Gaussian mixture with equal class priors."""
    means = np.eye(k) * 3.0
    x = means[rng.choice(k, size=n, p=pi)] + rng.normal(size=(n, k))
    return (-0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)).astype(np.float32)


def test_window_keeps_the_most_recent_rows_in_order_of_arrival():
    monitor = PriorMonitor(3, window=5, min_images=1, interval_s=60)
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    monitor.observe(rows[:3])
    monitor.observe(rows[3:4])
    monitor.observe(rows[4:8])
    assert monitor.seen == 8
    kept = {tuple(r) for r in monitor._logits}
    assert kept == {tuple(r) for r in rows[3:]}


def test_a_batch_larger_than_the_window_keeps_its_last_rows():
    monitor = PriorMonitor(2, window=3, min_images=1, interval_s=60)
    monitor.observe(np.zeros((2, 2), dtype=np.float32))
    rows = np.arange(10, dtype=np.float32).reshape(5, 2)
    monitor.observe(rows)
    assert {tuple(r) for r in monitor._logits} == {tuple(r) for r in rows[2:]}


def test_rows_that_are_not_finite_stay_out_of_the_window():
    rng = np.random.default_rng(1)
    monitor = PriorMonitor(3, window=100, min_images=1, interval_s=60, bootstrap=0)
    rows = _logits(rng, np.full(3, 1 / 3), 20, 3)
    rows[[2, 7]] = np.nan  # a model fault's batch: those requests got a 502
    rows[11, 1] = np.inf
    monitor.observe(rows)
    assert monitor.seen == 17
    assert monitor.estimate_now().estimate.images == 17  # and not "posteriors must be finite"


def test_estimate_now_recovers_the_stream_prior():
    rng = np.random.default_rng(0)
    k, pi = 4, np.array([0.7, 0.1, 0.1, 0.1])
    monitor = PriorMonitor(k, window=3000, min_images=10, interval_s=60, bootstrap=5)
    assert monitor.estimate_now() is None and monitor.snapshot is None
    monitor.observe(_logits(rng, pi, 3000, k))
    snapshot = monitor.estimate_now()
    assert snapshot is monitor.snapshot and snapshot.seen == 3000
    assert snapshot.estimate.images == 3000 and total_variation(snapshot.estimate.pi, pi) < 0.03
    assert (snapshot.estimate.std > 0).all()


def test_the_background_thread_re_estimates_and_publishes():
    rng = np.random.default_rng(1)
    published = []
    monitor = PriorMonitor(
        3, window=500, min_images=10, interval_s=0.02, bootstrap=0, on_estimate=published.append
    )
    monitor.start()
    try:
        monitor.observe(_logits(rng, np.array([0.2, 0.3, 0.5]), 200, 3))
        deadline = time.monotonic() + 10
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
        assert published and published[-1].seen == 200
        count = len(published)
        time.sleep(0.1)
        assert len(published) == count  # nothing new seen: no new estimate
    finally:
        monitor.close()


@pytest.mark.parametrize("kw", [{"window": 0}, {"min_images": 0}, {"interval_s": 0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        PriorMonitor(3, **{"window": 10, "min_images": 1, "interval_s": 1.0, **kw})


def test_the_estimated_request_prior_is_log_pi_of_the_snapshot(artifact):
    """Through ServingState: before min_images balanced with a note, then the snapshot's log pi."""
    from livt.serving.settings import ServeSettings
    from livt.serving.state import ServingState, load_model

    settings = ServeSettings(model=artifact)
    model = load_model(settings)
    monitor = PriorMonitor(4, window=100, min_images=50, interval_s=60)
    state = ServingState(
        settings, model, batcher=None, metrics=None, requests=None, decoder=None, prior_monitor=monitor
    )
    cold = state.resolve_prior("estimated")
    assert cold.mode == "balanced" and not cold.offset.any() and "0 of 50 images" in cold.note
    monitor.observe(_logits(np.random.default_rng(2), np.array([0.4, 0.3, 0.2, 0.1]), 80, 4))
    snapshot = monitor.estimate_now()
    warm = state.resolve_prior("estimated")
    assert warm.mode == "estimated" and warm.note is None
    np.testing.assert_allclose(warm.offset, np.log(snapshot.estimate.pi), rtol=1e-5)
    assert state.resolve_prior(None).mode == "train"  # the default prior: the artifact's own
