"""The Triton repository entry, checked field by field from a parsed ``config.pbtxt``."""

import json
import re

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
            fields[key] = value()
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
