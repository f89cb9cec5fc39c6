"""Backends: provider choice, loading errors, and the TensorRT backend's clean refusal here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from livt.inference.artifact import ArtifactError
from livt.inference.backends import open_backend
from livt.inference.backends.onnxruntime import OnnxRuntimeBackend, choose_providers


def test_provider_order_and_overrides():
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers(None, available) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"], available) == ["CPUExecutionProvider"]
    with pytest.raises(ArtifactError, match="not available"):
        choose_providers(["FooExecutionProvider"], available)


def test_onnxruntime_backend_runs_the_artifact(artifact: Path):
    backend = open_backend(artifact, providers=["CPUExecutionProvider"])
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.input_shape == (None, 3, 16, 16)
    logits, probabilities = backend.run(np.zeros((3, 3, 16, 16), dtype=np.float32))
    assert logits.shape == probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    assert '"classes"' in backend.metadata_json


@pytest.mark.parametrize(("spinning", "entry"), [(False, "0"), (True, "1")])
def test_thread_spinning_is_off_unless_asked_for(artifact: Path, spinning: bool, entry: str):
    backend = open_backend(artifact, spinning=spinning)
    assert isinstance(backend, OnnxRuntimeBackend)
    options = backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_corrupt_and_incompatible_models_are_refused(tmp_path: Path, artifact: Path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(artifact.read_bytes()[:300])
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        OnnxRuntimeBackend(corrupt)

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    with pytest.raises(ArtifactError, match="incompatible model"):
        OnnxRuntimeBackend(other)


def test_tensorrt_engine_needs_sidecar_and_is_refused_cleanly_here(tmp_path: Path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not really an engine")
    with pytest.raises(ArtifactError, match=r"sidecar model\.plan\.json"):
        open_backend(plan)
    (tmp_path / "model.plan.json").write_text('{"tensorrt_version": "0.0", "gpu_name": "none"}')
    with pytest.raises(ArtifactError, match=r"lacks \['compute_capability'\]"):
        open_backend(plan)
    (tmp_path / "model.plan.json").write_text(
        '{"tensorrt_version": "0.0", "gpu_name": "none", "compute_capability": "0.0"}'
    )
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ArtifactError, match=r"livt\[tensorrt\]"):
            open_backend(plan)
    else:
        # Installed: it must refuse the mismatching versions (or the missing GPU), naming what differs.
        with pytest.raises(ArtifactError, match=r"tensorrt_version|GPU"):
            open_backend(plan)


def test_settings_name_every_engine_and_precision():
    from typing import get_args

    from livt.inference.backends import ENGINES, PRECISIONS
    from livt.serving.settings import ServeSettings

    assert get_args(ServeSettings.model_fields["backend"].annotation) == ("auto", *ENGINES)
    assert get_args(get_args(ServeSettings.model_fields["precision"].annotation)[0]) == PRECISIONS
