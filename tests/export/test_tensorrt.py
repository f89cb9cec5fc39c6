"""TensorRT engines: built and run only where TensorRT and a CUDA GPU are present."""

import json

import pytest

from livt.export.errors import ExportError
from livt.export.options import EngineProfile
from livt.export.tensorrt import unavailable_reason

REASON = unavailable_reason()


def test_profile_must_be_ordered():
    assert EngineProfile(1, 8, 64).opt_batch == 8
    with pytest.raises(ExportError, match="--min-batch <= --opt-batch <= --max-batch"):
        EngineProfile(8, 4, 64)


def test_unavailable_reason_is_one_line():
    if REASON is None:
        pytest.skip("TensorRT and CUDA are available here")
    assert "\n" not in REASON and ("TensorRT" in REASON or "CUDA" in REASON)


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"TensorRT engine build needs TensorRT and CUDA: {REASON}")
@pytest.mark.parametrize("extra", [[], ["--fp16"], ["--int8"]])
def test_engine_export_verifies_and_writes_a_sidecar(run_dir, tmp_path, extra):
    from livt.artifact import ENGINE_KEYS, engine_sidecar_path
    from livt.export.cli import main
    from livt.inference.backends.tensorrt import TensorRTBackend

    plan = tmp_path / "m.plan"
    args = ["--run", str(run_dir), "--format", "tensorrt", "--out", str(plan), "--max-batch", "16",
            "--int8-min-agreement", "0.5", "--timing-cache-dir", str(tmp_path / "cache"), *extra]  # fmt: skip
    assert main(args) == 0
    sidecar = json.loads(engine_sidecar_path(plan).read_text())
    assert set(ENGINE_KEYS) | {"onnx_sha256", "classes", "prior", "calibration"} <= set(sidecar)
    assert sidecar["profile"] == {"min_batch": 1, "opt_batch": 8, "max_batch": 16}
    assert any((tmp_path / "cache").iterdir())
    assert TensorRTBackend(plan).input_shape[1:] == (3, 32, 32)
