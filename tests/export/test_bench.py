import json

import numpy as np
import pytest

from livt.export.bench import format_table, time_callable
from livt.export.cli import main


def test_time_callable_counts_warmup_apart():
    calls = []
    row = time_callable(lambda: calls.append(1), batch_size=4, warmup=2, iters=5)
    assert len(calls) == 7
    assert row["batch_size"] == 4 and 0 <= row["p50_ms"] <= row["p99_ms"] and row["throughput"] > 0
    with pytest.raises(ValueError, match="iters"):
        time_callable(lambda: None, batch_size=1, iters=0)


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
