"""Inference engines on the CPU, interleaved on the same exported ONNX; prints JSON with the host's CPU.

    python benchmarks/bench_infer.py --run runs/fmnist/finetune --json runs/bench/infer.json

Exports the run's model (balanced prior) as ``livt-export --int8`` does, then times, at every batch
size, PyTorch eager (fp32 and bf16 autocast), ONNX Runtime fp32 and dynamic INT8, and OpenVINO
reading the same fp32 ONNX at f32, at bf16 (where the CPU has it) and as an NNCF post-training INT8
model calibrated on the run's val images. The rounds interleave them, so a slow moment of the
machine hits all; each figure is the median over the rounds and each speed-up the median of the
per-round ratios to eager fp32. Every engine gets the same intra-op threads (one per core by
default). Accuracy: each exported variant on the same test images, with its top-1 agreement with
ONNX Runtime fp32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness.report import write_json

from livt.artifact import INPUT_NAME, OUTPUT_NAMES
from livt.export.bench import time_callable
from livt.export.fold import FoldedClassifier
from livt.export.onnx import make_session
from livt.export.options import ExportOptions
from livt.export.pipeline import run_export
from livt.export.source import ExportSource, iter_batches, load_source, load_subset, open_split
from livt.host import host_info
from livt.metrics import SCALAR_METRICS, compute_metrics
from livt.training.checkpoint import recorded_thresholds

LABELS = {"onnx-fp32": "ort-fp32", "onnx-int8-dynamic": "ort-int8"}
Engine = Callable[[np.ndarray], np.ndarray]  # a batch -> its logits


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="fine-tuned run folder")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads, every engine")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=30, help="timed calls per engine, batch size and round")
    p.add_argument("--eval-limit", type=int, help="score the variants on at most this many test images")
    p.add_argument("--calibration-images", type=int, default=300, help="val images NNCF calibrates INT8 on")
    p.add_argument("--no-openvino-int8", action="store_true", help="skip the NNCF INT8 model")
    return p.parse_args(argv)


def openvino_engines(
    onnx_path: Path, threads: int, calibration: np.ndarray | None
) -> tuple[dict[str, Engine], dict[str, Any]]:
    """OpenVINO's CPU plugin on the fp32 ONNX: f32, bf16 where the CPU reports BF16, and NNCF INT8
    (``calibration``: its val images, or None for no INT8). Also what OpenVINO says of the CPU."""
    import openvino as ov

    core = ov.Core()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    # The hint, not the ONNX, sets the compute precision: bf16 runs the same f32 graph on bf16 kernels.
    models = {"ov-f32": (core.read_model(onnx_path), "f32")}
    if "BF16" in capabilities:
        models["ov-bf16"] = (core.read_model(onnx_path), "bf16")
    if calibration is not None:
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        # SmoothQuant off: on a small ViT it took top-1 agreement with f32 from 95 % to 8 % (200 test images).
        quantized = nncf.quantize(
            core.read_model(onnx_path),
            nncf.Dataset([{INPUT_NAME: x[None]} for x in calibration]),
            subset_size=len(calibration),
            model_type=nncf.ModelType.TRANSFORMER,
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
            ),
        )
        models["ov-int8"] = (quantized, "f32")  # INT8 where quantised, f32 (not bf16) elsewhere
    engines = {}
    for name, (model, precision) in models.items():
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": precision,
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        request = compiled.create_infer_request()
        logits = compiled.output(0)
        engines[name] = lambda x, r=request, out=logits: r.infer({INPUT_NAME: x})[out]
    return engines, {"openvino": ov.__version__, "optimization_capabilities": capabilities}


def torch_engines(source: ExportSource) -> dict[str, Engine]:
    """The fine-tuned model in eager mode, fp32 and under bf16 autocast (as training's ``--precision bf16``)."""
    eager = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32)).eval()

    def fp32(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return eager(torch.from_numpy(x))[0].numpy()

    def bf16(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return eager(torch.from_numpy(x))[0].float().numpy()

    return {"pytorch-eager": fp32, "pytorch-eager-bf16": bf16}


def score(engines: dict[str, Engine], source: ExportSource, eval_limit: int | None) -> dict[str, Any]:
    """Each engine's metrics on the same test images, and its top-1 agreement with ``ort-fp32``."""
    dataset = open_split(source, "test")
    many, few = recorded_thresholds(source.meta)
    logits: dict[str, list[np.ndarray]] = {name: [] for name in engines}
    targets = []
    for x, y in iter_batches(dataset, limit=eval_limit):
        for name, engine in engines.items():
            logits[name].append(engine(x))
        targets.append(y)
    y = np.concatenate(targets)
    z = {name: np.concatenate(parts) for name, parts in logits.items()}
    reference = z["ort-fp32"].argmax(axis=1)
    variants = {}
    for name, zn in z.items():
        metrics = compute_metrics(zn, y, source.meta["class_counts"], many=many, few=few)
        variants[name] = {k: (None if metrics[k] is None else float(metrics[k])) for k in SCALAR_METRICS}
        variants[name]["top1_agreement_vs_ort_fp32"] = float((zn.argmax(axis=1) == reference).mean())
    return {"split": "test", "samples": len(y), "prior": "balanced (folded)", "variants": variants}


def time_rounds(
    engines: dict[str, Engine], inputs: dict[int, np.ndarray], rounds: int, iters: int
) -> list[dict[str, Any]]:
    """Median images/s and latency of every engine at every batch size over interleaved rounds."""
    timings: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for batch, x in inputs.items():
            for name, engine in engines.items():
                timings.setdefault((name, batch), []).append(
                    time_callable(lambda e=engine, x=x: e(x), batch_size=batch, iters=iters)
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
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = load_source(args.run)
    torch.set_num_threads(args.threads)
    calibration = None
    if not args.no_openvino_int8:
        calibration = load_subset(open_split(source, "val"), args.calibration_images)[0]
    with tempfile.TemporaryDirectory() as tmp:
        opts = ExportOptions(run_dir=args.run, out=Path(tmp) / "model.onnx", int8=True, eval_split=None)
        artifacts = run_export(opts).report["artifacts"]
        exported: dict[str, Engine] = {}
        for variant, path in artifacts.items():
            session = make_session(Path(path), threads=args.threads)
            exported[LABELS[variant]] = lambda x, s=session: s.run([OUTPUT_NAMES[0]], {INPUT_NAME: x})[0]
        ov_engines, openvino = openvino_engines(Path(artifacts["onnx-fp32"]), args.threads, calibration)
        exported |= ov_engines
        accuracy = score(exported, source, args.eval_limit)
        rng = np.random.default_rng(0)
        inputs = {
            b: rng.standard_normal((b, *source.input_shape), dtype=np.float32) for b in args.batch_sizes
        }
        rows = time_rounds(torch_engines(source) | exported, inputs, args.rounds, args.iters)
    report = {
        "run": str(args.run),
        "host": host_info(),
        "threads": args.threads,
        "versions": {"torch": torch.__version__, **openvino},
        "rounds": args.rounds,
        "iters": args.iters,
        "rows": rows,
        "accuracy": accuracy,
    }
    print(write_json(report, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
