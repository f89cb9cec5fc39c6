"""Dynamic batching: concurrent requests share one model call, run on a worker thread.

A request first *reserves* a place (before it decodes its images), then submits its rows. The
worker takes the oldest item and keeps adding queued items until ``max_batch`` rows, but it only
waits (at most ``max_delay``) while some reserved request has not submitted yet. A lone request
therefore runs at once: concurrency-1 latency is the model's own latency, not plus the delay.

Results go back to the event loop once per batch, not once per request: every wake-up of the loop
from the worker thread costs a system call and a turn of the loop, which at 32 requests per batch
is a good part of the serving cost of a small model.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    future: asyncio.Future  # of the submitting event loop; only that loop's thread settles it
    loop: asyncio.AbstractEventLoop
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
        on_batch: Callable[[int, float, tuple[np.ndarray, ...]], None] | None = None,
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

    def _enqueue(self, inputs: np.ndarray, *, reserved: bool) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the service is shutting down")
            if len(self._queue) >= self._max_queue:
                raise QueueFullError(f"{len(self._queue)} requests are already waiting for the model")
            self._queue.append(_Item(inputs, future, loop, time.perf_counter()))
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
                # A request that timed out or went away has a done future: drop it, do not compute it.
                if not item.future.done():
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
            _settle_all([(item, error) for item in batch])
            return
        elapsed = time.perf_counter() - start
        if self._on_batch is not None:
            # After the model call and on this thread: observers (the metrics) cost no
            # request any latency, but must be quick, since the next batch waits for them.
            try:
                self._on_batch(len(inputs), elapsed, outputs)
            except Exception:
                logger.exception("batch observer failed")
        settled: list[tuple[_Item, BatchResult | BaseException]] = []
        row = 0
        for item in batch:
            n = len(item.inputs)
            rows = tuple(out[row : row + n] for out in outputs)
            settled.append((item, BatchResult(rows, start - item.enqueued, elapsed, len(inputs))))
            row += n
        _settle_all(settled)


def _settle_all(outcomes: list[tuple[_Item, BatchResult | BaseException]]) -> None:
    """Hand each item its outcome in its own event loop, waking each loop once (worker thread)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, BatchResult | BaseException]]] = {}
    for item, outcome in outcomes:
        by_loop.setdefault(item.loop, []).append((item.future, outcome))
    for loop, pairs in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting for these results any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[asyncio.Future, BatchResult | BaseException]]) -> None:
    """Set the futures' results (event loop thread); one that timed out meanwhile is already done."""
    for future, outcome in pairs:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


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
        # A timer that fails the future, rather than asyncio.wait_for: no extra task and waiter per
        # request. The worker skips a future that is done, so a late request is never computed.
        timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future, timeout_s)
        try:
            return await future
        finally:
            timer.cancel()


def _expire(future: asyncio.Future, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(InferenceTimeoutError(f"inference did not finish within {timeout_s:g} s"))
