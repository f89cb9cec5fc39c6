import json
import time

import numpy as np
import pytest

from livt.export.bench import format_table, time_callable, time_interleaved
from livt.export.cli import main


def test_time_callable_counts_warmup_apart():
    calls = []
    row = time_callable(lambda: calls.append(1), batch_size=4, warmup=2, iters=5)
    assert len(calls) == 7
    assert row["batch_size"] == 4 and 0 <= row["p50_ms"] <= row["p99_ms"] and row["throughput"] > 0
    with pytest.raises(ValueError, match="iters"):
        time_callable(lambda: None, batch_size=1, iters=0)


def test_time_interleaved_rotates_the_order_and_keeps_the_ratio():
    order = []

    def sleeper(name: str, seconds: float):
        def fn():
            order.append(name)
            time.sleep(seconds)

        return fn

    rows = time_interleaved(
        {"slow": sleeper("slow", 0.004), "fast": sleeper("fast", 0.002)},
        batch_size=2,
        warmup=1,
        rounds=4,
        iters=2,
    )
    timed = order[2:]  # after one warm-up call each
    firsts = [timed[4 * r] for r in range(4)]
    assert firsts == ["slow", "fast", "slow", "fast"]  # each round starts with the next function
    assert rows["slow"]["speedup_vs_first"] == 1.0
    assert 1.4 < rows["fast"]["speedup_vs_first"] < 2.6
    assert rows["fast"]["throughput"] > rows["slow"]["throughput"]
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved({"a": lambda: None}, batch_size=1, rounds=0)


@pytest.mark.parametrize("flag", ["--iters", "--rounds", "--batch-sizes"])
def test_benchmark_cli_refuses_counts_under_one(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(tmp_path / "m.onnx"), flag, "0"])
    assert exc.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_format_table_has_a_row_per_result():
    rows = [
        {"backend": "a", "batch_size": b, "p50_ms": 1.0, "p99_ms": 2.0, "throughput": 3.0} for b in (1, 8)
    ]
    assert len(format_table(rows).splitlines()) == 3


def test_benchmark_cli_times_artifacts_and_pytorch(run_dir, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    assert main(["--run", str(run_dir), "--out", str(model), "--eval-split", "none"]) == 0
    out = tmp_path / "bench.json"
    args = ["benchmark", str(model), "--run", str(run_dir), "--batch-sizes", "1", "3", "--warmup", "1",
            "--iters", "2", "--threads", "1", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = json.loads(out.read_text())
    assert [(r["backend"], r["batch_size"]) for r in rows] == [
        ("pytorch-eager", 1), ("pytorch-eager", 3), ("m.onnx", 1), ("m.onnx", 3)
    ]  # fmt: skip
    assert all(np.isfinite(r["p99_ms"]) and r["throughput"] > 0 for r in rows)
    assert "img/s" in capsys.readouterr().out


def test_benchmark_cli_rejects_a_missing_artifact(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "nope.onnx")]) == 2
    assert "no such artifact" in capsys.readouterr().err
