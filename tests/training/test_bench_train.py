"""``benchmarks/bench_train.py`` on a tiny model: its JSON report and its usage errors."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"
TINY = ["--img-size", "16", "--patch-size", "4", "--embed-dim", "32", "--depth", "1", "--heads", "2",
        "--mlp-ratio", "2", "--num-classes", "4", "--decoder-dim", "16", "--decoder-depth", "1",
        "--decoder-heads", "2", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reports_throughput_and_flops_of_both_steps(bench, capsys):
    bench.main(TINY)
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["batch_size"] == 2
    assert (report["model"]["embed_dim"], report["model"]["depth"], report["model"]["mlp_ratio"]) == (
        32,
        1,
        2.0,
    )
    for step in ("mgp", "bft"):
        assert report[step]["images_per_s"] > 0 and report[step]["train_gflops_per_image"] > 0
        assert "mfu" not in report[step]  # no known peak for a CPU


def test_bad_size_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*TINY, "--heads", "3"])
    assert exit_info.value.code == 2
    assert "embed_dim (32) must be divisible by num_heads (3)" in capsys.readouterr().err
