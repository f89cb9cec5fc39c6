"""``livt-export --format openvino`` and ``livt-export benchmark``: real OpenVINO and NNCF on the tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livt.export.cli import main
from livt.export.metadata import read_onnx_metadata
from livt.inference.backends.openvino import cpu_has_bf16
from livt.inference.model import open_model
from livt.inference.selection import record_path


@pytest.fixture(scope="module")
def ov_export(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("openvino") / "model.onnx"
    assert main(["--run", str(run_dir), "--out", str(out), "--format", "openvino", "--int8"]) == 0
    return out


def test_openvino_export_writes_verified_int8_and_a_row_per_engine(ov_export: Path, capsys):
    int8 = ov_export.with_name("model.ov-int8.onnx")
    assert int8.is_file() and int8.with_name(int8.name + ".sha256").is_file()
    assert read_onnx_metadata(int8)["quantization"] == "int8-nncf"
    report = json.loads(ov_export.with_name("export_report.json").read_text())
    runs = [
        "onnx-fp32",
        "onnx-int8-dynamic",
        "openvino-fp32",
        *(["openvino-bf16"] if cpu_has_bf16() else []),
        "openvino-int8",
    ]
    assert list(report["parity"]) == runs == list(report["evaluation"]["variants"])
    assert report["parity"]["openvino-fp32"]["max_abs_diff_logits"] < 1e-4  # the --atol check
    for name in runs:
        row = report["evaluation"]["variants"][name]
        assert {"balanced_acc", "many", "medium", "few", "ece", "agreement_fp32"} <= set(row)
    assert report["evaluation"]["variants"]["onnx-fp32"]["agreement_fp32"] == 1.0
    assert report["artifacts"]["openvino-int8"].endswith("model.ov-int8.onnx")


def test_benchmark_records_every_engine_and_auto_serves_from_it(ov_export: Path, capsys):
    args = [
        "benchmark",
        str(ov_export),
        "--batch-sizes",
        "1",
        "4",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    record = json.loads(record_path(ov_export).read_text())
    names = [r["name"] for r in record["rows"]]
    assert names[:3] == ["ort-fp32", "ort-int8", "openvino-fp32"] and "openvino-int8" in names
    for row in record["rows"]:
        assert set(row["throughput"]) == {"1", "4"} and all(v > 0 for v in row["throughput"].values())
        assert set(row["speedup"]) == {"1", "4"}
        assert row["balanced_acc"] is not None and row["agreement"] is not None  # from the export's table
        assert row["name"] in out
    assert record["timing"]["interleaved"] and record["rows"][0]["speedup"]["4"] == 1.0
    assert record["host"]["cpu"] in out and f"auto serves {record['auto']['name']}" in out
    model = open_model(ov_export)  # the record is of this CPU and these bytes: it decides
    assert model.choice.name == record["auto"]["name"]
    assert model.choice.reason.startswith("benchmark record model.benchmark.json")


def test_openvino_format_needs_an_onnx_name(run_dir: Path, tmp_path: Path, capsys):
    assert main(["--run", str(run_dir), "--out", str(tmp_path / "m.xml"), "--format", "openvino"]) == 2
    assert "--out for --format openvino must end in .onnx" in capsys.readouterr().err
