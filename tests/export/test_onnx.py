import numpy as np
import onnx
import pytest
import torch

from livt.export.calibration import Calibration
from livt.export.fold import FoldedClassifier
from livt.export.metadata import read_onnx_metadata
from livt.export.onnx import compare, export_onnx, make_session, run_onnx, run_torch
from livt.export.source import load_source

OFFSET = np.linspace(-2, 1, 10, dtype=np.float32)
SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def model(run_dir):
    source = load_source(run_dir)
    assert (source.num_classes, source.input_shape) == (len(OFFSET), SHAPE)
    return source.model


def _export(model, path, offset, temperature=1.0, opset=17):
    k = len(offset)
    folded = FoldedClassifier(
        model, offset, Calibration("temperature", np.full(k, 1 / temperature), np.zeros(k))
    )
    export_onnx(folded, path, SHAPE, {"marker": "x"}, opset=opset)
    return folded


def test_single_file_opset17_with_layernorm_and_dynamic_batch(model, tmp_path):
    path = tmp_path / "m.onnx"
    folded = _export(model, path, OFFSET, 1.3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external data, no leftovers
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    assert "LayerNormalization" in {n.op_type for n in proto.graph.node}
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert read_onnx_metadata(path) == {"marker": "x"}
    session = make_session(path, threads=1)
    for batch in (1, 7):
        x = torch.randn(batch, *SHAPE).numpy()
        parity = compare(run_torch(folded, x), run_onnx(session, x))
        assert parity.samples == batch
        assert parity.max_abs_diff_logits < 1e-4 and parity.top1_agreement == 1.0


def test_folding_adds_no_op_types(model, tmp_path):
    _export(model, tmp_path / "raw.onnx", np.zeros(len(OFFSET), dtype=np.float32))
    _export(model, tmp_path / "folded.onnx", OFFSET, 0.7)
    ops = {
        name: {n.op_type for n in onnx.load(str(tmp_path / name)).graph.node}
        for name in ("raw.onnx", "folded.onnx")
    }
    assert ops["folded.onnx"] <= ops["raw.onnx"]


def test_opset18_uses_the_torch_export_path(model, tmp_path):
    path = tmp_path / "m18.onnx"
    folded = _export(model, path, OFFSET, 2.0, opset=18)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m18.onnx"]
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    x = torch.randn(7, *SHAPE).numpy()
    assert (
        compare(run_torch(folded, x), run_onnx(make_session(path, threads=1), x)).max_abs_diff_logits < 1e-4
    )


def test_opset_below_17_is_rejected(model, tmp_path):
    with pytest.raises(ValueError, match="LayerNormalization"):
        _export(model, tmp_path / "m.onnx", OFFSET, opset=16)
    assert not list(tmp_path.iterdir())
