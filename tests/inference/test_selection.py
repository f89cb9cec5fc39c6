"""Engine selection: forced engines, the benchmark record of this host, and the start-up measurement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from livt.artifact import sha256_file, write_checksum
from livt.host import host_fingerprint
from livt.inference.artifact import ArtifactError
from livt.inference.backends import BackendUnavailableError
from livt.inference.model import open_model
from livt.inference.selection import pick, record_path, select_engine


@pytest.fixture
def export(tmp_path: Path, artifact: Path) -> Path:
    """The tiny artifact with its checksum and an ONNX Runtime INT8 variant beside it, as livt-export writes."""
    from livt.export.metadata import read_onnx_metadata
    from livt.export.quantize import quantize_int8_dynamic

    model = tmp_path / "model.onnx"
    shutil.copy(artifact, model)
    write_checksum(model)
    int8 = tmp_path / "model.int8.onnx"
    quantize_int8_dynamic(model, int8, {**read_onnx_metadata(model), "quantization": "int8-dynamic"})
    write_checksum(int8)
    return model


def _row(name: str, speed: float, agreement: float = 1.0, acc: float | None = 0.8) -> dict:
    return {
        "name": name,
        "precision": name.split("-")[1],
        "images_per_s": speed,
        "agreement": agreement,
        "balanced_acc": acc,
    }


def test_pick_serves_the_fastest_that_keeps_fp32_accuracy():
    rows = [_row("ort-fp32", 100), _row("openvino-bf16", 250, acc=0.7985), _row("openvino-int8", 400, 0.99)]
    best, reason = pick(rows)
    assert best["name"] == "openvino-bf16"
    assert "openvino-int8 (top-1 agreement 99.00 % < 99.5 %)" in reason
    rows[1]["balanced_acc"] = 0.797  # 0.3 points lost: more than the 0.2 allowed
    best, reason = pick(rows)
    assert best["name"] == "ort-fp32" and "balanced accuracy 79.70 vs fp32 80.00" in reason
    # Never slower than ONNX Runtime fp32: it is always a candidate, so a slower bf16 loses to it.
    assert pick([_row("ort-fp32", 100), _row("openvino-bf16", 90)])[0]["name"] == "ort-fp32"
    # Within the 5 % margin a figure on a shared machine is noise: ONNX Runtime fp32 stays.
    assert pick([_row("ort-fp32", 100), _row("openvino-bf16", 104)])[0]["name"] == "ort-fp32"
    assert pick([_row("ort-fp32", 100), _row("openvino-bf16", 106)])[0]["name"] == "openvino-bf16"


def test_auto_measures_at_start_up_without_a_record(export: Path):
    model = open_model(export)
    assert model.choice.reason.startswith(
        "measured at start-up on synthetic images: fastest accurate candidate"
    )
    for name in ("ort-fp32", "ort-int8", "openvino-fp32"):
        assert name in model.choice.reason
    assert model.info.sha256 == sha256_file(model.choice.path)


def test_a_record_from_this_cpu_decides(export: Path):
    rows = [
        {"name": "ort-fp32", "precision": "fp32", "throughput": {"1": 50.0, "32": 100.0}, "agreement": 1.0},
        {"name": "ort-int8", "precision": "int8", "throughput": {"1": 90.0, "32": 300.0}, "agreement": 0.999},
        {
            "name": "openvino-fp32",
            "precision": "fp32",
            "throughput": {"1": 60.0, "32": 120.0},
            "agreement": 1.0,
        },
    ]
    record = {"host": host_fingerprint(), "sha256": sha256_file(export), "rows": rows}
    record_path(export).write_text(json.dumps(record))
    model = open_model(export)
    assert (model.choice.engine, model.choice.precision) == ("ort", "int8")
    assert model.choice.path.name == "model.int8.onnx"
    assert model.choice.reason.startswith("benchmark record model.benchmark.json")
    # Another CPU's record (or another artifact's) is not trusted: measured here instead.
    record_path(export).write_text(json.dumps({**record, "host": {"cpu": "elsewhere", "flags": []}}))
    assert open_model(export).choice.reason.startswith("measured at start-up")


def test_forced_engines_and_clear_refusals(export: Path, tmp_path: Path):
    backend, choice, digest = select_engine(export, "openvino", "fp32")
    assert (backend.engine, backend.precision, choice.reason) == (
        "openvino",
        "fp32",
        "forced by --backend/--precision",
    )
    backend, choice, digest = select_engine(export, "ort", "int8")
    assert choice.path.name == "model.int8.onnx" and digest == sha256_file(choice.path)
    with pytest.raises(BackendUnavailableError, match="no int8 file for openvino beside it"):
        select_engine(export, "openvino", "int8")
    with pytest.raises(BackendUnavailableError, match=r"needs the tensorrt package|NVIDIA GPU"):
        plan = tmp_path / "x.plan"
        plan.write_bytes(b"engine")
        plan.with_name("x.plan.json").write_text(
            json.dumps({"tensorrt_version": "10", "gpu_name": "g", "compute_capability": "9.0"})
        )
        select_engine(plan, "auto")


def test_an_int8_file_named_directly_is_served_as_it_is(export: Path):
    model = open_model(export.with_name("model.int8.onnx"))
    assert (model.choice.name, model.choice.path.name) == ("ort-int8", "model.int8.onnx")


def test_a_variant_that_fails_its_checksum_is_not_served(export: Path):
    int8 = export.with_name("model.int8.onnx")
    int8.write_bytes(int8.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        select_engine(export, "ort", "int8")
    assert "ort-int8" not in open_model(export).choice.reason  # auto leaves it out
