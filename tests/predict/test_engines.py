"""``Predictor`` and ``livt-predict`` on every engine: the same answers, the engine named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livt import Predictor
from livt.predict.cli import main

from ..serving.conftest import image_bytes


def test_forced_engines_agree(artifact: Path, tmp_path: Path):
    images = [image_bytes((20 + i, 24), seed=i) for i in range(6)]
    ort = Predictor(artifact, backend="ort")
    ov = Predictor(artifact, backend="openvino", precision="fp32")
    assert (ort.model.choice.engine, ov.model.choice.engine) == ("ort", "openvino")
    np.testing.assert_allclose(ov.logits(images), ort.logits(images), atol=1e-5)
    assert Predictor(artifact).model.choice.reason.startswith("measured at start-up")


def test_cli_refuses_an_engine_that_cannot_run(artifact: Path, capsys: pytest.CaptureFixture, tmp_path: Path):
    image = tmp_path / "a.png"
    image.write_bytes(image_bytes((20, 20)))
    assert (
        main(["--model", str(artifact), str(image), "--backend", "ort", "--precision", "int8", "--quiet"])
        == 2
    )
    assert "no int8 file for ort beside it" in capsys.readouterr().err
    assert main(["--model", str(artifact), str(image), "--backend", "openvino", "--quiet"]) == 0
