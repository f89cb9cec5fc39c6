"""The service on a real ``livt-train`` + ``livt-export`` artifact: predictions equal the eval path."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from livt.serving import ServeSettings, create_app

from .conftest import image_bytes, ort_reference, running_server


def test_predictions_match_timm_eval_transform_and_onnxruntime(real_artifact: Path):
    from timm.data import create_transform

    from livt.serving.model import load_model

    info = load_model(ServeSettings(model=real_artifact)).info
    cfg = info.preprocess
    tf = create_transform(
        input_size=cfg.input_shape, is_training=False, interpolation=cfg.interpolation,
        crop_pct=cfg.crop_pct, mean=cfg.mean, std=cfg.std,
    )  # fmt: skip
    files = [image_bytes((45, 33), "PNG", seed=11), image_bytes((32, 50), "JPEG", seed=12)]
    batch = np.stack([tf(Image.open(io.BytesIO(f)).convert("RGB")).numpy() for f in files])
    _, expected = ort_reference(real_artifact, batch)

    with running_server(create_app(ServeSettings(model=real_artifact))) as url:
        uploads = [("files", (f"f{i}", f)) for i, f in enumerate(files)]
        res = httpx.post(
            f"{url}/v1/predict", files=uploads, data={"top_k": str(info.num_classes)}, timeout=30
        )
        assert res.status_code == 200, res.text
        assert res.json()["prior"] == info.prior_mode
        for pred, row in zip(res.json()["predictions"], expected, strict=True):
            got = np.zeros(info.num_classes)
            for item in pred["top_k"]:
                got[item["index"]] = item["probability"]
            np.testing.assert_allclose(got, row, atol=1e-5)
        assert httpx.get(f"{url}/v1/model").json()["classes"] == list(info.classes)
