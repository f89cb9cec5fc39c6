"""Fixtures: a tiny real ONNX artifact (built here with torch) and live uvicorn servers on it."""

from __future__ import annotations

import io
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from harness.server import free_port
from PIL import Image

CLASSES = ["ant", "bee", "cat", "dog"]
CLASS_COUNTS = [500, 120, 30, 6]
PREPROCESS = {
    "img_size": 16,
    "channels": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "resize": 18,  # floor(16 / 0.875)
    "crop_pct": 0.875,
    "interpolation": "bicubic",
}
LOSS, TAU, TEMPERATURE = "bal-bce", 1.0, 1.5


def build_tiny_artifact(path: Path, *, nan: bool = False, batch_one_only: bool = False) -> Path:
    """Export a small conv net to ``path`` following docs/architecture.md: calibrated by a temperature,
    the train prior folded by Bayes' rule (``logits = c / T + log pi``).

    ``nan``: every output is NaN. ``batch_one_only``: a broken export whose graph baked in batch
    size 1 (a reshape to ``[1, -1]``): ONNX Runtime runs one image and fails on more at run time.
    """
    import onnx
    import torch
    from torch import nn

    from livt.prior import prior_offset, resolve_prior

    _, pi = resolve_prior("train", CLASS_COUNTS)
    offset = prior_offset(pi, LOSS, TAU, len(CLASSES), "bayes")

    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
            self.head = nn.Linear(8, len(CLASSES))
            self.register_buffer("offset", torch.from_numpy(offset))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.body(x)
            if batch_one_only:
                features = features.reshape(1, -1)
            logits = self.head(features) * 4 / TEMPERATURE + self.offset
            if nan:
                logits = logits * float("nan")
            return logits, logits.softmax(-1)

    model = Folded().eval()
    example = torch.zeros(1 if batch_one_only else 2, 3, PREPROCESS["img_size"], PREPROCESS["img_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: small and quick
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits", "probabilities"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    meta = {
        "format_version": 2,
        "livt_version": "0.1.0",
        "model_name": "tiny_conv",
        "model": {"name": "tiny_conv", "num_classes": len(CLASSES)},
        "classes": CLASSES,
        "class_counts": CLASS_COUNTS,
        "loss": LOSS,
        "tau": TAU,
        "input": {"name": "input", "shape": [None, 3, 16, 16], "dtype": "float32"},
        "outputs": ["logits", "probabilities"],
        "preprocess": PREPROCESS,
        "prior": {
            "mode": "train",
            "rule": "bayes",
            "source": None,
            "pi": pi.tolist(),
            "offset": offset.tolist(),
        },
        "calibration": {
            "method": "temperature",
            "temperature": TEMPERATURE,
            "scale": [1 / TEMPERATURE] * len(CLASSES),
            "bias": [0.0] * len(CLASSES),
            "split": "val",
            "images": 100,
        },
        "quantization": None,
        "metrics": {"top1": 0.5, "balanced_acc": 0.4},
        "source_sha256": "0" * 64,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "livt", json.dumps(meta)
    onnx.save(proto, str(path))
    return path


def ort_reference(path: Path, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The artifact's outputs, computed by ONNX Runtime directly (no server, no batching)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"input": batch})
    return logits, probabilities


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("artifact") / "model.onnx")


@pytest.fixture(scope="session")
def nan_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("nan") / "model.onnx", nan=True)


@pytest.fixture(scope="session")
def batch_one_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("batch-one") / "model.onnx", batch_one_only=True)


@contextmanager
def running_server(app, settings=None) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on a free 127.0.0.1 port in a thread; yield its base URL.

    With ``settings``, uvicorn is configured as ``livt-serve`` configures it (``uvicorn_config``).
    """
    import uvicorn

    from livt.serving.server import uvicorn_config

    port = free_port()
    if settings is None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    else:
        settings = settings.model_copy(update={"host": "127.0.0.1", "port": port, "log_level": "warning"})
        config = uvicorn_config(app, settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serve(artifact: Path) -> Callable:
    """``with serve(loaded=None, **settings) as url:`` runs a server (``loaded``: a ready ServedModel)."""
    from livt.serving import ServeSettings, create_app

    def _serve(loaded=None, **overrides):
        settings = ServeSettings(**{"model": artifact, **overrides})
        return running_server(create_app(settings, model=loaded), settings)

    return _serve


@pytest.fixture(scope="session")
def server(serve: Callable) -> Iterator[str]:
    """The shared server with default settings."""
    with serve() as url:
        yield url


def image_bytes(size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    """A real image file of ``size`` (w, h) with random content, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def metric_value(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` with these labels, scraped from ``url``/metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture(scope="session")
def real_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: ``livt-train finetune --recipe synthetic-tiny`` (1 epoch) then ``livt-export``."""
    import subprocess
    import sys

    pytest.importorskip("livt.export.cli")
    run = tmp_path_factory.mktemp("real") / "run"
    steps = [
        ["livt.training.cli", "finetune", "--recipe", "synthetic-tiny", "--from-scratch", "--epochs", "1",
         "--out", str(run), "--quiet"],
        ["livt.export.cli", "--run", str(run), "--out", str(run / "model.onnx"), "--format", "onnx",
         "--eval-split", "none", "--verify-samples", "16", "--calibrate", "none"],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run([sys.executable, "-m", *step], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    return run / "model.onnx"
