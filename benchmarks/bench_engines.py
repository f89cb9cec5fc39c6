"""Engines on this CPU: ONNX Runtime fp32/INT8 against OpenVINO f32/bf16/INT8, interleaved; prints JSON.

    python benchmarks/bench_engines.py --json runs/bench/engines.json

Two models, randomly initialised (speed does not depend on the weights): the ``make demo`` model
(``vit_fmnist``, 28 px grey) at batch 32 and ViT-S/16 at 224 px at batch 8. Each is exported as
``livt-export`` does (fp32 ONNX; ONNX Runtime's dynamic INT8; NNCF INT8 for OpenVINO, calibrated on
synthetic images here, the run's val images in an export), then every engine is timed in rounds
that interleave them, so a slow moment of the shared machine hits all; a figure is the throughput over all
rounds and a speed-up the median of the per-round ratios to ONNX Runtime fp32. Top-1 agreement is
with ONNX Runtime fp32 on a fixed synthetic set (no labels: balanced accuracy needs a trained run,
see ``livt-export benchmark``). ``auto`` is what ``--backend auto`` picks by its start-up
measurement, with and without bf16 (``--precision fp32``), against the fastest measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livt.artifact import write_checksum
from livt.export.fold import FoldedClassifier
from livt.export.onnx import export_onnx
from livt.export.openvino import quantize_int8_nncf
from livt.export.quantize import quantize_int8_dynamic
from livt.host import host_info
from livt.inference.backends import open_backend
from livt.inference.selection import candidates, measure
from livt.inference.timing import time_interleaved
from livt.models import create_classifier
from livt.models.registry import vit_config

MODELS = {"demo": ("vit_fmnist", 32), "vit_s16_224": ("vit_small_patch16_224", 8)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads, every engine")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=10, help="timed calls per engine and round")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    report: dict[str, Any] = {"host": host_info(), "threads": args.threads, "models": {}}
    for key in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            report["models"][key] = bench_model(*MODELS[key], Path(tmp), args)
        print(json.dumps({key: report["models"][key]["speedup_vs_ort_fp32"]}), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def bench_model(preset: str, batch: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = vit_config(preset)
    shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    model = create_classifier(cfg)
    folded = FoldedClassifier(model, np.zeros(cfg.num_classes, dtype=np.float32)).eval()
    meta = {"format_version": 2, "model_name": preset, "quantization": None}
    path = tmp / "model.onnx"
    export_onnx(folded, path, shape, meta)
    rng = np.random.default_rng(0)
    images = ((rng.random((64, *shape), dtype=np.float32) - 0.45) / 0.225).astype(np.float32)
    quantize_int8_dynamic(path, tmp / "model.int8.onnx", {**meta, "quantization": "int8-dynamic"})
    quantize_int8_nncf(path, tmp / "model.ov-int8.onnx", {**meta, "quantization": "int8-nncf"}, images[:32])
    for f in tmp.glob("*.onnx"):
        write_checksum(f)
    pool = candidates(path)
    backends = {c.name: open_backend(c.path, c.engine, c.precision, threads=args.threads) for c in pool}
    x = images[:batch]
    reference = backends["ort-fp32"].run(images)[0].argmax(1)
    agreement = {n: float(np.mean(b.run(images)[0].argmax(1) == reference)) for n, b in backends.items()}
    timed = time_interleaved(
        {n: (lambda m=b: m.run(x)) for n, b in backends.items()},  # ort-fp32 first: the ratios' base
        batch_size=batch,
        warmup=2,
        rounds=args.rounds,
        iters=args.iters,
    )
    speed = {n: t["throughput"] for n, t in timed.items()}
    speedup = {n: t["speedup_vs_first"] for n, t in timed.items()}
    fastest = max(speed, key=speed.get)
    auto = {}
    for label, precision in (("auto", None), ("auto_fp32_only", "fp32")):
        chosen, reason, _ = measure(candidates(path, precision), threads=args.threads)
        auto[label] = {
            "picked": chosen.name,
            "reason": reason,
            "vs_fastest": speed[chosen.name]
            / max(v for n, v in speed.items() if precision in (None, n.split("-")[1])),
            "vs_ort_fp32": speed[chosen.name] / speed["ort-fp32"],
        }
    return {
        "preset": preset,
        "batch": batch,
        "images_per_s": speed,
        "speedup_vs_ort_fp32": speedup,
        "agreement_vs_ort_fp32": agreement,
        "fastest": fastest,
        "auto": auto,
    }


if __name__ == "__main__":
    sys.exit(main())
