"""INT8 and optimised variants, exported through the CLI and checked against the fp32 model."""

import json

import onnx

from livt.export.cli import main
from livt.export.metadata import read_onnx_metadata


def test_int8_variants_report_accuracy_beside_fp32(run_dir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    args = ["--run", str(run_dir), "--out", str(out), "--optimize", "--int8", "--int8-min-agreement", "0.5"]
    assert main(args) == 0
    assert main([*args[:4], "--out", str(tmp_path / "s.onnx"), "--int8", "--int8-mode", "static",
                 "--int8-min-agreement", "0.5", "--eval-split", "val"]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    assert "onnx-int8-dynamic" in stdout and "bal.acc" in stdout
    assert {p.name for p in tmp_path.iterdir()} == {
        "m.onnx",
        "m.opt.onnx",
        "m.int8.onnx",
        "s.onnx",
        "s.qdq.onnx",
        "export_report.json",
    }
    assert read_onnx_metadata(tmp_path / "m.int8.onnx")["quantization"] == "int8-dynamic"
    assert read_onnx_metadata(tmp_path / "s.qdq.onnx")["quantization"] == "int8-qdq"
    qdq_ops = {n.op_type for n in onnx.load(str(tmp_path / "s.qdq.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= qdq_ops
    report = json.loads((tmp_path / "export_report.json").read_text())  # the static export's report
    assert report["evaluation"]["split"] == "val"
    for name in ("onnx-fp32", "onnx-int8-qdq"):
        assert 0 <= report["evaluation"]["variants"][name]["balanced_acc"] <= 1
    assert report["parity"]["onnx-int8-qdq"]["top1_agreement"] >= 0.5


def test_many_few_thresholds_shape_the_groups(run_dir, run_meta, tmp_path):
    args = ["--run", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--eval-split", "val"]
    assert main([*args, "--many", "60", "--few", "20"]) == 0
    variants = json.loads((tmp_path / "export_report.json").read_text())["evaluation"]["variants"]
    assert max(run_meta["class_counts"]) <= 100  # so the default threshold leaves "many" empty
    assert variants["onnx-fp32"]["many"] is not None
    assert main(args) == 0
    variants = json.loads((tmp_path / "export_report.json").read_text())["evaluation"]["variants"]
    assert variants["onnx-fp32"]["many"] is None
