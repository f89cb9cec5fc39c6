"""What serves is visible: the engine, precision and reason in the v2 metadata and in /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from livt.prior import REQUEST_PRIORS
from livt.serving.cli import main

from .conftest import metric_value


def test_engine_and_reason_are_published(serve: Callable):
    with serve(backend="openvino", precision="fp32") as url:
        meta = httpx.get(f"{url}/v2/models/livt").json()
        assert meta["parameters"] == {
            "engine": "openvino",
            "precision": "fp32",
            "file": "model.onnx",
            "reason": "forced by --backend/--precision",
        }
        assert metric_value(url, "livt_engine_info", engine="openvino", precision="fp32") == 1
        info = httpx.get(f"{url}/v1/model").json()
        assert info["engine"] == meta["parameters"] and info["platform"] == "openvino"
        # The page offers the priors the server names, and only where the model has balanced logits.
        assert info["priors"] == list(REQUEST_PRIORS) and info["balanced_logits"] is True
    with serve() as url:
        params = httpx.get(f"{url}/v2/models/livt").json()["parameters"]
        assert params["reason"].startswith("measured at start-up")
        assert metric_value(url, "livt_engine_info", engine=params["engine"], reason=params["reason"]) == 1


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--backend", "ort", "--precision", "int8"], "no int8 file for ort beside it"),
        (["--backend", "ort", "--precision", "bf16"], "ONNX Runtime has no bf16"),
        (["--backend", "tensorrt"], "is an ONNX model: the tensorrt engine cannot run it"),
    ],
)
def test_an_engine_that_cannot_run_is_one_line_and_exit_2(
    artifact: Path, capsys, flags: list[str], needle: str
):
    assert main(["--model", str(artifact), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err
