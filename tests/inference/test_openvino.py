"""The OpenVINO engine on a real written model: the same outputs and metadata as ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from livt.inference.artifact import ArtifactError
from livt.inference.backends import BackendUnavailableError, open_backend
from livt.inference.backends.openvino import OpenVINOBackend, cpu_has_bf16

from .conftest import build_tiny_artifact

BATCH = np.random.default_rng(0).standard_normal((5, 3, 16, 16), dtype=np.float32)


def test_openvino_matches_onnxruntime_and_reads_the_metadata(artifact: Path):
    ov, ort = open_backend(artifact, "openvino"), open_backend(artifact, "ort")
    assert isinstance(ov, OpenVINOBackend) and (ov.engine, ov.precision) == ("openvino", "fp32")
    assert ov.metadata_json == ort.metadata_json
    assert ov.input_shape == ort.input_shape == (None, 3, 16, 16)
    for got, want in zip(ov.run(BATCH), ort.run(BATCH), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 (AVX-512 BF16 / AMX)")
def test_bf16_runs_where_the_cpu_has_it(artifact: Path):
    bf16 = open_backend(artifact, "openvino", "bf16", threads=1)
    logits, probabilities = bf16.run(BATCH)
    reference = open_backend(artifact, "ort").run(BATCH)[0]
    np.testing.assert_allclose(logits, reference, atol=0.1)  # bf16 keeps 8 bits of mantissa
    assert not np.array_equal(logits, reference)  # bf16 really ran
    np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-3)


def test_precisions_that_cannot_apply_are_refused(artifact: Path):
    with pytest.raises(BackendUnavailableError, match="not quantised"):
        open_backend(artifact, "openvino", "int8")
    with pytest.raises(BackendUnavailableError, match="no bf16"):
        open_backend(artifact, "ort", "bf16")
    with pytest.raises(BackendUnavailableError, match="precision must be one of"):
        open_backend(artifact, "openvino", "fp16")


def test_models_without_the_contract_are_refused(tmp_path: Path, artifact: Path):
    bare = onnx.load(str(artifact))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ArtifactError, match="carries no 'livt' metadata"):
        open_backend(tmp_path / "bare.onnx", "openvino")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ArtifactError, match="OpenVINO cannot read the model"):
        open_backend(tmp_path / "junk.onnx", "openvino")
    shutil.copy(artifact, tmp_path / "model.plan")
    with pytest.raises(
        BackendUnavailableError, match="is a TensorRT engine: the openvino engine cannot run it"
    ):
        open_backend(tmp_path / "model.plan", "openvino")


def test_one_request_per_thread(tmp_path: Path):
    """The server's batcher thread and a Predictor's caller each get their own infer request."""
    from concurrent.futures import ThreadPoolExecutor

    backend = open_backend(build_tiny_artifact(tmp_path / "m.onnx"), "openvino")
    expected = backend.run(BATCH)[0]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: backend.run(BATCH)[0], range(16)))
    for got in results:
        np.testing.assert_array_equal(got, expected)
