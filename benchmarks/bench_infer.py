"""Inference benchmark: PyTorch eager vs ONNX Runtime fp32 / optimized / INT8 on the CPU.

Exports the run's model (balanced prior) in every variant, then times each at batch 1, 8, 32 and 128::

    python benchmarks/bench_infer.py --run runs/fmnist-ft --out bench/infer.json

Prints a table and writes the rows as JSON (with the thread count and machine) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from livt.export.bench import DEFAULT_BATCH_SIZES, benchmark_onnx, benchmark_torch, format_table
from livt.export.fold import FoldedClassifier
from livt.export.options import ExportOptions
from livt.export.pipeline import run_export
from livt.export.source import load_source

VARIANT_LABELS = {"onnx-fp32": "ort-fp32", "onnx-optimized": "ort-optimized", "onnx-int8-dynamic": "ort-int8"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="fine-tuned run folder")
    parser.add_argument("--out", type=Path, help="JSON file for the rows")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads, every backend")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()

    source = load_source(args.run)
    eager = FoldedClassifier(source.model, [0.0] * source.num_classes)
    timing = {"threads": args.threads, "warmup": args.warmup, "iters": args.iters}
    rows = benchmark_torch(eager, source.input_shape, args.batch_sizes, **timing)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_export(
            ExportOptions(
                run_dir=args.run, out=Path(tmp) / "model.onnx", optimize=True, int8=True, eval_split=None
            )
        )
        for name, path in result.report["artifacts"].items():
            rows += benchmark_onnx(Path(path), args.batch_sizes, name=VARIANT_LABELS[name], **timing)
    print(format_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), **timing}
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
