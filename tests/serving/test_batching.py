"""The dynamic batcher: merging, no waiting when alone, queue limit, deadline, model faults."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from livt.serving.batching import DynamicBatcher, InferenceError, InferenceTimeoutError, QueueFullError


class Recorder:
    """A real (if trivial) model: doubles its input and records each batch size."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.sizes: list[int] = []
        self.delay_s, self.fail = delay_s, fail

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray]:
        self.sizes.append(len(batch))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("engine fault")
        return (batch * 2,)


def _batcher(model: Recorder, **kwargs) -> DynamicBatcher:
    options = {"max_batch": 8, "max_delay_s": 0.05, "max_queue": 64, **kwargs}
    batcher = DynamicBatcher(model, **options)
    batcher.start()
    return batcher


def test_lone_request_does_not_wait_out_the_delay():
    batcher = _batcher(Recorder(), max_delay_s=2.0)
    try:
        start = time.perf_counter()
        result = asyncio.run(batcher.submit(np.ones((1, 3)), timeout_s=5))
        assert time.perf_counter() - start < 0.5
        np.testing.assert_array_equal(result.outputs[0], np.full((1, 3), 2.0))
        assert result.batch_size == 1
    finally:
        batcher.close()


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    model = Recorder(delay_s=0.01)
    batcher = _batcher(model)

    async def one(i: int) -> np.ndarray:
        with batcher.reserve() as reservation:
            await asyncio.sleep(0.001 * (i % 3))  # "decoding"
            result = await reservation.submit(np.full((1, 2), float(i)), timeout_s=5)
        return result.outputs[0]

    async def many() -> list[np.ndarray]:
        return await asyncio.gather(*(one(i) for i in range(40)))

    try:
        outputs = asyncio.run(many())
    finally:
        batcher.close()
    for i, out in enumerate(outputs):
        np.testing.assert_array_equal(out, np.full((1, 2), 2.0 * i))
    assert max(model.sizes) > 1
    assert max(model.sizes) <= 8
    assert sum(model.sizes) == 40


def test_queue_limit_raises_queue_full():
    gate = threading.Event()

    def blocked(batch: np.ndarray) -> tuple[np.ndarray]:
        gate.wait(5)
        return (batch,)

    batcher = DynamicBatcher(blocked, max_batch=1, max_delay_s=0, max_queue=2)
    batcher.start()

    async def scenario() -> list:
        tasks = [asyncio.ensure_future(batcher.submit(np.ones((1, 1)), timeout_s=5)) for _ in range(5)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors and all(isinstance(e, QueueFullError) for e in errors)
    assert len(results) - len(errors) >= 2


def test_deadline_raises_timeout_and_worker_survives():
    batcher = _batcher(Recorder(delay_s=0.3), max_batch=1)
    try:
        with pytest.raises(InferenceTimeoutError, match="within"):
            asyncio.run(batcher.submit(np.ones((1, 1)), timeout_s=0.05))
        result = asyncio.run(batcher.submit(np.ones((1, 1)), timeout_s=5))
        assert result.outputs[0][0, 0] == 2.0
    finally:
        batcher.close()


def test_a_request_that_timed_out_in_the_queue_is_never_computed():
    gate = threading.Event()
    sizes: list[int] = []

    def blocked(batch: np.ndarray) -> tuple[np.ndarray]:
        sizes.append(len(batch))
        gate.wait(5)
        return (batch,)

    batcher = DynamicBatcher(blocked, max_batch=1, max_delay_s=0, max_queue=8)
    batcher.start()

    async def scenario() -> None:
        running = asyncio.ensure_future(batcher.submit(np.ones((1, 1)), timeout_s=5))
        await asyncio.sleep(0.1)  # the worker is inside the model call now
        with pytest.raises(InferenceTimeoutError):
            await batcher.submit(np.ones((2, 1)), timeout_s=0.05)  # waits in the queue, times out
        gate.set()
        await running
        await batcher.submit(np.ones((3, 1)), timeout_s=5)

    try:
        asyncio.run(scenario())
    finally:
        batcher.close()
    assert sizes == [1, 3]


def test_model_fault_fails_the_batch_not_the_worker():
    model = Recorder(fail=True)
    batcher = _batcher(model)
    try:
        with pytest.raises(InferenceError, match=r"failed on a batch of 1: .*engine fault") as info:
            asyncio.run(batcher.submit(np.ones((1, 1)), timeout_s=5))
        assert isinstance(info.value.__cause__, RuntimeError)
        model.fail = False
        assert asyncio.run(batcher.submit(np.ones((1, 1)), timeout_s=5)).outputs[0][0, 0] == 2.0
    finally:
        batcher.close()


def test_on_batch_hook_sees_every_batch():
    seen = []
    batcher = DynamicBatcher(
        Recorder(),
        max_batch=4,
        max_delay_s=0,
        max_queue=8,
        on_batch=lambda n, s, out: seen.append((n, len(out[0]))),
    )
    batcher.start()
    try:
        asyncio.run(batcher.submit(np.ones((3, 1)), timeout_s=5))
    finally:
        batcher.close()
    assert seen == [(3, 3)]
