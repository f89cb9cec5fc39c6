"""Inference latency and throughput of exported models (ONNX Runtime) and the PyTorch original.

Every backend gets the same number of intra-op threads (one per core by default) so the numbers
compare engines, not thread counts. Timings follow warm-up runs; latency is per batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import INPUT_NAME
from livt.export.metadata import read_onnx_metadata

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)


def time_callable(
    fn: Callable[[], Any], *, batch_size: int, warmup: int = 3, iters: int = 20
) -> dict[str, float]:
    """p50/p99 latency (ms per batch) and throughput (images/s) of ``fn`` after ``warmup`` calls."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    times = np.empty(iters)
    for i in range(iters):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "throughput": float(batch_size * iters / times.sum()),
    }


def benchmark_onnx(
    path: Path,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    name: str | None = None,
    threads: int | None = None,
    warmup: int = 3,
    iters: int = 20,
) -> list[dict[str, Any]]:
    """One row per batch size for the ONNX model at ``path`` on the CPU."""
    from livt.export.onnx import make_session

    session = make_session(path, threads=threads)
    shape = read_onnx_metadata(path)["input"]["shape"][1:]
    rng = np.random.default_rng(0)
    rows = []
    for b in batch_sizes:
        x = rng.standard_normal((b, *shape), dtype=np.float32)
        row = time_callable(
            lambda x=x: session.run(None, {INPUT_NAME: x}), batch_size=b, warmup=warmup, iters=iters
        )
        rows.append({"backend": name or Path(path).name, **row})
    return rows


def benchmark_torch(
    module: Any,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    threads: int | None = None,
    warmup: int = 3,
    iters: int = 20,
) -> list[dict[str, Any]]:
    """One row per batch size for a PyTorch module in eager mode on the CPU (sets torch's thread count)."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    module = module.eval()
    rows = []
    for b in batch_sizes:
        x = torch.randn(b, *input_shape)

        def step(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                module(x)

        rows.append(
            {"backend": "pytorch-eager", **time_callable(step, batch_size=b, warmup=warmup, iters=iters)}
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of benchmark rows."""
    lines = [f"{'backend':<24} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'img/s':>10}"]
    lines += [
        f"{r['backend']:<24} {r['batch_size']:>5} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['throughput']:>10.1f}"
        for r in rows
    ]
    return "\n".join(lines)
