"""The model every caller runs (server and ``Predictor``): a backend, its validated metadata, the prior.

The artifact's logits are ``c + offset_export``: ``c`` the calibrated balanced logits, the offset
that of the prior folded at export. A request asking for another prior gets ``c + prior_offset(pi)``
under the artifact's prior rule, with ``c = logits - offset_export`` recovered first (no
temperature is involved: calibration happened before the prior, inside the artifact).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livt.inference.artifact import ArtifactError, ArtifactInfo, parse_metadata
from livt.inference.backends import Backend
from livt.inference.selection import EngineChoice, select_engine
from livt.prior import (
    BALANCED_PRIOR,
    ESTIMATED_PRIOR,
    MODEL_PRIOR,
    REQUEST_PRIORS,
    TRAIN_PRIOR,
    PriorError,
    has_balanced_logits,
    prior_offset,
    resolve_prior,
    softmax,
)

PriorSpec = str | Sequence[float] | None
# Where an "estimated" prior comes from: ``(pi, note)``, ``pi`` None for "not ready, balanced used".
EstimatedPrior = Callable[[], tuple[np.ndarray | None, str | None]]


@dataclass(frozen=True)
class RequestPrior:
    """The prior a request's probabilities are for: its mode, offset (None: the artifact's) and a note."""

    mode: str
    offset: np.ndarray | None
    note: str | None = None


@dataclass(frozen=True)
class Prediction:
    """One image's outputs under the requested prior."""

    logits: np.ndarray
    probabilities: np.ndarray


class ServedModel:
    """A loaded artifact: run batches, move logits to a request's prior, pick the top classes."""

    def __init__(self, backend: Backend, info: ArtifactInfo, choice: EngineChoice | None = None):
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
        self.choice = choice or EngineChoice(backend.engine, backend.precision, info.path, "given")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The artifact's ``(logits, probabilities)`` for a float32 ``[N, C, H, W]`` batch."""
        logits, probabilities = self.backend.run(batch)
        # A graph that baked in a batch size can answer for fewer images without failing (OpenVINO).
        if len(logits) != len(batch) or len(probabilities) != len(batch):
            raise RuntimeError(f"the model returned {len(logits)} rows for {len(batch)} images")
        return logits, probabilities

    @property
    def has_balanced_logits(self) -> bool:
        """Whether a target prior can be applied (the model was trained with a balanced loss)."""
        return has_balanced_logits(self.info.tau)

    def balanced_logits(self, logits: np.ndarray) -> np.ndarray:
        """The calibrated balanced logits behind the artifact's ``logits``."""
        return logits - self.info.offset

    def prior_offset(self, pi: np.ndarray | None) -> np.ndarray:
        """The offset that moves the calibrated balanced logits to prior ``pi`` (None: balanced)."""
        return prior_offset(pi, self.info.loss, self.info.tau, self.info.num_classes, self.info.prior_rule)

    def resolve_prior(self, spec: PriorSpec, *, estimated: EstimatedPrior | None = None) -> RequestPrior:
        """A request's prior: ``"model"``/None (no change), ``"balanced"``, ``"train"``, class frequencies,
        or ``"estimated"`` from ``estimated`` (the server's traffic window, the Predictor's own images).

        Raises ``PriorError`` with the reason for anything else (file paths are not accepted).
        """
        if spec is None or spec == MODEL_PRIOR:
            return RequestPrior(self.info.prior_mode, None)
        if spec == ESTIMATED_PRIOR:
            if estimated is None:
                raise PriorError("the 'estimated' prior needs images to estimate it from")
            pi, note = estimated()
            mode = ESTIMATED_PRIOR if pi is not None else BALANCED_PRIOR
            return RequestPrior(mode, self.prior_offset(pi), note)
        if isinstance(spec, str) and spec not in (BALANCED_PRIOR, TRAIN_PRIOR):
            names = ", ".join(repr(name) for name in REQUEST_PRIORS)
            raise PriorError(f"prior must be {names} or a list of numbers, got {spec!r}")
        mode, pi = resolve_prior(spec, self.info.class_counts)
        return RequestPrior(mode, self.prior_offset(pi))

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
    backend: str = "auto",
    precision: str | None = None,
    providers: list[str] | None = None,
    intra_op_threads: int = 0,
    intra_op_spinning: bool = False,
) -> ServedModel:
    """Verify, open and validate the artifact at ``path`` on the engine ``backend`` picks (``auto``:
    the fastest accurate one here, ``livt.inference.selection``); ``ArtifactError`` says why not."""
    opened, choice, digest = select_engine(
        Path(path),
        backend,
        precision,
        sha256=sha256,
        require_checksum=require_checksum,
        providers=providers,
        threads=intra_op_threads,
        spinning=intra_op_spinning,
    )
    return ServedModel(opened, parse_metadata(opened.metadata_json, choice.path, digest), choice)
