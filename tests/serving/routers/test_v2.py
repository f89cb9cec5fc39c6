"""Open Inference Protocol v2: a stock ``tritonclient.http`` client, and raw protocol errors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from ..conftest import CLASSES, ort_reference

tritonhttp = pytest.importorskip("tritonclient.http")


@pytest.fixture()
def client(server: str):
    c = tritonhttp.InferenceServerClient(url=server.removeprefix("http://"))
    yield c
    c.close()


def _batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 16, 16)).astype(np.float32)


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("livt")
    assert not client.is_model_ready("other")
    meta = client.get_model_metadata("livt")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_onnxruntime(client, artifact: Path, binary: bool):
    batch = _batch()
    inp = tritonhttp.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    outputs = [
        tritonhttp.InferRequestedOutput("probabilities", binary_data=binary),
        tritonhttp.InferRequestedOutput("logits", binary_data=binary),
    ]
    result = client.infer("livt", [inp], outputs=outputs)
    logits, probabilities = ort_reference(artifact, batch)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-6)


def test_infer_without_requested_outputs_returns_both_binary(client, artifact: Path):
    batch = _batch(2)
    inp = tritonhttp.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    result = client.infer("livt", [inp])
    np.testing.assert_allclose(result.as_numpy("logits"), ort_reference(artifact, batch)[0], atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_classification_extension(client, artifact: Path, binary: bool):
    batch = _batch(2)
    inp = tritonhttp.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=True)
    out = tritonhttp.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = client.infer("livt", [inp], outputs=[out])
    labels = result.as_numpy("probabilities")
    assert labels.shape == (2, 3)
    _, probabilities = ort_reference(artifact, batch)
    for row, expected in zip(labels, probabilities, strict=True):
        entries = [(e.decode() if isinstance(e, bytes) else e).split(":") for e in row]
        indices = [int(i) for _, i, _ in entries]
        assert indices == list(np.argsort(-expected)[:3])
        assert [label for _, _, label in entries] == [CLASSES[i] for i in indices]
        np.testing.assert_allclose([float(s) for s, _, _ in entries], expected[indices], atol=1e-5)


def test_unknown_model_is_404(client, server: str):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    res = httpx.post(f"{server}/v2/models/nope/infer", json={"inputs": []})
    assert res.status_code == 404 and "unknown model" in res.json()["error"]


def _infer_json(server: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{server}/v2/models/livt/infer", content=json.dumps(body), **kwargs)


def _input(shape, data=None, datatype="FP32", name="input") -> dict:
    if data is None:
        data = [0.0] * int(np.prod(shape))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"inputs": [_input([1, 3, 8, 8])]}, 400, "input shape"),
        ({"inputs": [_input([1, 3, 16, 16], datatype="FP16")]}, 400, "FP32"),
        ({"inputs": [_input([1, 3, 16, 16], name="x")]}, 400, "inputs.0.name: Input should be 'input'"),
        ({"inputs": [_input([1, 3, 16, 16], data=[0.0] * 5)]}, 400, "768"),
        ({"inputs": [_input([1, 3, 16, 16], data=["a"] * 768)]}, 400, "valid number"),
        ({"inputs": [_input([1, 3, 16, 16], data=[float("nan")] * 768)]}, 400, "finite number"),
        ({"inputs": [_input([40, 3, 16, 16])]}, 413, "limit"),
        (
            {"inputs": [_input([1, 3, 16, 16])], "outputs": [{"name": "features"}]},
            400,
            "'logits' or 'probabilities'",
        ),
        (
            {
                "inputs": [_input([1, 3, 16, 16])],
                "outputs": [{"name": "logits", "parameters": {"classification": "x"}}],
            },
            400,
            "classification",
        ),
        ({"inputs": "nope"}, 400, "inputs"),
        (
            {"inputs": [_input([1, 3, 16, 16])], "outputs": [{"name": "logits"}, {"name": "logits"}]},
            400,
            "'logits' is requested more than once",
        ),
        ({"inputs": [_input([1, 3, 16, 16])], "outputs": [{"name": "logits"}] * 1000}, 400, "at most 2"),
    ],
)
def test_bad_infer_requests_are_400(server: str, body, status, needle):
    res = _infer_json(server, body)
    assert res.status_code == status, res.text
    assert needle in res.json()["error"]


def test_bad_binary_framing(server: str):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 16, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 3072},
                }
            ]
        }
    ).encode()
    ok = httpx.post(
        f"{server}/v2/models/livt/infer",
        content=header + bytes(3072),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert ok.status_code == 200, ok.text
    short = httpx.post(
        f"{server}/v2/models/livt/infer",
        content=header + bytes(100),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]
    bad = httpx.post(
        f"{server}/v2/models/livt/infer", content=header, headers={"Inference-Header-Content-Length": "x"}
    )
    assert bad.status_code == 400


def test_prior_parameter(server: str, artifact: Path):
    batch = _batch(1)
    body = {
        "inputs": [_input([1, 3, 16, 16], data=batch.ravel().tolist())],
        "parameters": {"prior": "balanced"},
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
    }
    balanced = np.array(_infer_json(server, body).json()["outputs"][0]["data"])
    _, as_exported = ort_reference(artifact, batch)
    assert not np.allclose(balanced, as_exported[0], atol=1e-3)
    np.testing.assert_allclose(balanced.sum(), 1.0, atol=1e-5)
