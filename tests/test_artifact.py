"""The shared artifact contract: checksum sidecars, TensorRT engine sidecars, torch-free import."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from livt.artifact import (
    EngineMismatchError,
    check_engine_compatible,
    checksum_path,
    engine_mismatches,
    engine_sidecar_path,
    read_checksum,
    read_engine_sidecar,
    sha256_file,
    write_checksum,
)

BUILT = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _plan(tmp_path, sidecar=BUILT):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    engine_sidecar_path(plan).write_text(json.dumps({**sidecar, "classes": ["a"]}))
    return plan


def test_checksum_sidecar_is_sha256sum_format_under_the_final_name(tmp_path):
    staged = tmp_path / "staged.onnx"
    staged.write_bytes(b"model bytes" * 100_000)  # several read chunks
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    assert sha256_file(staged) == digest
    sidecar = write_checksum(staged, "model.onnx")
    assert sidecar == checksum_path(staged) and sidecar.name == "staged.onnx.sha256"
    assert sidecar.read_text() == f"{digest}  model.onnx\n"
    assert read_checksum(staged) == digest
    staged.rename(tmp_path / "model.onnx")
    sidecar.rename(checksum_path(tmp_path / "model.onnx"))
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", "model.onnx.sha256"], cwd=tmp_path, capture_output=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_read_checksum_without_or_with_an_empty_sidecar(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    assert read_checksum(path) is None
    checksum_path(path).write_text("\n")
    assert read_checksum(path) == ""


def test_engine_sidecar_path():
    assert engine_sidecar_path("a/x.plan").name == "x.plan.json"


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


def test_missing_broken_or_incomplete_sidecar(tmp_path):
    plan = tmp_path / "lonely.plan"
    with pytest.raises(EngineMismatchError, match=r"sidecar lonely\.plan\.json, which is missing"):
        read_engine_sidecar(plan)
    engine_sidecar_path(plan).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="not valid JSON"):
        read_engine_sidecar(plan)
    engine_sidecar_path(plan).write_text("[1, 2]")
    with pytest.raises(EngineMismatchError, match="not a JSON object"):
        read_engine_sidecar(plan)
    with pytest.raises(EngineMismatchError, match="lacks"):
        read_engine_sidecar(_plan(tmp_path, {"gpu_name": "x"}))


def test_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
        "import livt.artifact, livt.images, livt.export.metadata\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _contract(**changes):
    from livt.artifact import ArtifactMetadata, FoldedPrior

    fields = dict(
        classes=("a", "b"),
        class_counts=(10, 2),
        loss="bal-bce",
        tau=1.0,
        prior=FoldedPrior(mode="train", rule="bayes", offset=(-0.18, -1.79), source="train", pi=(0.83, 0.17)),
        preprocess={"img_size": 8, "channels": 1, "mean": [0.5], "std": [0.5], "resize": 8},
        calibration={"method": "temperature", "temperature": 1.5, "scale": [0.6, 0.6], "bias": [0.0, 0.0]},
        quantization="int8-nncf",
    )
    return ArtifactMetadata(**{**fields, **changes})


def test_metadata_schema_round_trips_what_export_writes():
    from livt.artifact import ArtifactMetadata

    meta = _contract()
    data = meta.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON: lists, not tuples
    assert data["prior"] == {"mode": "train", "rule": "bayes", "offset": [-0.18, -1.79], "source": "train",
                             "pi": [0.83, 0.17]}  # fmt: skip
    assert ArtifactMetadata.from_dict(data) == meta
    assert ArtifactMetadata.from_json(json.dumps(data)).to_dict() == data


def test_metadata_schema_reads_the_minimum_and_names_what_is_wrong():
    from livt.artifact import ArtifactMetadata, MetadataError

    minimal = {k: v for k, v in _contract(quantization=None).to_dict().items()
               if k in ("format_version", "classes", "class_counts", "loss", "tau", "prior", "preprocess",
                        "calibration")}  # fmt: skip
    assert ArtifactMetadata.from_dict(minimal).model_name == "custom"
    for broken, needle in [
        ({**minimal, "tau": "x"}, "invalid livt metadata"),
        ({k: v for k, v in minimal.items() if k != "tau"}, "lacks the key 'tau'"),
        ({**minimal, "format_version": 1}, "older livt: export it again"),
        ({**minimal, "quantization": "int4"}, "quantization must be one of"),
        ({**minimal, "prior": {**minimal["prior"], "rule": "odds"}}, "prior rule 'odds'"),
        ({**minimal, "prior": {**minimal["prior"], "offset": [0.0, float("nan")]}}, "must be finite"),
        ({**minimal, "class_counts": [1]}, "2 classes, 1 class_counts"),
    ]:
        with pytest.raises(MetadataError, match=needle):
            ArtifactMetadata.from_dict(broken)
    with pytest.raises(MetadataError, match="not valid JSON"):
        ArtifactMetadata.from_json("{")
