"""``livt.Predictor``: the server's numbers without a server, for files, bytes, PIL images and arrays."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from livt import Predictor
from livt.inference.preprocess import ImageError
from livt.prior import PriorError

from ..serving.conftest import CLASSES, image_bytes


@pytest.fixture(scope="module")
def predictor(artifact: Path) -> Predictor:
    return Predictor(artifact)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (size, fmt) in enumerate([((30, 30), "PNG"), ((45, 17), "JPEG"), ((16, 16), "PNG")]):
        path = folder / f"img{i}.{fmt.lower()}"
        path.write_bytes(image_bytes(size, fmt, seed=40 + i))
        paths.append(path)
    return paths


def _served(url: str, path: Path, prior: str) -> np.ndarray:
    res = httpx.post(
        f"{url}/v1/predict",
        json={
            "images": [base64.b64encode(path.read_bytes()).decode()],
            "top_k": len(CLASSES),
            "prior": prior,
        },
        timeout=30,
    )
    assert res.status_code == 200, res.text
    got = np.zeros(len(CLASSES))
    for item in res.json()["predictions"][0]["top_k"]:
        got[item["index"]] = item["probability"]
    return got


@pytest.mark.parametrize("prior", ["model", "balanced", "train"])
def test_same_probabilities_as_v1_predict(predictor: Predictor, serve, files: list[Path], prior: str):
    results = predictor.predict(files, top_k=len(CLASSES), prior=prior)
    with serve() as url:
        for path, result in zip(files, results, strict=True):
            np.testing.assert_allclose(result.probabilities, _served(url, path, prior), atol=1e-6)
            assert result.source == str(path) and result.prior == ("train" if prior == "model" else prior)
            assert result.label == result.top_k[0].label and result.probability == result.top_k[0].probability


def test_every_input_kind_gives_the_same_answer(predictor: Predictor, files: list[Path]):
    path = files[0]
    pil = Image.open(io.BytesIO(path.read_bytes()))
    array = np.asarray(pil.convert("RGB"))
    outs = [r.probabilities for r in predictor.predict([path, str(path), path.read_bytes(), pil, array])]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-7)
    grey = predictor.predict([np.asarray(pil.convert("L"))])[0]
    assert grey.probabilities.shape == (len(CLASSES),)


def test_batching_does_not_change_the_numbers(predictor: Predictor, files: list[Path]):
    one = predictor.logits(files, batch_size=1)
    many = predictor.logits(files, batch_size=32)
    np.testing.assert_allclose(one, many, atol=1e-5)
    seen = []
    predictor.logits(files, batch_size=2, on_batch=seen.append)
    assert seen == [2, 1]


def test_estimated_prior_comes_from_the_images_of_the_call(predictor: Predictor, files: list[Path]):
    estimate = predictor.estimate_prior(files * 5, bootstrap=0)
    assert estimate.images == 15 and np.isclose(estimate.pi.sum(), 1.0)
    results = predictor.predict(files, prior="estimated")
    assert {r.prior for r in results} == {"estimated"}


def test_bad_inputs_name_the_problem(predictor: Predictor, tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"broken\.png"):
        predictor.predict([broken])
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict([np.zeros((4, 4), dtype=np.float32)])
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        predictor.predict([np.zeros((4, 4, 2), dtype=np.uint8)])
    with pytest.raises(TypeError, match="a path, file bytes"):
        predictor.predict([42])
    with pytest.raises(PriorError):
        predictor.predict([np.zeros((4, 4), dtype=np.uint8)], prior="sideways")
