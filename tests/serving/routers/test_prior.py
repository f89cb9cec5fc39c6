"""``GET /v1/prior`` and the ``estimated`` request prior on a real trained, calibrated artifact."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from livt.label_shift import total_variation
from livt.serving import ServeSettings, create_app

from ..conftest import running_server

SHIFTED = np.array([0.46, 0.3, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03])


@pytest.fixture(scope="module")
def calibrated_artifact(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny run exported with BCTS calibration (balanced prior folded)."""
    export = pytest.importorskip("livt.export.cli")
    out = tmp_path_factory.mktemp("calibrated") / "model.onnx"
    args = ["--run", str(run_dir), "--out", str(out), "--calibrate", "bcts", "--eval-split", "none"]
    assert export.main(args) == 0
    return out


@pytest.fixture(scope="module")
def stream() -> tuple[list[bytes], np.ndarray]:
    """PNG files of synthetic test images whose labels follow ``SHIFTED`` (drawn with replacement)."""
    from livt.data import build_dataset

    test = build_dataset("synthetic", "test", num_classes=10, image_size=32, channels=3, n_test=40)
    rng = np.random.default_rng(0)
    labels = rng.choice(10, size=600, p=SHIFTED)
    by_class = {c: np.flatnonzero(np.asarray(test.targets) == c) for c in range(10)}
    files = []
    for y in labels:
        image, _ = test[int(rng.choice(by_class[int(y)]))]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        files.append(buf.getvalue())
    return files, labels


def _send(url: str, files: list[bytes], prior: str | None = None) -> list[dict]:
    answers = []
    for i in range(0, len(files), 32):
        data = {"top_k": "1", **({"prior": prior} if prior else {})}
        uploads = [("files", (f"{j}.png", f, "image/png")) for j, f in enumerate(files[i : i + 32])]
        res = httpx.post(f"{url}/v1/predict", files=uploads, data=data, timeout=60)
        assert res.status_code == 200, res.text
        answers.append(res.json())
    return answers


def _wait_for_estimate(url: str, images: int) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/v1/prior").json()
        if body["images"] >= images:
            return body
        time.sleep(0.05)
    raise AssertionError(f"no estimate over {images} images: {body}")


def test_estimate_converges_on_a_shifted_stream_over_http(calibrated_artifact: Path, stream):
    files, labels = stream
    settings = ServeSettings(
        model=calibrated_artifact, prior_window=1000, prior_min_images=300, prior_interval_s=0.05
    )
    with running_server(create_app(settings)) as url:
        body = httpx.get(f"{url}/v1/prior").json()
        assert body["estimate"] is None and body["images"] == 0 and body["ready"] is False
        # Cold start: too few images, so "estimated" falls back to balanced and says so.
        cold = _send(url, files[:64], prior="estimated")
        assert all(a["prior"] == "balanced" and "not ready" in a["prior_note"] for a in cold)

        _send(url, files[64:])
        body = _wait_for_estimate(url, len(files))
        truth = np.bincount(labels, minlength=10) / len(labels)
        estimate = np.asarray(body["estimate"])
        uniform = np.full(10, 0.1)
        # Far closer to the stream's prior than the balanced one is, with the two big classes found.
        assert total_variation(estimate, truth) < 0.5 * total_variation(uniform, truth)
        assert set(np.argsort(-estimate)[:2]) == {0, 1}
        assert body["ready"] and body["seen"] == len(files) and len(body["std"]) == 10
        assert body["distance_to_balanced"] == pytest.approx(total_variation(estimate, uniform))
        assert body["updated_at"].endswith("+00:00")

        warm = _send(url, files[:32], prior="estimated")[0]
        assert warm["prior"] == "estimated" and warm["prior_note"] is None
        metrics = httpx.get(f"{url}/metrics").text
        assert 'livt_prior_estimate{class="class_0"}' in metrics and "livt_prior_distance_train" in metrics
        assert 'livt_predicted_images_total{class="class_0"}' in metrics


def test_default_prior_estimated_serves_requests_that_name_none(calibrated_artifact: Path, stream):
    files, _ = stream
    settings = ServeSettings(model=calibrated_artifact, default_prior="estimated", prior_min_images=10_000)
    with running_server(create_app(settings)) as url:
        answer = _send(url, files[:8])[0]
        assert answer["prior"] == "balanced" and "0 of 10000 images" in answer["prior_note"]


def test_prior_window_off_answers_409(artifact: Path):
    with running_server(create_app(ServeSettings(model=artifact, prior_window=0))) as url:
        res = httpx.get(f"{url}/v1/prior")
        assert res.status_code == 409 and "--prior-window" in res.json()["error"]
        png = io.BytesIO()
        Image.new("RGB", (16, 16)).save(png, format="PNG")
        res = httpx.post(f"{url}/v1/predict?prior=estimated", content=png.getvalue(),
                         headers={"Content-Type": "image/png"})  # fmt: skip
        assert res.status_code == 400 and "prior estimation is off" in res.json()["error"]


def _ce_artifact(artifact: Path, tmp_path: Path) -> Path:
    """The tiny artifact relabelled as a plain cross-entropy model (no balanced logits)."""
    import onnx

    proto = onnx.load(str(artifact))
    entry = next(p for p in proto.metadata_props if p.key == "livt")
    meta = json.loads(entry.value)
    meta.update(loss="ce", tau=0.0, prior={**meta["prior"], "mode": "balanced", "pi": None})
    entry.value = json.dumps(meta)
    path = tmp_path / "ce.onnx"
    onnx.save(proto, str(path))
    return path


def test_model_without_balanced_logits_answers_409(artifact: Path, tmp_path: Path):
    with running_server(create_app(ServeSettings(model=_ce_artifact(artifact, tmp_path)))) as url:
        res = httpx.get(f"{url}/v1/prior")
        assert res.status_code == 409 and "no balanced logits" in res.json()["error"]


def test_default_prior_estimated_needs_a_window_and_balanced_logits(artifact: Path, tmp_path: Path):
    from pydantic import ValidationError

    from livt.inference.artifact import ArtifactError
    from livt.serving.state import load_model

    with pytest.raises(ValidationError, match="needs a prior window"):
        ServeSettings(model=artifact, prior_window=0, default_prior="estimated")
    with pytest.raises(ArtifactError, match="--default-prior estimated needs balanced logits"):
        load_model(ServeSettings(model=_ce_artifact(artifact, tmp_path), default_prior="estimated"))


def test_observe_false_leaves_the_images_out_of_the_window(artifact: Path):
    """Images sent again (another prior, another top_k) with observe=false are not counted twice."""
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 30, 200)).save(png, format="PNG")
    image = png.getvalue()
    tensor = {"name": "input", "shape": [2, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 2 * 3 * 16 * 16}
    with running_server(create_app(ServeSettings(model=artifact))) as url:
        predict = f"{url}/v1/predict"
        raw = {"content": image, "headers": {"Content-Type": "image/png"}}
        not_counted = [
            httpx.post(f"{predict}?observe=false", **raw),
            httpx.post(predict, files=[("files", ("a.png", image, "image/png"))], data={"observe": "false"}),
            httpx.post(predict, json={"images": [base64.b64encode(image).decode()], "observe": False}),
            httpx.post(
                f"{url}/v2/models/livt/infer", json={"inputs": [tensor], "parameters": {"observe": False}}
            ),
        ]
        assert [r.status_code for r in not_counted] == [200] * 4, [r.text for r in not_counted]
        assert httpx.get(f"{url}/v1/prior").json()["seen"] == 0
        # The default counts, whatever the body: 1 + 2 + 1 images.
        counted = [
            httpx.post(predict, **raw),
            httpx.post(predict, files=[("files", ("a.png", image, "image/png"))] * 2, data={"observe": "true"}),
            httpx.post(f"{url}/v2/models/livt/infer", json={"inputs": [{**tensor, "shape": [1, 3, 16, 16],
                       "data": tensor["data"][: 3 * 16 * 16]}]}),
        ]  # fmt: skip
        assert [r.status_code for r in counted] == [200] * 3, [r.text for r in counted]
        assert httpx.get(f"{url}/v1/prior").json()["seen"] == 4
        # A flag is a JSON boolean: the text "false" in JSON, or a number, is refused.
        for body in ({"images": [base64.b64encode(image).decode()], "observe": "false"},
                     {"images": [base64.b64encode(image).decode()], "observe": 0}):  # fmt: skip
            res = httpx.post(predict, json=body)
            assert res.status_code == 400 and "observe" in res.json()["error"], res.text
        res = httpx.post(f"{predict}?observe=no", **raw)
        assert res.status_code == 400 and "observe" in res.json()["error"], res.text
