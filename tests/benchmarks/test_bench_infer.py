"""benchmarks/bench_infer.py end to end on a real trained run: every engine timed, scored, the host recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .scripts import BENCHMARKS, load_script

ENGINES = {"pytorch-eager", "pytorch-eager-bf16", "ort-fp32", "ort-int8", "ov-f32", "ov-int8"}


@pytest.mark.slow
def test_every_engine_timed_and_scored(run_dir: Path, tmp_path: Path):
    bench = load_script(BENCHMARKS / "bench_infer.py")
    out = tmp_path / "infer.json"
    args = [
        "--run",
        str(run_dir),
        "--json",
        str(out),
        "--batch-sizes",
        "1",
        "4",
        "--rounds",
        "1",
        "--iters",
        "2",
    ]
    assert bench.main([*args, "--threads", "1", "--eval-limit", "40", "--calibration-images", "16"]) == 0
    report = json.loads(out.read_text())
    assert report["host"]["cpu"] and isinstance(report["host"]["isa"], list)
    timed = {(r["backend"], r["batch_size"]) for r in report["rows"]}
    assert {(e, b) for e in ENGINES for b in (1, 4)} <= timed
    assert all(r["images_per_s"] > 0 for r in report["rows"])
    variants = report["accuracy"]["variants"]
    assert report["accuracy"]["samples"] == 40 and ENGINES - {"pytorch-eager", "pytorch-eager-bf16"} <= set(
        variants
    )
    # OpenVINO at f32 reads the same ONNX as ONNX Runtime: the same top-1 on every image.
    assert variants["ov-f32"]["top1_agreement_vs_ort_fp32"] == 1.0
    if "BF16" in report["versions"]["optimization_capabilities"]:
        assert ("ov-bf16", 4) in timed and variants["ov-bf16"]["top1_agreement_vs_ort_fp32"] >= 0.9
