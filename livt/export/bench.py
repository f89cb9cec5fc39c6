"""Inference latency and throughput of exported models (ONNX Runtime) and the PyTorch original.

Every backend gets the same number of intra-op threads (one per core by default) so the numbers
compare engines, not thread counts. Timings follow warm-up runs; latency is per batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import INPUT_NAME
from livt.export.metadata import read_onnx_metadata
from livt.inference.timing import time_interleaved

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)


def time_callable(
    fn: Callable[[], Any], *, batch_size: int, warmup: int = 3, iters: int = 20
) -> dict[str, float]:
    """p50/p99 latency (ms per batch) and throughput (images/s) of ``fn`` after ``warmup`` calls."""
    return time_interleaved({"fn": fn}, batch_size=batch_size, warmup=warmup, rounds=1, iters=iters)["fn"]


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


def benchmark_engines(
    artifact: Path,
    batch_sizes: Sequence[int] = (1, 32),
    *,
    threads: int | None = None,
    warmup: int = 3,
    rounds: int = 5,
    iters: int = 4,
) -> dict[str, Any]:
    """Every engine x precision that can serve the export ``artifact`` here, timed and scored.

    Speed is measured now, on random inputs, every engine in the same interleaved rounds
    (:func:`time_interleaved`; ``speedup`` is against the first, ONNX Runtime fp32); accuracy (balanced, Few, top-1 agreement with
    onnx-fp32) is the export's own test table (``export_report.json`` beside the artifact), where
    it has a row for the run. The record is what ``--backend auto`` reads (``livt.inference.selection``).
    """
    from livt.artifact import sha256_file
    from livt.host import host_fingerprint
    from livt.inference.backends import open_backend
    from livt.inference.selection import candidates, pick

    accuracy = _report_rows(artifact)
    shape = read_onnx_metadata(artifact)["input"]["shape"][1:]
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, *shape), dtype=np.float32) for b in batch_sizes}
    pool = candidates(artifact)
    backends = {
        c.name: open_backend(
            c.path,
            c.engine,
            c.precision,
            providers=["CPUExecutionProvider"] if c.engine == "ort" else None,
            threads=threads or 0,
        )
        for c in pool
    }
    timed = {
        b: time_interleaved(
            {n: (lambda x=x, m=m: m.run(x)) for n, m in backends.items()},
            batch_size=b,
            warmup=warmup,
            rounds=rounds,
            iters=iters,
        )
        for b, x in inputs.items()
    }
    rows = []
    for c in pool:
        scores = accuracy.get(_report_name(c.engine, c.precision, c.path), {})
        rows.append(
            {
                "name": c.name,
                "engine": c.engine,
                "precision": c.precision,
                "file": c.path.name,
                "throughput": {str(b): t[c.name]["throughput"] for b, t in timed.items()},
                "speedup": {str(b): t[c.name]["speedup_vs_first"] for b, t in timed.items()},
                "p50_ms": {str(b): t[c.name]["p50_ms"] for b, t in timed.items()},
                "balanced_acc": scores.get("balanced_acc"),
                "few": scores.get("few"),
                "agreement": scores.get("agreement_fp32"),
            }
        )
    batch = "32" if 32 in batch_sizes else str(max(batch_sizes))  # as livt.inference.selection reads it
    best, reason = pick([{**r, "images_per_s": r["throughput"][batch]} for r in rows])
    return {
        "host": host_fingerprint(),
        "artifact": artifact.name,
        "sha256": sha256_file(artifact),
        "threads": threads or os.cpu_count(),
        "timing": {"rounds": rounds, "iters": iters, "warmup": warmup, "interleaved": True},
        "rows": rows,
        "auto": {"name": best["name"], "reason": reason},
    }


def engine_table(record: dict[str, Any]) -> str:
    """The engine x precision table of a ``benchmark_engines`` record, and what ``auto`` serves."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    batches = list(record["rows"][0]["throughput"]) if record["rows"] else []
    head = "".join(f" {'img/s b' + b:>10}" for b in batches) + "".join(f" {'p50 b' + b:>9}" for b in batches)
    lines = [
        f"{record['host']['cpu']}, {record['threads']} threads",
        f"{'engine':<16}{head} {'x fp32':>7} {'bal.acc':>7} {'few':>7} {'agree':>7}",
    ]
    for r in record["rows"]:
        speeds = "".join(f" {r['throughput'][b]:>10.1f}" for b in batches)
        latency = "".join(f" {r['p50_ms'][b]:>9.2f}" for b in batches)
        # The speed-up at the largest batch, the median of per-round ratios (what auto compares).
        ratio = r.get("speedup", {}).get(batches[-1])
        lines.append(
            f"{r['name']:<16}{speeds}{latency} {'-' if ratio is None else f'{ratio:.2f}x':>7}"
            f" {pct(r['balanced_acc']):>7} {pct(r['few']):>7} {pct(r['agreement']):>7}"
        )
    lines.append(f"auto serves {record['auto']['name']}: {record['auto']['reason']}")
    return "\n".join(lines)


def _report_rows(artifact: Path) -> dict[str, dict[str, Any]]:
    """The accuracy rows of the export report beside ``artifact`` (empty without one)."""
    import json

    from livt.export.report import REPORT_FILE

    path = artifact.with_name(REPORT_FILE)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return (report.get("evaluation") or {}).get("variants", {})


def _report_name(engine: str, precision: str, path: Path) -> str:
    """The export report's name for an engine run (``onnx-*`` for ONNX Runtime, by its file)."""
    from livt.artifact import VARIANT_SUFFIXES

    if engine != "ort":
        return f"{engine}-{precision}"
    return next(
        (n for n, s in VARIANT_SUFFIXES.items() if n.startswith("onnx-int8") and path.name.endswith(s)),
        "onnx-fp32",
    )
