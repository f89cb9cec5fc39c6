"""Artifact checksum and metadata validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livt.artifact import sha256_file
from livt.inference.artifact import ArtifactError, parse_metadata, verify_checksum

from .conftest import CLASS_COUNTS, CLASSES, PREPROCESS


def _meta(**changes) -> str:
    meta = {
        "format_version": 2,
        "classes": CLASSES,
        "class_counts": CLASS_COUNTS,
        "loss": "bal-bce",
        "tau": 1.0,
        "preprocess": PREPROCESS,
        "prior": {
            "mode": "balanced",
            "rule": "bayes",
            "source": None,
            "pi": None,
            "offset": [0.0] * len(CLASSES),
        },
        "calibration": None,
    }
    meta.update(changes)
    return json.dumps({k: v for k, v in meta.items() if v is not None or k == "calibration"})


def test_checksum_from_argument_and_sidecar(tmp_path: Path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"model bytes")
    digest = sha256_file(path)
    assert verify_checksum(path) == digest
    assert verify_checksum(path, digest.upper()) == digest
    with pytest.raises(ArtifactError, match=r"checksum mismatch .*\(from --sha256\)"):
        verify_checksum(path, "0" * 64)
    (tmp_path / "m.onnx.sha256").write_text(f"{'1' * 64}  m.onnx\n")
    with pytest.raises(ArtifactError, match=r"checksum mismatch .*m\.onnx\.sha256"):
        verify_checksum(path)
    with pytest.raises(ArtifactError, match="not a sha256"):
        verify_checksum(path, "abc")


def test_missing_artifact_is_named(tmp_path: Path):
    with pytest.raises(ArtifactError, match="does not exist"):
        verify_checksum(tmp_path / "nope.onnx")


def test_metadata_is_parsed():
    info = parse_metadata(_meta(), Path("m.onnx"), "ab" * 32)
    assert info.classes == tuple(CLASSES)
    assert info.version == "ab" * 6
    assert info.preprocess.input_shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{not json", "not valid JSON"),
        (_meta(format_version=3), "format_version 3"),
        (_meta(format_version=1), r"format_version 1 .*older livt: export it again"),
        (_meta(loss=None), "lacks the key 'loss'"),
        (_meta(class_counts=[1, 2]), "4 classes, 2 class_counts"),
        (_meta(prior={"mode": "x", "rule": "odds", "offset": [0.0] * 4}), "prior rule 'odds'"),
        (_meta(prior={"mode": "x", "rule": "bayes", "offset": [float("inf")] * 4}), "must be finite"),
        (_meta(calibration=[1, 2]), "calibration must be an object"),
        (_meta(preprocess={**PREPROCESS, "channels": 5}), "channels must be 1 or 3"),
    ],
)
def test_bad_metadata_names_the_problem(raw, needle):
    with pytest.raises(ArtifactError, match=needle):
        parse_metadata(raw, Path("m.onnx"), "0" * 64)
