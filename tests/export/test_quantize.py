"""INT8 variants, exported through the CLI and checked against the fp32 model."""

import hashlib
import json

import onnx

from livt.export.cli import main
from livt.export.metadata import read_onnx_metadata


def test_int8_variants_report_accuracy_beside_fp32(run_dir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    args = ["--run", str(run_dir), "--out", str(out), "--int8", "--int8-min-agreement", "0.5"]
    assert main(args) == 0
    assert main([*args[:4], "--out", str(tmp_path / "s.onnx"), "--int8", "--int8-mode", "static",
                 "--int8-min-agreement", "0.5", "--eval-split", "val"]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    assert "onnx-int8-dynamic" in stdout and "bal.acc" in stdout
    models = {"m.onnx", "m.int8.onnx", "s.onnx", "s.qdq.onnx"}
    sums = {f"{name}.sha256" for name in models}
    assert {p.name for p in tmp_path.iterdir()} == models | sums | {"export_report.json"}
    for name in models:  # sha256sum format, naming the published file
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert (tmp_path / f"{name}.sha256").read_text() == f"{digest}  {name}\n"
    assert read_onnx_metadata(tmp_path / "m.int8.onnx")["quantization"] == "int8-dynamic"
    assert read_onnx_metadata(tmp_path / "s.qdq.onnx")["quantization"] == "int8-qdq"
    qdq_ops = {n.op_type for n in onnx.load(str(tmp_path / "s.qdq.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= qdq_ops
    report = json.loads((tmp_path / "export_report.json").read_text())  # the static export's report
    assert report["evaluation"]["split"] == "val"
    for name in ("onnx-fp32", "onnx-int8-qdq"):
        assert 0 <= report["evaluation"]["variants"][name]["balanced_acc"] <= 1
    assert report["parity"]["onnx-int8-qdq"]["top1_agreement"] >= 0.5


def test_many_few_thresholds_default_to_the_runs(run_dir, run_meta, tmp_path, capsys):
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert (recorded["many_threshold"], recorded["few_threshold"]) == (60, 20)  # synthetic-tiny's recipe
    assert max(run_meta["class_counts"]) <= 100  # so a threshold of 100 leaves "many" empty
    args = ["--run", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--eval-split", "val"]

    def evaluation():
        return json.loads((tmp_path / "export_report.json").read_text())["evaluation"]

    assert main(args) == 0
    assert evaluation()["groups"]["many"] == "> 60 training images"
    assert evaluation()["variants"]["onnx-fp32"]["many"] is not None
    assert read_onnx_metadata(tmp_path / "m.onnx")["metrics"]["many_threshold"] == 60
    assert main([*args, "--many", "100"]) == 0  # a flag still overrides
    assert evaluation()["groups"] == {"many": "> 100 training images", "few": "< 20 training images"}
    assert evaluation()["variants"]["onnx-fp32"]["many"] is None
    # The run's many (60) with a larger --few is an inconsistent pair.
    assert main([*args, "--few", "80"]) == 2
    assert "few (80) <= many (60)" in capsys.readouterr().err
