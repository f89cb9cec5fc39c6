"""benchmarks/bench_summary.py: the table's rows and verdicts from the component benchmarks' JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from .scripts import BENCHMARKS, load_script

summary = load_script(BENCHMARKS / "bench_summary.py")


def _results() -> dict:
    def infer(backend: str, batch: int, rate: float, speedup: float) -> dict:
        return {"backend": backend, "batch_size": batch, "images_per_s": rate, "p50_ms": 1.0,
                "p99_ms": 2.0, "speedup_vs_eager": speedup}  # fmt: skip

    serve = [
        {"concurrency": c, "requests_per_s": r, "p50_ms": p, "p99_ms": 2 * p}
        for c, r, p in ((1, 500, 0.9), (32, 2400, 20.0))
    ]
    step = {"images_per_s": 100, "train_gflops_per_image": 1.0}
    train = {p: {"mgp": step, "bft": step} for p in ("fp32", "bf16")}
    return {
        "infer": {
            "rows": [
                infer("pytorch-eager", 32, 1000, 1.0),
                infer("ort-fp32", 32, 2000, 2.0),
                infer("ort-int8", 32, 2900, 2.9),
            ],
            "accuracy": {
                "variants": {"ort-fp32": {"balanced_acc": 0.85}, "ort-int8": {"balanced_acc": 0.845}}
            },
        },
        "serve": {
            "http": {"raw": serve},
            "engine": [
                {"batch": 1, "images_per_s": 2500, "p50_ms": 0.4},
                {"batch": 32, "images_per_s": 3000, "p50_ms": 9.0},
            ],
        },
        "train": {"a": train},
        "mgp": {
            "median_images_per_s": {
                "mae": 100.0,
                "livt": 110.0,
                "mae-bf16": 150.0,
                "livt-compiled-bf16": 200.0,
            }
        },
    }


def test_rows_give_each_target_met_or_missed():
    rows = {r["what"]: r for r in summary.table(_results())}
    met = {what: r["met"] for what, r in rows.items()}
    assert met["ORT fp32 vs PyTorch eager, batch 32"] is True  # 2.0 >= 1.8
    assert met["ORT dynamic INT8 vs eager, batch 32"] is False  # 2.9 < 3
    assert met["INT8 balanced accuracy lost (points)"] is False  # 0.5 points > 0.3
    assert rows["serving c32, raw body, 1 image/request, vs its raw engine batch 32"][
        "value"
    ] == pytest.approx(0.8)
    assert rows["serving c1 p50 vs its raw engine batch 1"]["value"] == pytest.approx(0.5)
    mgp = {what: r["value"] for what, r in rows.items() if what.startswith("MGP")}
    # A bf16 side is held against the reference both in fp32 and under the same autocast.
    assert mgp == pytest.approx({
        "MGP step, livt vs the MAE reference (mae)": 1.1,
        "MGP step, livt-compiled-bf16 vs the MAE reference (mae)": 2.0,
        "MGP step, livt-compiled-bf16 vs the MAE reference (mae-bf16)": 200 / 150,
    })  # fmt: skip
    table = summary.markdown(list(rows.values()))
    assert table.count("\n") == len(rows) + 1 and "| no |" in table and "| yes |" in table


def test_without_the_reference_the_mgp_rows_are_left_out_and_figures_drawn(tmp_path: Path):
    results = _results() | {"mgp": {"skipped": "no --mae-repo"}}
    assert not [r for r in summary.table(results) if r["what"].startswith("MGP")]
    summary.draw(results, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "perf_inference.png",
        "perf_serving.png",
        "perf_training.png",
    ]


def test_a_missing_run_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        summary.main(["--run", str(tmp_path / "nope"), "--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--run" in err and "does not exist" in err
