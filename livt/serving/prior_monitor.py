"""The deployment's label prior, estimated from the images the service sees (``--prior-window``).

Every prediction request hands its calibrated balanced logits to ``PriorMonitor.observe`` (a copy
into a ring buffer: microseconds), unless it says ``observe=false`` (images it sent before). A background
thread re-estimates the prior from the window every ``interval_s`` by EM (``livt.label_shift``) with
a bootstrap spread, and publishes an immutable snapshot that requests read without locking. Below
``min_images`` a request for the ``estimated`` prior gets the balanced one, and is told so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from livt.label_shift import PriorEstimate, estimate_prior
from livt.prior import softmax

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorSnapshot:
    """One published estimate and what it rests on."""

    estimate: PriorEstimate
    seen: int  # images observed since start (the window holds the last ``window`` of them)
    updated_at: float  # time.time() of the estimate
    seconds: float  # how long the estimate took


class PriorMonitor:
    """A bounded window of recent balanced logits and the prior EM estimates from it."""

    def __init__(
        self,
        num_classes: int,
        *,
        window: int,
        min_images: int,
        interval_s: float,
        bootstrap: int = 20,
        on_estimate: Callable[[PriorSnapshot], None] | None = None,
    ):
        if window < 1 or min_images < 1 or interval_s <= 0:
            raise ValueError("window, min_images and interval_s must be positive")
        self.num_classes = num_classes
        self.window = window
        self.min_images = min_images
        self._interval_s = interval_s
        self._bootstrap = bootstrap
        self._on_estimate = on_estimate
        self._logits = np.zeros((window, num_classes), dtype=np.float32)
        self._seen = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._snapshot: PriorSnapshot | None = None
        self._thread = threading.Thread(target=self._loop, name="livt-prior", daemon=True)

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def snapshot(self) -> PriorSnapshot | None:
        """The latest estimate (None before the first); never blocks."""
        return self._snapshot

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def observe(self, balanced_logits: np.ndarray) -> None:
        """Add a batch's calibrated balanced logits ``[n, K]`` to the window (any thread).

        Rows that are not finite are left out: they were answered 502 or 400, and one such row in
        the window would stop every estimate until it had rolled out.
        """
        balanced_logits = balanced_logits[np.isfinite(balanced_logits).all(axis=1)]
        n = len(balanced_logits)
        if n == 0:
            return
        rows = balanced_logits[-self.window :]
        with self._lock:
            # The kept rows are the last len(rows) of the n new images.
            start = (self._seen + n - len(rows)) % self.window
            first = min(len(rows), self.window - start)
            self._logits[start : start + first] = rows[:first]
            self._logits[: len(rows) - first] = rows[first:]
            self._seen += n

    def estimate_now(self) -> PriorSnapshot | None:
        """Estimate from the current window and publish it (None with an empty window)."""
        with self._lock:
            seen = self._seen
            window = self._logits[: min(seen, self.window)].copy()
        if seen == 0:
            return None
        start = time.perf_counter()
        previous = self._snapshot
        estimate = estimate_prior(
            softmax(window.astype(np.float64)),
            bootstrap=self._bootstrap,
            init=None if previous is None else previous.estimate.pi,
        )
        snapshot = PriorSnapshot(estimate, seen, time.time(), time.perf_counter() - start)
        self._snapshot = snapshot
        if self._on_estimate is not None:
            self._on_estimate(snapshot)
        return snapshot

    def _loop(self) -> None:
        estimated_at = 0
        while not self._stop.wait(self._interval_s):
            if self._seen == estimated_at:
                continue
            try:
                snapshot = self.estimate_now()
            except Exception:  # an estimate that fails must not end the monitor (or the server)
                logger.exception("prior estimation failed")
                continue
            estimated_at = snapshot.seen if snapshot is not None else 0
