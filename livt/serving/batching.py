"""Dynamic batching: concurrent requests share one model call, run on a worker thread.

A request first *reserves* a place (before it decodes its images), then submits its rows. The
worker takes the oldest item and keeps adding queued items until ``max_batch`` rows, but it only
waits (at most ``max_delay``) while some reserved request has not submitted yet. A lone request
therefore runs at once: concurrency-1 latency is the model's own latency, not plus the delay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], Sequence[np.ndarray]]


class QueueFullError(RuntimeError):
    """Too many requests are already waiting for the model."""


class InferenceTimeoutError(TimeoutError):
    """The request's deadline passed before its batch finished."""


class BatcherClosedError(RuntimeError):
    """The service is shutting down."""


class InferenceError(RuntimeError):
    """The model call for a request's batch failed (the backend raised); ``__cause__`` says why."""


@dataclass(frozen=True)
class BatchResult:
    """One submitted item's rows of every model output, and how it went."""

    outputs: tuple[np.ndarray, ...]
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass
class _Item:
    inputs: np.ndarray
    future: concurrent.futures.Future
    enqueued: float


class DynamicBatcher:
    """Merge submitted ``[n, ...]`` arrays into model calls of at most ``max_batch`` rows."""

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self._run = run
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._reserved = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="livt-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    @contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """Announce a request that will submit soon, so a forming batch waits for it."""
        reservation = Reservation(self)
        with self._cond:
            self._reserved += 1
        try:
            yield reservation
        finally:
            reservation.release()

    async def submit(self, inputs: np.ndarray, timeout_s: float) -> BatchResult:
        """Run ``inputs`` in some batch; raise ``QueueFullError`` / ``InferenceTimeoutError``."""
        with self.reserve() as reservation:
            return await reservation.submit(inputs, timeout_s)

    def _enqueue(self, inputs: np.ndarray, *, reserved: bool) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the service is shutting down")
            if len(self._queue) >= self._max_queue:
                raise QueueFullError(f"{len(self._queue)} requests are already waiting for the model")
            self._queue.append(_Item(inputs, future, time.perf_counter()))
            # Queued and no longer on its way, in one step: the worker never sees it twice.
            self._reserved -= int(reserved)
            self._cond.notify_all()
        return future

    def _release(self) -> None:
        with self._cond:
            self._reserved -= 1
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._collect()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _collect(self) -> list[_Item] | None:
        """Form one batch (called holding the lock); None when closed and drained."""
        while not self._queue:
            if self._closed:
                return None
            self._cond.wait()
        batch: list[_Item] = []
        rows = 0
        deadline = time.perf_counter() + self._max_delay_s
        while rows < self._max_batch:
            if self._queue:
                item = self._queue[0]
                if batch and rows + len(item.inputs) > self._max_batch:
                    break
                self._queue.popleft()
                # A timed-out request cancelled its future: drop it instead of computing it.
                if item.future.set_running_or_notify_cancel():
                    batch.append(item)
                    rows += len(item.inputs)
                continue
            remaining = deadline - time.perf_counter()
            if not batch or self._reserved == 0 or remaining <= 0:
                break
            self._cond.wait(remaining)
        return batch

    def _execute(self, batch: list[_Item]) -> None:
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([it.inputs for it in batch])
        start = time.perf_counter()
        try:
            outputs = tuple(self._run(inputs))
        except Exception as exc:  # a model fault fails this batch's requests, never the worker
            logger.exception("inference failed for a batch of %d", len(inputs))
            # One error type for every backend's faults, so the API can answer 502 for all of them.
            error = InferenceError(f"the model failed on a batch of {len(inputs)}: {exc}")
            error.__cause__ = exc
            for item in batch:
                item.future.set_exception(error)
            return
        elapsed = time.perf_counter() - start
        if self._on_batch is not None:
            self._on_batch(len(inputs), elapsed)
        row = 0
        for item in batch:
            n = len(item.inputs)
            rows = tuple(out[row : row + n] for out in outputs)
            item.future.set_result(BatchResult(rows, start - item.enqueued, elapsed, len(inputs)))
            row += n


class Reservation:
    """A request's place in line: released when it submits or gives up."""

    def __init__(self, batcher: DynamicBatcher):
        self._batcher = batcher
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._batcher._release()

    async def submit(self, inputs: np.ndarray, timeout_s: float) -> BatchResult:
        """Queue ``inputs`` (releasing the reservation) and wait at most ``timeout_s`` for the result."""
        future = self._batcher._enqueue(inputs, reserved=self._held)
        self._held = False
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError as exc:
            raise InferenceTimeoutError(f"inference did not finish within {timeout_s:g} s") from exc
