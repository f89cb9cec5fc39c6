"""benchmarks/bench_peers.py's own arithmetic: a process tree's CPU, and the medians and ratios it reports.
(The benchmark itself needs the peers' venvs from PyPI and runs by hand, not in the suite.)"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .scripts import BENCHMARKS, load_script

peers = load_script(BENCHMARKS / "bench_peers.py")

SPIN = "import subprocess, sys, time\nchild = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass\\ntime.sleep(30)'])\ntime.sleep(30)"


def test_tree_cpu_counts_the_children():
    # A parent that sleeps and a child that burns 0.6 s of CPU: the parent's tree holds the child's CPU.
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        deadline = time.monotonic() + 20
        while peers.tree_cpu_s(proc.pid) < 0.6:
            assert time.monotonic() < deadline, "the child's CPU never showed in its parent's tree"
            time.sleep(0.1)
        assert peers.tree_cpu_s(proc.pid) >= 0.6
    finally:
        proc.kill()
        proc.wait()
    assert peers.tree_cpu_s(proc.pid) == 0.0  # gone: nothing to count, no error


def _level(rps: float) -> dict:
    return {"requests_per_s": rps, "p50_ms": 1000 / rps, "p99_ms": 2000 / rps}


def test_summary_is_the_median_and_the_ratio_is_per_round():
    livt, litserve = [100, 300, 200], [100, 100, 50]
    rounds = [
        {"livt": {"1": _level(a)}, "litserve": {"1": _level(b)}} for a, b in zip(livt, litserve, strict=True)
    ]
    summary = peers.summarise(rounds, [1])["1"]
    assert summary["livt"]["requests_per_s"] == 200 and summary["litserve"]["requests_per_s"] == 100
    assert summary["litserve"]["p50_ms"] == 10.0
    # The median of the per-round ratios (1, 3, 4), not the ratio of the medians (2): the sides of a
    # round shared the machine's moment.
    assert summary["livt"]["vs_litserve"] == pytest.approx(3.0)
