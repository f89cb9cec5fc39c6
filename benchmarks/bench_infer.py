"""Inference: PyTorch eager against ONNX Runtime fp32 and INT8 on the CPU, interleaved; prints JSON.

    python benchmarks/bench_infer.py --run runs/fmnist/finetune --json runs/bench/infer.json

Exports the run's model (balanced prior) as ``livt-export --int8`` does, with the accuracy of each
variant on the test split (what INT8 costs), then times every backend at every batch size in
rounds that interleave them, so a slow moment of the machine hits all; each figure is the median
over the rounds and each speed-up the median of the per-round ratios to eager. Every backend gets
the same intra-op threads (one per core by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livt.artifact import INPUT_NAME
from livt.export.bench import time_callable
from livt.export.fold import FoldedClassifier
from livt.export.onnx import make_session
from livt.export.options import ExportOptions
from livt.export.pipeline import run_export
from livt.export.source import load_source

LABELS = {"onnx-fp32": "ort-fp32", "onnx-int8-dynamic": "ort-int8"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="fine-tuned run folder")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads, every backend")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=30, help="timed calls per backend, batch size and round")
    p.add_argument("--eval-limit", type=int, help="score the variants on at most this many test images")
    args = p.parse_args(argv)

    source = load_source(args.run)
    torch.set_num_threads(args.threads)
    eager = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export = run_export(
            ExportOptions(
                run_dir=args.run, out=Path(tmp) / "model.onnx", int8=True, eval_limit=args.eval_limit
            )
        )
        sessions = {
            LABELS[n]: make_session(Path(path), threads=args.threads)
            for n, path in export.report["artifacts"].items()
        }
        rng = np.random.default_rng(0)
        inputs = {
            b: rng.standard_normal((b, *source.input_shape), dtype=np.float32) for b in args.batch_sizes
        }

        def calls(batch: int) -> dict[str, Any]:
            x = inputs[batch]
            xt = torch.from_numpy(x)

            def torch_call() -> None:
                with torch.inference_mode():
                    eager(xt)

            return {"pytorch-eager": torch_call} | {
                name: (lambda s=s: s.run(None, {INPUT_NAME: x})) for name, s in sessions.items()
            }

        timings: dict[tuple[str, int], list[dict]] = {}
        for _ in range(args.rounds):
            for batch in args.batch_sizes:
                for name, fn in calls(batch).items():
                    timings.setdefault((name, batch), []).append(
                        time_callable(fn, batch_size=batch, iters=args.iters)
                    )
    rows = []
    for (name, batch), runs in timings.items():
        eager_runs = timings[("pytorch-eager", batch)]
        rows.append({
            "backend": name,
            "batch_size": batch,
            "images_per_s": statistics.median(r["throughput"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "speedup_vs_eager": statistics.median(r["throughput"] / e["throughput"] for r, e in zip(runs, eager_runs, strict=True)),
        })  # fmt: skip
    accuracy = {LABELS[n]: m for n, m in export.report["evaluation"]["variants"].items()}
    report = {
        "run": str(args.run),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads},
        "rounds": args.rounds,
        "iters": args.iters,
        "rows": rows,
        "accuracy": {"split": export.report["evaluation"]["split"], "samples": export.report["evaluation"]["samples"],
                     "variants": accuracy},
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
