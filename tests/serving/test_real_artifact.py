"""The service on a real ``livt-train`` + ``livt-export`` artifact: predictions equal the eval path."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from livt.serving import ServeSettings, create_app

from .conftest import image_bytes, ort_reference, running_server


def test_predictions_match_timm_eval_transform_and_onnxruntime(real_artifact: Path):
    from timm.data import create_transform

    from livt.serving.state import load_model

    # ONNX Runtime fp32 on both sides: this compares the preprocessing, not engines (auto may pick bf16).
    info = load_model(ServeSettings(model=real_artifact, backend="ort")).info
    cfg = info.preprocess
    tf = create_transform(
        input_size=cfg.input_shape, is_training=False, interpolation=cfg.interpolation,
        crop_pct=cfg.crop_pct, mean=cfg.mean, std=cfg.std,
    )  # fmt: skip
    files = [image_bytes((45, 33), "PNG", seed=11), image_bytes((32, 50), "JPEG", seed=12)]
    batch = np.stack([tf(Image.open(io.BytesIO(f)).convert("RGB")).numpy() for f in files])
    _, expected = ort_reference(real_artifact, batch)

    with running_server(create_app(ServeSettings(model=real_artifact, backend="ort"))) as url:
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


def test_served_predictions_equal_livt_train_evaluate(real_artifact: Path, tmp_path: Path):
    """Issue 5: the same image files through ``livt-train evaluate`` and the server give the same answer."""
    from livt.serving.state import load_model
    from livt.training.cli import main as train_main

    info = load_model(ServeSettings(model=real_artifact, backend="ort")).info
    assert info.prior_mode == "balanced" and info.calibration is None  # so both sides are softmax(z)
    first, last = info.classes[0], info.classes[-1]
    # Odd sizes (crop and resize both matter), both formats, and a greyscale file the run sees as RGB.
    # Then the files whose decoding goes beyond convert(): EXIF rotation, transparency, 16 bits.
    files = {
        f"val/{first}/odd.png": image_bytes((45, 33), "PNG", seed=21),
        f"val/{first}/wide.jpg": image_bytes((61, 17), "JPEG", seed=22),
        f"val/{last}/grey.png": image_bytes((29, 40), "PNG", mode="L", seed=23),
        f"val/{last}/tall.jpeg": image_bytes((19, 70), "JPEG", seed=24),
        f"val/{first}/rotated.jpg": _exif_rotated_jpeg((50, 20), seed=25),
        f"val/{first}/alpha.png": _transparent_png((36, 28), seed=26),
        f"val/{last}/sixteen.png": _sixteen_bit_png((33, 47), seed=27),
    }
    root = tmp_path / "images"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(real_artifact.parent), "--dataset", "imagefolder", "--data-root",
            str(root), "--split", "val", "--out", str(out), "--device", "cpu", "--precision", "fp32",
            "--workers", "0", "--quiet"]  # fmt: skip
    assert train_main(args) == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    evaluated = {Path(line["path"]).relative_to(root).as_posix(): line for line in lines}
    assert set(evaluated) == set(files)
    # The folder names are the run's classes, so evaluate scored them as labels.
    assert evaluated[f"val/{last}/grey.png"]["target"] == info.num_classes - 1
    assert (out / "metrics.json").is_file()

    with running_server(create_app(ServeSettings(model=real_artifact, backend="ort"))) as url:
        uploads = [("files", (Path(name).name, data)) for name, data in files.items()]
        form = {"top_k": str(info.num_classes), "prior": "balanced"}
        res = httpx.post(f"{url}/v1/predict", files=uploads, data=form, timeout=30)
    assert res.status_code == 200, res.text
    for name, pred in zip(files, res.json()["predictions"], strict=True):
        served = np.zeros(info.num_classes)
        for item in pred["top_k"]:
            served[item["index"]] = item["probability"]
        np.testing.assert_allclose(served, evaluated[name]["probabilities"], atol=1e-5, err_msg=name)
        assert pred["top_k"][0]["label"] == evaluated[name]["label"], name


def _exif_rotated_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A JPEG stored ``size`` (w, h) that viewers show rotated 90 degrees (EXIF orientation 6)."""
    img = Image.open(io.BytesIO(image_bytes(size, "PNG", seed=seed)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


def _transparent_png(size: tuple[int, int], seed: int) -> bytes:
    """RGBA noise, a third of it fully transparent (so its hidden colour must not show)."""
    rgba = np.asarray(Image.open(io.BytesIO(image_bytes(size, "PNG", mode="RGBA", seed=seed)))).copy()
    rgba[..., 3] = np.where(rgba[..., 3] < 85, 0, rgba[..., 3])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _sixteen_bit_png(size: tuple[int, int], seed: int) -> bytes:
    """16-bit greyscale noise over the whole range (clipping instead of rescaling would saturate it)."""
    wide = np.random.default_rng(seed).integers(0, 65536, size=(size[1], size[0]), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    return buf.getvalue()


def test_exported_checksum_is_sha256sum_format_and_guards_serving(
    real_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    from livt.serving.cli import main as serve_main
    from livt.serving.state import load_model

    sidecar = real_artifact.with_name(real_artifact.name + ".sha256")
    digest = hashlib.sha256(real_artifact.read_bytes()).hexdigest()
    assert sidecar.read_text() == f"{digest}  {real_artifact.name}\n"
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", sidecar.name], cwd=sidecar.parent, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr

    # A copy with its sidecar serves; the same copy with one byte changed is refused at start.
    copy = tmp_path / real_artifact.name
    shutil.copy(real_artifact, copy)
    shutil.copy(sidecar, tmp_path / sidecar.name)
    assert load_model(ServeSettings(model=copy)).info.sha256 == digest
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert serve_main(["--model", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and sidecar.name in err
