"""What every peer server runs per batch, so only the serving framework differs from livt-serve:
livt's own preprocessing (``livt.inference.preprocess``) and ONNX Runtime on the same artifact, with
livt's ``/v1/predict`` answer shape (the benchmark client checks its top class).

Imported inside the peers' own virtual environments (``benchmarks/bench_peers.py`` puts the
repository on their ``PYTHONPATH``), which hold the peer, onnxruntime, numpy and pillow only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from livt.inference.artifact import parse_metadata
from livt.inference.preprocess import preprocess_bytes

MAX_BATCH = 32  # livt-serve's default max_batch
MAX_DELAY_S = 0.005  # and its max_delay_ms
TOP_K = 5
MAX_PIXELS = 40_000_000


class Classifier:
    """The exported model in one ONNX Runtime session; ``LIVT_MODEL`` names it by default."""

    def __init__(self, model: str | None = None) -> None:
        import onnxruntime as ort

        path = Path(model or os.environ["LIVT_MODEL"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("LIVT_THREADS", "0"))  # 0: ORT's default, as livt's
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map["livt"]
        self.info = parse_metadata(raw, path, "0" * 64)

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess_bytes(data, self.info.preprocess, max_pixels=MAX_PIXELS)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"input": x})[0]

    def answer(self, row: np.ndarray) -> dict[str, Any]:
        """One image's entry of ``predictions``: its top classes."""
        top = np.argsort(-row)[:TOP_K]
        return {
            "top_k": [
                {"index": int(i), "label": self.info.classes[i], "probability": float(row[i])} for i in top
            ]
        }

    def predict(self, images: list[bytes]) -> list[dict[str, Any]]:
        """One prediction per image, as one batch."""
        x = np.stack([self.preprocess(data) for data in images])
        return [self.answer(row) for row in self.probabilities(x)]
