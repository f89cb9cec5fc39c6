"""The served model: a backend plus its validated metadata, and the request-time prior.

The artifact's logits are ``c + offset_export``: ``c`` the calibrated balanced logits, the offset
that of the prior folded at export. A request asking for another prior gets ``c + prior_offset(pi)``
under the artifact's prior rule, with ``c = logits - offset_export`` recovered first (no
temperature is involved: calibration happened before the prior, inside the artifact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livt.prior import PriorError, has_balanced_logits, prior_offset, resolve_prior, softmax
from livt.serving.artifact import ArtifactError, ArtifactInfo, parse_metadata, verify_checksum
from livt.serving.backends import Backend, open_backend
from livt.serving.settings import ServeSettings

MODEL_PRIOR = "model"  # the prior folded into the artifact: leave the logits as they are
ESTIMATED_PRIOR = "estimated"  # the prior estimated from the traffic (livt.serving.prior_monitor)
# The priors a request may name ("estimated" is resolved by the serving state, the rest here).
REQUEST_PRIORS = (MODEL_PRIOR, "balanced", "train", ESTIMATED_PRIOR)
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

    @property
    def has_balanced_logits(self) -> bool:
        """Whether a target prior can be applied (the model was trained with a balanced loss)."""
        return has_balanced_logits(self.info.loss, self.info.tau)

    def balanced_logits(self, logits: np.ndarray) -> np.ndarray:
        """The calibrated balanced logits behind the artifact's ``logits``."""
        return logits - self.info.offset

    def prior_offset(self, pi: np.ndarray | None) -> np.ndarray:
        """The offset that moves the calibrated balanced logits to prior ``pi`` (None: balanced)."""
        return prior_offset(pi, self.info.loss, self.info.tau, self.info.num_classes, self.info.prior_rule)

    def resolve_prior(self, spec: PriorSpec) -> tuple[str, np.ndarray | None]:
        """``(mode, offset)`` for a request's prior; ``offset`` is None for the artifact's own.

        ``spec`` is ``"model"``/None (no change), ``"balanced"``, ``"train"`` or class frequencies.
        Raises ``PriorError`` with the reason for anything else (file paths are not accepted).
        """
        if spec is None or spec == MODEL_PRIOR:
            return self.info.prior_mode, None
        if isinstance(spec, str) and spec not in ("balanced", "train"):
            raise PriorError(
                f"prior must be 'model', 'balanced', 'train', 'estimated' or a list of numbers, got {spec!r}"
            )
        mode, pi = resolve_prior(spec, self.info.class_counts)
        return mode, self.prior_offset(pi)

    def apply_prior(
        self, logits: np.ndarray, probabilities: np.ndarray, offset: np.ndarray | None
    ) -> Prediction:
        """The artifact's outputs moved to the prior ``offset`` (None: returned unchanged)."""
        if offset is None:
            return Prediction(logits=logits, probabilities=probabilities)
        moved = self.balanced_logits(logits) + offset
        return Prediction(logits=moved, probabilities=softmax(moved))


def top_k(probabilities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most probable ``(index, probability)`` of one row, most probable first."""
    k = min(k, probabilities.shape[-1])
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), float(probabilities[i])) for i in order]


def open_model(
    path: Path,
    *,
    sha256: str | None = None,
    require_checksum: bool = False,
    providers: list[str] | None = None,
    intra_op_threads: int = 0,
    intra_op_spinning: bool = False,
) -> ServedModel:
    """Verify, open and validate the artifact at ``path``; ``ArtifactError`` says why not."""
    path = Path(path)
    digest = verify_checksum(path, sha256, required=require_checksum)
    backend = open_backend(
        path, providers=providers, intra_op_threads=intra_op_threads, intra_op_spinning=intra_op_spinning
    )
    return ServedModel(backend, parse_metadata(backend.metadata_json, path, digest))


def load_model(settings: ServeSettings) -> ServedModel:
    """The artifact named by ``settings``, checked against the settings that depend on it."""
    served = open_model(
        settings.model,
        sha256=settings.sha256,
        require_checksum=settings.require_checksum,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
        intra_op_spinning=settings.intra_op_spinning,
    )
    if settings.default_prior != MODEL_PRIOR and not served.has_balanced_logits:
        raise ArtifactError(
            f"{settings.model}: --default-prior {settings.default_prior} needs balanced logits, but the "
            f"model was trained with {served.info.loss!r} and tau {served.info.tau:g} (use --default-prior model)"
        )
    return served
