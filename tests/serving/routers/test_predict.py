"""``/v1/predict`` and ``/v1/model`` against a live server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from livt.prior import prior_offset, resolve_prior

from ..conftest import CLASS_COUNTS, CLASSES, LOSS, TAU, TEMPERATURE, image_bytes, ort_reference


def _reference(artifact: Path, files: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The training-side path: timm's eval transform (torch) on the same files, then the ONNX model."""
    from timm.data import create_transform

    tf = create_transform(
        input_size=(3, 16, 16),
        is_training=False,
        interpolation="bicubic",
        crop_pct=0.875,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    batch = np.stack([tf(Image.open(io.BytesIO(f)).convert("RGB")).numpy() for f in files])
    return ort_reference(artifact, batch)


def _predict(url: str, files: list[bytes], **form) -> httpx.Response:
    uploads = [("files", (f"img{i}", data)) for i, data in enumerate(files)]
    return httpx.post(f"{url}/v1/predict", files=uploads, data=form, timeout=30)


def test_png_and_jpeg_predictions_match_the_eval_path(server: str, artifact: Path):
    files = [
        image_bytes((37, 23), "PNG", seed=1),
        image_bytes((20, 45), "JPEG", seed=2),
        image_bytes((16, 16), "PNG", seed=3),
    ]
    res = _predict(server, files, top_k="4")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"]["name"] == "livt" and len(body["model"]["version"]) == 12
    assert body["prior"] == "train"  # the artifact's own, unchanged
    _, probabilities = _reference(artifact, files)
    for pred, expected in zip(body["predictions"], probabilities, strict=True):
        got = np.zeros(len(CLASSES))
        for item in pred["top_k"]:
            assert item["label"] == CLASSES[item["index"]]
            got[item["index"]] = item["probability"]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert [i["probability"] for i in pred["top_k"]] == sorted(
            (i["probability"] for i in pred["top_k"]), reverse=True
        )
    assert set(body["timing"]) >= {"queue_ms", "inference_ms", "total_ms"}


def test_request_prior_moves_the_logits(server: str, artifact: Path):
    files = [image_bytes((30, 30), "PNG", seed=5)]
    logits, _ = _reference(artifact, files)
    _, train_pi = resolve_prior("train", CLASS_COUNTS)
    # The artifact's logits are c + log pi_train (Bayes' rule); c is the calibrated balanced logit.
    calibrated = logits - prior_offset(train_pi, LOSS, TAU, len(CLASSES), "bayes")
    custom = [0.1, 0.2, 0.3, 0.4]
    for prior, offset in [
        ("balanced", np.zeros(len(CLASSES))),
        ("train", np.log(train_pi)),
        (custom, np.log(custom)),
    ]:
        moved = calibrated + offset
        expected = np.exp(moved - moved.max()) / np.exp(moved - moved.max()).sum()
        res = httpx.post(
            f"{server}/v1/predict",
            json={"images": [base64.b64encode(files[0]).decode()], "top_k": 4, "prior": prior},
            timeout=30,
        )
        assert res.status_code == 200, res.text
        got = np.zeros(len(CLASSES))
        for item in res.json()["predictions"][0]["top_k"]:
            got[item["index"]] = item["probability"]
        np.testing.assert_allclose(got, expected[0], atol=1e-5)
        assert res.json()["prior"] == (prior if isinstance(prior, str) else "custom")


def test_model_metadata(server: str):
    body = httpx.get(f"{server}/v1/model").json()
    assert body["classes"] == CLASSES
    assert (
        body["calibration"]["temperature"] == TEMPERATURE and body["calibration"]["method"] == "temperature"
    )
    assert body["prior"]["mode"] == "train"
    assert body["metrics"]["top1"] == 0.5
    assert body["platform"] == "onnxruntime_onnx"


def _tiny_png(mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (64, 64)).save(buf, format="PNG")
    return buf.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(image_bytes((64, 64)))
    data[200:260] = bytes(60)  # inside the compressed pixel data
    return bytes(data)


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"files": [b""]}, 400, "empty"),
        ({"files": [_corrupt_png()]}, 400, "corrupt"),
        ({"files": [b"GIF89a but not really"]}, 415, "accepted format"),
        ({"files": [b"%PDF-1.4 not an image"]}, 415, "accepted format"),
        ({"files": [image_bytes((64, 64))[:2000]]}, 400, "truncated"),
        ({"files": [_tiny_png()], "top_k": "0"}, 400, "top_k"),
        ({"files": [_tiny_png()], "top_k": "1000"}, 400, "top_k"),
        ({"files": [_tiny_png()], "prior": "posterior"}, 400, "prior"),
        ({"files": [_tiny_png()], "prior": "[1, 2]"}, 400, "at least 4 items"),
        ({"files": [_tiny_png()], "prior": "[1, -1, 1, 1]"}, 400, "greater than or equal to 0"),
        ({"files": [_tiny_png()], "prior": "[1, 2"}, 400, "JSON"),
        ({"files": [_tiny_png()] * 33}, 413, "limit is 32"),
    ],
)
def test_bad_multipart_input_is_a_4xx_json_error(server: str, kwargs, status, needle):
    files = kwargs.pop("files")
    res = _predict(server, files, **kwargs)
    assert res.status_code == status, res.text
    assert needle in res.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"images": []}, 400, "images"),
        ({"images": ["***"]}, 400, "base64"),
        ({"images": ["aGVsbG8="], "extra": 1}, 400, "extra"),
        ({"images": ["aGVsbG8="], "top_k": "many"}, 400, "top_k"),
        ({"images": [base64.b64encode(_tiny_png()).decode()], "prior": [float("inf")] * 4}, 400, "finite"),
    ],
)
def test_bad_json_input_is_a_4xx_json_error(server: str, body, status, needle):
    # json.dumps writes Infinity for inf: a client may send it.
    res = httpx.post(
        f"{server}/v1/predict",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert res.status_code == status, res.text
    assert needle in res.json()["error"]


def test_malformed_bodies(server: str):
    res = httpx.post(
        f"{server}/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert res.status_code == 400 and "error" in res.json()
    res = httpx.post(f"{server}/v1/predict", content=b"raw", headers={"content-type": "text/plain"})
    assert res.status_code == 415
    assert all(kind in res.json()["error"] for kind in ("image/png", "multipart", "text/plain"))
    res = httpx.post(f"{server}/v1/predict", content=b"raw")
    assert res.status_code == 415 and "none" in res.json()["error"]
    res = httpx.post(f"{server}/v1/predict", files=[("other", ("a", b"x"))])
    assert res.status_code == 400 and "no images" in res.json()["error"]
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200


def test_data_url_and_alpha_images(server: str):
    data = "data:image/png;base64," + base64.b64encode(_tiny_png("RGBA")).decode()
    res = httpx.post(f"{server}/v1/predict", json={"images": [data], "top_k": 2})
    assert res.status_code == 200, res.text
    assert len(res.json()["predictions"][0]["top_k"]) == 2


def _post_image(url: str, data: bytes, content_type: str = "image/png", **query) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict", content=data, params=query, headers={"content-type": content_type}, timeout=30
    )


def _probabilities(body: dict) -> np.ndarray:
    """The full probability row of a one-image response asked for every class."""
    got = np.zeros(len(CLASSES))
    for item in body["predictions"][0]["top_k"]:
        assert item["label"] == CLASSES[item["index"]]
        got[item["index"]] = item["probability"]
    return got


def test_large_and_many_images_are_decoded_off_the_event_loop_alike(server: str, artifact: Path):
    # Past 64 x 64 pixels in all, a request's images decode in a worker thread: same predictions.
    files = [
        image_bytes((100, 90), "PNG", seed=11),
        *(image_bytes((30, 30), "PNG", seed=s) for s in range(6)),
    ]
    res = _predict(server, files, top_k="4")
    assert res.status_code == 200, res.text
    _, probabilities = _reference(artifact, files)
    for pred, expected in zip(res.json()["predictions"], probabilities, strict=True):
        got = np.zeros(len(CLASSES))
        for item in pred["top_k"]:
            got[item["index"]] = item["probability"]
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("PNG", "application/octet-stream"),
        ("JPEG", "image/png"),
    ],
)
def test_image_body_predictions_match_the_eval_path(server: str, artifact: Path, fmt: str, content_type: str):
    # The declared image type is not trusted: the decoder reads the format from the bytes.
    data = image_bytes((37, 23), fmt, seed=7)
    res = _post_image(server, data, content_type, top_k=4)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["prior"] == "train" and len(body["predictions"]) == 1
    _, probabilities = _reference(artifact, [data])
    np.testing.assert_allclose(_probabilities(body), probabilities[0], atol=1e-5)
    assert len(_post_image(server, data).json()["predictions"][0]["top_k"]) == 4  # all of 4 classes


def test_image_body_takes_the_prior_as_a_query_parameter(server: str):
    data = image_bytes((30, 30), "PNG", seed=5)
    custom = [0.1, 0.2, 0.3, 0.4]
    multipart = _predict(server, [data], top_k="4", prior=json.dumps(custom)).json()
    res = _post_image(server, data, top_k=4, prior=json.dumps(custom))
    assert res.status_code == 200, res.text
    assert res.json()["prior"] == "custom"
    np.testing.assert_allclose(_probabilities(res.json()), _probabilities(multipart), atol=1e-6)
    balanced = _post_image(server, data, top_k=4, prior="balanced").json()
    assert balanced["prior"] == "balanced"
    assert not np.allclose(_probabilities(balanced), _probabilities(res.json()))


@pytest.mark.parametrize(
    ("data", "query", "status", "needle"),
    [
        (b"", {}, 400, "empty"),
        (_corrupt_png(), {}, 400, "corrupt"),
        (b"%PDF-1.4 not an image", {}, 415, "accepted format"),
        (image_bytes((64, 64))[:2000], {}, 400, "truncated"),
        (_tiny_png(), {"top_k": "0"}, 400, "query parameter top_k"),
        (_tiny_png(), {"top_k": "1000"}, 400, "top_k"),
        (_tiny_png(), {"top_k": "many"}, 400, "top_k"),
        (_tiny_png(), {"prior": "posterior"}, 400, "prior"),
        (_tiny_png(), {"prior": "[1, 2]"}, 400, "at least 4 items"),
        (_tiny_png(), {"prior": "[1, 2"}, 400, "JSON"),
        (_tiny_png(), {"topk": "3"}, 400, "unknown query parameter 'topk'"),
    ],
)
def test_bad_image_body_is_a_4xx_json_error(server: str, data: bytes, query: dict, status: int, needle: str):
    res = _post_image(server, data, **query)
    assert res.status_code == status, res.text
    assert needle in res.json()["error"]
