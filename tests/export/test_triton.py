"""The Triton repository entry, checked field by field from a parsed ``config.pbtxt``; the OpenVINO
backend's entry loaded by OpenVINO itself and compared with ONNX Runtime on the ONNX entry."""

import json
import re

import numpy as np
import pytest

from livt.export.cli import main
from livt.export.metadata import read_onnx_metadata

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([{}\[\]:,])|([^\s{}\[\]:,"]+)')


def parse_pbtxt(text: str) -> dict:
    """A small protobuf text-format reader: messages -> dicts, repeated fields -> lists."""
    tokens = [(m.group(1), m.group(2), m.group(3)) for m in _TOKEN.finditer(text)]
    pos = 0

    def value():
        nonlocal pos
        string, punct, word = tokens[pos]
        pos += 1
        if punct == "{":
            return message("}")
        if punct == "[":
            items = []
            while tokens[pos][1] != "]":
                items.append(value())
                if tokens[pos][1] == ",":
                    pos += 1
            pos += 1
            return items
        if string is not None:
            return json.loads(f'"{string}"')
        return int(word) if word.lstrip("-").isdigit() else word

    def message(end):
        nonlocal pos
        fields = {}
        while pos < len(tokens) and (end is None or tokens[pos][1] != end):
            key = tokens[pos][2]
            pos += 1
            if tokens[pos][1] == ":":
                pos += 1
            item = value()
            if key in fields:  # a repeated field written as repeated entries (parameters, a map)
                previous = fields[key]
                fields[key] = [*previous, item] if isinstance(previous, list) else [previous, item]
            else:
                fields[key] = item
        pos += 1
        return fields

    return message(None)


@pytest.fixture(scope="module")
def repository(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "models"
    args = ["--run", str(run_dir), "--format", "triton", "--out", str(out), "--triton-name", "fmnist",
            "--triton-max-batch", "16", "--prior", "train", "--eval-split", "none"]  # fmt: skip
    assert main(args) == 0
    return out


def test_layout(repository):
    model = repository / "fmnist"
    assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
        "1/model.onnx",
        "config.pbtxt",
        "export_report.json",
        "labels.txt",
    ]
    assert (model / "labels.txt").read_text().splitlines() == [f"class_{k}" for k in range(10)]
    assert not [p for p in repository.iterdir() if p.name != "fmnist"]  # no temporary leftovers


def test_config_fields(repository):
    config = parse_pbtxt((repository / "fmnist" / "config.pbtxt").read_text())
    assert config["name"] == "fmnist"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}]
    assert config["output"] == [
        {"name": name, "data_type": "TYPE_FP32", "dims": [10], "label_filename": "labels.txt"}
        for name in ("logits", "probabilities")
    ]
    assert config["dynamic_batching"] == {"preferred_batch_size": [8], "max_queue_delay_microseconds": 500}
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert config["parameters"]["key"] == "livt"
    metadata = json.loads(config["parameters"]["value"]["string_value"])
    assert metadata == read_onnx_metadata(repository / "fmnist" / "1" / "model.onnx")
    assert metadata["prior"]["mode"] == "train"


def test_reexport_replaces_the_model_folder(run_dir, repository):
    args = ["--run", str(run_dir), "--format", "triton", "--out", str(repository), "--triton-name", "fmnist",
            "--eval-split", "none"]  # fmt: skip
    assert main(args) == 0
    config = parse_pbtxt((repository / "fmnist" / "config.pbtxt").read_text())
    assert config["max_batch_size"] == 128
    assert json.loads(config["parameters"]["value"]["string_value"])["prior"]["mode"] == "balanced"
    assert [p.name for p in repository.iterdir()] == ["fmnist"]


def test_out_with_a_suffix_is_refused(run_dir, tmp_path, capsys):
    assert main(["--run", str(run_dir), "--format", "triton", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "model repository folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def twin_repositories(run_dir, tmp_path_factory):
    """The same export for both CPU backends: ``(openvino repository, onnxruntime repository)``
    (``repository`` above is replaced by a test, so the OpenVINO entry has a twin of its own)."""
    outs = []
    for platform in ("openvino", "onnxruntime_onnx"):
        out = tmp_path_factory.mktemp(f"triton-{platform}") / "models"
        args = ["--run", str(run_dir), "--format", "triton", "--out", str(out), "--triton-name", "fmnist",
                "--triton-platform", platform, "--triton-max-batch", "16", "--prior", "train",
                "--eval-split", "none"]  # fmt: skip
        assert main(args) == 0
        outs.append(out)
    return tuple(outs)


def test_openvino_layout_and_config(twin_repositories):
    openvino_repository, repository = twin_repositories
    model = openvino_repository / "fmnist"
    assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
        "1/model.bin",
        "1/model.xml",
        "config.pbtxt",
        "export_report.json",
        "labels.txt",
    ]
    assert (model / "labels.txt").read_text() == (repository / "fmnist" / "labels.txt").read_text()
    config = parse_pbtxt((model / "config.pbtxt").read_text())
    onnx_config = parse_pbtxt((repository / "fmnist" / "config.pbtxt").read_text())
    # A backend, not a platform: Triton's OpenVINO backend reads 1/model.xml by default.
    assert (
        config["backend"] == "openvino"
        and "platform" not in config
        and "default_model_filename" not in config
    )
    for field in ("name", "max_batch_size", "input", "output", "dynamic_batching", "instance_group"):
        assert config[field] == onnx_config[field], field
    parameters = {p["key"]: p["value"]["string_value"] for p in config["parameters"]}
    assert parameters.keys() == {"livt", "NUM_STREAMS", "PERFORMANCE_HINT"}
    assert parameters["NUM_STREAMS"] == "1" and parameters["PERFORMANCE_HINT"] == "LATENCY"
    assert json.loads(parameters["livt"]) == read_onnx_metadata(repository / "fmnist" / "1" / "model.onnx")


def test_openvino_loads_the_ir_and_matches_onnx_runtime(twin_repositories):
    openvino_repository, repository = twin_repositories
    import onnxruntime as ort
    import openvino as ov

    core = ov.Core()
    ir = core.read_model(str(openvino_repository / "fmnist" / "1" / "model.xml"))
    metadata = read_onnx_metadata(repository / "fmnist" / "1" / "model.onnx")
    assert json.loads(ir.get_rt_info("livt").astype(str)) == metadata
    # f32 weights as in the ONNX (save_model's default would have halved them to fp16).
    assert not [
        op
        for op in ir.get_ops()
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16
    ]
    assert ir.input(0).get_partial_shape()[0].is_dynamic  # Triton's dynamic batching sends any batch size
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    session = ort.InferenceSession(
        str(repository / "fmnist" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    for batch in (1, 5, 16):
        x = rng.standard_normal((batch, *metadata["input"]["shape"][1:]), dtype=np.float32)
        result = compiled(x)
        logits, probabilities = session.run(["logits", "probabilities"], {"input": x})
        np.testing.assert_allclose(result["logits"], logits, rtol=0, atol=1e-4)
        np.testing.assert_allclose(result["probabilities"], probabilities, rtol=0, atol=1e-5)
