"""The served model: a backend plus its validated metadata, and the request-time prior.

The artifact's logits are ``(z + offset_export) / T``. A request asking for another prior gets
``(z + prior_offset(pi, loss, tau)) / T`` with ``z = logits * T - offset_export`` recovered first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livt.prior import PriorError, prior_offset, resolve_prior
from livt.serving.artifact import ArtifactError, ArtifactInfo, parse_metadata, verify_checksum
from livt.serving.backends import Backend, open_backend
from livt.serving.settings import ServeSettings

MODEL_PRIOR = "model"  # the prior folded into the artifact: leave the logits as they are
REQUEST_PRIORS = (MODEL_PRIOR, "balanced", "train")  # the priors a request may name
PriorSpec = str | Sequence[float] | None


@dataclass(frozen=True)
class Prediction:
    """One image's outputs under the requested prior."""

    logits: np.ndarray
    probabilities: np.ndarray


class ServedModel:
    """A loaded artifact: run batches, move logits to a request's prior, pick the top classes."""

    def __init__(self, backend: Backend, info: ArtifactInfo):
        expected = (info.preprocess.channels, info.preprocess.img_size, info.preprocess.img_size)
        shape = tuple(backend.input_shape)
        if len(shape) != 4 or any(f is not None and f != e for f, e in zip(shape[1:], expected, strict=True)):
            raise ArtifactError(
                f"{info.path}: model input shape {list(backend.input_shape)} does not match "
                f"the metadata's preprocess (C, H, W) = {list(expected)}"
            )
        # The output width is often symbolic in the graph, so one image is run to read it.
        try:
            outputs = backend.run(np.zeros((1, *expected), dtype=np.float32))
        except Exception as exc:  # any backend fault: the model cannot serve
            raise ArtifactError(f"{info.path}: the model failed on one blank image: {exc}") from exc
        widths = sorted({out.shape[-1] if out.ndim == 2 and len(out) == 1 else -1 for out in outputs})
        if widths != [info.num_classes]:
            raise ArtifactError(
                f"{info.path}: the model gives {' and '.join(map(str, widths))} logits per image (outputs of "
                f"shapes {[list(out.shape) for out in outputs]}) but the metadata names {info.num_classes} "
                "classes"
            )
        self.backend = backend
        self.info = info

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The artifact's ``(logits, probabilities)`` for a float32 ``[N, C, H, W]`` batch."""
        return self.backend.run(batch)

    def resolve_prior(self, spec: PriorSpec) -> tuple[str, np.ndarray | None]:
        """``(mode, offset)`` for a request's prior; ``offset`` is None for the artifact's own.

        ``spec`` is ``"model"``/None (no change), ``"balanced"``, ``"train"`` or class frequencies.
        Raises ``PriorError`` with the reason for anything else (file paths are not accepted).
        """
        if spec is None or spec == MODEL_PRIOR:
            return self.info.prior_mode, None
        if isinstance(spec, str) and spec not in REQUEST_PRIORS:
            raise PriorError(f"prior must be 'model', 'balanced', 'train' or a list of numbers, got {spec!r}")
        mode, pi = resolve_prior(spec, self.info.class_counts)
        return mode, prior_offset(pi, self.info.loss, self.info.tau, self.info.num_classes)

    def apply_prior(
        self, logits: np.ndarray, probabilities: np.ndarray, offset: np.ndarray | None
    ) -> Prediction:
        """The artifact's outputs moved to the prior ``offset`` (None: returned unchanged)."""
        if offset is None:
            return Prediction(logits=logits, probabilities=probabilities)
        t = np.float32(self.info.temperature)
        moved = (logits * t - self.info.offset + offset) / t
        return Prediction(logits=moved, probabilities=softmax(moved))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most probable ``(index, probability)`` of one row, most probable first."""
    k = min(k, probabilities.shape[-1])
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), float(probabilities[i])) for i in order]


def load_model(settings: ServeSettings) -> ServedModel:
    """Verify, open and validate the artifact named by ``settings``; ``ArtifactError`` says why not."""
    path = settings.model
    sha256 = verify_checksum(path, settings.sha256, required=settings.require_checksum)
    backend = open_backend(
        path,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
        intra_op_spinning=settings.intra_op_spinning,
    )
    return ServedModel(backend, parse_metadata(backend.metadata_json, path, sha256))
