"""The exported attention: timm's function, in an ONNX graph without run-time shape arithmetic."""

import copy
from collections import Counter

import numpy as np
import onnx
import torch

from livt.export.attention import ExportAttention, for_export
from livt.export.fold import FoldedClassifier
from livt.export.onnx import export_onnx
from livt.export.source import load_source


def test_same_function_as_timm_attention(run_dir):
    model = load_source(run_dir).model
    x = torch.randn(3, *load_source(run_dir).input_shape)
    swapped = for_export(copy.deepcopy(model))
    assert all(isinstance(block.attn, ExportAttention) for block in swapped.blocks)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x), atol=1e-5, rtol=1e-5)


def test_the_graph_computes_no_shapes_in_attention(run_dir, tmp_path):
    source = load_source(run_dir)
    folded = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32))
    export_onnx(folded, tmp_path / "m.onnx", source.input_shape, {"x": 1})
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node)
    # What is left computes the patch grid and the class token's batch once, not per block.
    assert ops["Shape"] <= 3 and ops["Split"] == 0 and ops["Sqrt"] == 0
    assert ops["Softmax"] == len(source.model.blocks) + 1  # every block's attention, and the output
    assert isinstance(source.model.blocks[0].attn, torch.nn.Module)  # the source model is untouched
    assert not isinstance(source.model.blocks[0].attn, ExportAttention)
