import json

import onnx
import pytest
from onnx import TensorProto, helper

from livt.export.metadata import build_metadata, read_onnx_metadata, write_onnx_metadata

META = {
    "model": {"name": "vit_micro", "num_classes": 2},
    "classes": ["a", "b"],
    "class_counts": [10, 2],
    "loss": "bal-bce",
    "tau": 1.0,
    "preprocess": {"img_size": 8, "channels": 1, "mean": [0.5], "std": [0.5]},
}
PRIOR = {"mode": "balanced", "rule": "bayes", "source": None, "pi": None, "offset": [0.0, 0.0]}
CALIBRATION = {"method": "temperature", "temperature": 1.5, "scale": [1 / 1.5] * 2, "bias": [0.0] * 2}


def _metadata(**kw):
    return build_metadata(META, prior=PRIOR, calibration=CALIBRATION, run_metrics={"top1": 0.9, "per_class": [1, 0.8]},
                          source_sha256="ab", **kw)  # fmt: skip


def test_build_metadata_follows_the_contract():
    meta = _metadata()
    assert meta["input"] == {"name": "input", "shape": [None, 1, 8, 8], "dtype": "float32"}
    assert meta["model_name"] == "vit_micro" and meta["calibration"] == CALIBRATION
    assert meta["format_version"] == 2 and "temperature" not in meta
    assert meta["metrics"] == {"top1": 0.9}
    assert json.loads(json.dumps(meta)) == meta
    with pytest.raises(ValueError, match="quantization"):
        _metadata(quantization="int4")


def test_write_replaces_and_read_round_trips(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    write_onnx_metadata(model, {"old": True})
    write_onnx_metadata(model, _metadata(quantization="int8-dynamic"))
    assert [p.key for p in model.metadata_props] == ["livt"]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_onnx_metadata(path)["quantization"] == "int8-dynamic"

    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="not a livt export"):
        read_onnx_metadata(path)
