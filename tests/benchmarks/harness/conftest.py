"""A tiny real ONNX artifact (the serving tests' one) for the harness's server and load generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.conftest import build_tiny_artifact


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("harness") / "model.onnx")
