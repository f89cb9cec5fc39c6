"""The image a serving benchmark sends, and what raw ONNX Runtime predicts for it.

By default a Fashion-MNIST test image when the model takes 28 x 28 greyscale input and the data set
is installed, else random pixels at the model's input size, as PNG (or a given file). ``reference``
preprocesses it as the server does, so a benchmark can check each served answer against raw ONNX
Runtime's top class.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from livt.inference.artifact import ArtifactInfo, parse_metadata
from livt.inference.preprocess import preprocess_bytes

FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@dataclass(frozen=True)
class BenchImage:
    data: bytes
    source: str

    @property
    def content_type(self) -> str:
        return f"image/{Image.open(io.BytesIO(self.data)).format.lower()}"

    def describe(self) -> dict:
        img = Image.open(io.BytesIO(self.data))
        return {
            "source": self.source,
            "format": img.format,
            "size": list(img.size),
            "mode": img.mode,
            "bytes": len(self.data),
        }


def _fashion_mnist_image(index: int) -> np.ndarray:
    """Image ``index`` of the Fashion-MNIST test IDX file, read without livt.data (which needs torch)."""
    with gzip.open(FASHION_MNIST_TEST, "rb") as f:
        header = f.read(16)
        rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        f.seek(16 + index * rows * cols)
        return np.frombuffer(f.read(rows * cols), dtype=np.uint8).reshape(rows, cols)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def choose_image(info: ArtifactInfo, path: Path | None) -> BenchImage:
    """The file each request sends: ``path``, a real Fashion-MNIST image, or random pixels."""
    if path is not None:
        return BenchImage(path.read_bytes(), str(path))
    cfg = info.preprocess
    if (cfg.img_size, cfg.channels) == (28, 1) and FASHION_MNIST_TEST.is_file():
        return BenchImage(_png(_fashion_mnist_image(0)), f"{FASHION_MNIST_TEST} image 0")
    shape = (cfg.img_size, cfg.img_size) if cfg.channels == 1 else (cfg.img_size, cfg.img_size, 3)
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    return BenchImage(_png(pixels), "random pixels (seed 0)")


def reference(model: Path, path: Path | None) -> tuple[BenchImage, np.ndarray, int]:
    """The image to send, preprocessed as the server does it, and raw ONNX Runtime's top class for it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=ort.get_available_providers())
    info = parse_metadata(session.get_modelmeta().custom_metadata_map["livt"], model, "0" * 64)
    image = choose_image(info, path)
    x = preprocess_bytes(image.data, info.preprocess, max_pixels=10**8)
    _, probabilities = session.run(["logits", "probabilities"], {"input": x[None]})
    return image, x, int(np.argmax(probabilities[0]))
