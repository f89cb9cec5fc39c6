import json
import subprocess
import sys

import pytest

from livt.export.engine_meta import (
    EngineMismatchError,
    check_engine_compatible,
    engine_mismatches,
    read_sidecar,
    sidecar_path,
)

BUILT = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _plan(tmp_path, sidecar=BUILT):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    sidecar_path(plan).write_text(json.dumps({**sidecar, "classes": ["a"]}))
    return plan


def test_sidecar_path():
    assert sidecar_path("a/x.plan").name == "x.plan.json"


def test_matching_runtime_returns_the_sidecar(tmp_path):
    assert check_engine_compatible(_plan(tmp_path), dict(BUILT))["classes"] == ["a"]


def test_every_difference_is_named(tmp_path):
    runtime = {"tensorrt_version": "10.4.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    assert len(engine_mismatches(BUILT, runtime)) == 3
    with pytest.raises(EngineMismatchError) as info:
        check_engine_compatible(_plan(tmp_path), runtime)
    message = str(info.value)
    for text in ("10.3.0", "10.4.0", "NVIDIA L4", "'9.0'", "'8.9'", "Rebuild"):
        assert text in message


def test_only_the_differing_key_is_reported():
    differences = engine_mismatches(BUILT, {**BUILT, "tensorrt_version": "10.3.1"})
    assert differences == ["tensorrt_version: engine built with '10.3.0', this machine has '10.3.1'"]


def test_missing_or_incomplete_sidecar(tmp_path):
    plan = tmp_path / "lonely.plan"
    with pytest.raises(EngineMismatchError, match="is missing"):
        read_sidecar(plan)
    with pytest.raises(EngineMismatchError, match="lacks"):
        read_sidecar(_plan(tmp_path, {"gpu_name": "x"}))


def test_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
        "import livt.export.engine_meta, livt.export.metadata\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
