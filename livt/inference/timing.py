"""Timing several engines against each other on a machine whose speed drifts: interleaved rounds.

The one timing routine behind ``livt-export benchmark``, ``--backend auto``'s start-up measurement
and the benchmark scripts, so that every ratio livt reports or acts on comes from one rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def rotated(names: Sequence[str], round_: int) -> list[str]:
    """``names`` in round ``round_``'s order: each round starts one further along, so none always goes first."""
    k = round_ % len(names)
    return [*names[k:], *names[:k]]


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, batch_size: int, warmup: int = 3, rounds: int = 5, iters: int = 4
) -> dict[str, dict[str, float]]:
    """:func:`time_callable` of several functions in ``rounds`` rounds of ``iters`` calls each.

    Every round runs every function, in an order that rotates from round to round, so a slow moment
    of a shared machine (its speed drifts by tens of percent) slows them all rather than one, and the
    ratios between them hold. ``speedup_vs_first`` is the median over rounds of the per-round
    throughput ratio to the first function.
    """
    if iters < 1 or rounds < 1:
        raise ValueError(f"rounds and iters must be >= 1, got {rounds} and {iters}")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {n: np.empty((rounds, iters)) for n in names}
    for r in range(rounds):
        for name in rotated(names, r):
            for i in range(iters):
                start = time.perf_counter()
                fns[name]()
                times[name][r, i] = time.perf_counter() - start
    per_round = {n: batch_size * iters / t.sum(axis=1) for n, t in times.items()}
    return {
        n: {
            "batch_size": batch_size,
            "p50_ms": float(np.percentile(t, 50) * 1e3),
            "p99_ms": float(np.percentile(t, 99) * 1e3),
            "throughput": float(batch_size * t.size / t.sum()),
            "speedup_vs_first": float(np.median(per_round[n] / per_round[names[0]])),
        }
        for n, t in times.items()
    }
