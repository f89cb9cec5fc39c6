"""``Predictor``: an exported artifact, its preprocessing, calibration and prior rule, in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from livt import images as image_io
from livt.inference.model import PriorSpec, ServedModel, open_model, top_k
from livt.inference.preprocess import DEFAULT_MAX_PIXELS, preprocess_bytes, transform
from livt.label_shift import PriorEstimate, estimate_prior
from livt.prior import MODEL_PRIOR, check_balanced, softmax

ImageInput = str | Path | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class ClassScore:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class ImageResult:
    """One image's prediction: the top classes and every class's probability under ``prior``."""

    source: str
    prior: str
    top_k: list[ClassScore]
    probabilities: np.ndarray

    @property
    def label(self) -> str:
        return self.top_k[0].label

    @property
    def probability(self) -> float:
        return self.top_k[0].probability


class Predictor:
    """Classify images with an exported livt artifact exactly as ``livt-serve`` does.

    >>> p = Predictor("model.onnx")
    >>> p.predict(["a.png", pil_image, uint8_array], top_k=5, prior="train")

    ``prior`` is ``"model"`` (the artifact's own), ``"balanced"``, ``"train"``, ``"estimated"``
    (estimated by EM from the images of this call) or one number per class.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        sha256: str | None = None,
        backend: str = "auto",
        precision: str | None = None,
        providers: list[str] | None = None,
        threads: int = 0,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.model: ServedModel = open_model(
            Path(model),
            sha256=sha256,
            backend=backend,
            precision=precision,
            providers=providers,
            intra_op_threads=threads,
        )
        self.max_image_pixels = max_image_pixels

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.info.classes

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        top_k: int = 5,
        prior: PriorSpec = MODEL_PRIOR,
        batch_size: int = 32,
    ) -> list[ImageResult]:
        """The top ``top_k`` classes of every image under ``prior``."""
        logits = self.logits(images, batch_size=batch_size)
        mode, probabilities = self.apply_prior(logits, prior)
        return [
            ImageResult(_describe(image, i), mode, _scores(row, top_k, self.classes), row)
            for i, (image, row) in enumerate(zip(images, probabilities, strict=True))
        ]

    def estimate_prior(
        self, images: Sequence[ImageInput], *, bootstrap: int = 20, batch_size: int = 32
    ) -> PriorEstimate:
        """The label prior of ``images`` by EM on their calibrated balanced posteriors."""
        return self.estimate_from_logits(self.logits(images, batch_size=batch_size), bootstrap=bootstrap)

    def estimate_from_logits(self, logits: np.ndarray, *, bootstrap: int = 20) -> PriorEstimate:
        """EM's prior from the artifact's ``logits`` of some images (see ``logits``)."""
        self._require_balanced()
        return estimate_prior(
            softmax(self.model.balanced_logits(logits).astype(np.float64)), bootstrap=bootstrap
        )

    def apply_prior(self, logits: np.ndarray, prior: PriorSpec) -> tuple[str, np.ndarray]:
        """``(mode, probabilities)`` of the artifact's ``logits`` moved to ``prior``."""
        resolved = self.model.resolve_prior(
            prior, estimated=lambda: (self.estimate_from_logits(logits, bootstrap=0).pi, None)
        )
        probabilities = softmax(logits)
        return resolved.mode, self.model.apply_prior(logits, probabilities, resolved.offset).probabilities

    def logits(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """The artifact's logits ``[N, K]`` for ``images``, run ``batch_size`` at a time.

        ``on_batch(n)`` is called after each batch (a progress bar). A file that cannot be decoded
        raises ``livt.inference.preprocess.ImageError`` naming it.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        outputs = []
        for batch in self._batches(images, batch_size):
            outputs.append(self.model.run(batch)[0])
            if on_batch is not None:
                on_batch(len(batch))
        if not outputs:
            return np.zeros((0, self.model.info.num_classes), dtype=np.float32)
        return np.concatenate(outputs)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """The model input ``[C, H, W]`` for one image, as the server computes it."""
        cfg = self.model.info.preprocess
        if isinstance(image, str | Path):
            try:
                return preprocess_bytes(Path(image).read_bytes(), cfg, max_pixels=self.max_image_pixels)
            except ValueError as exc:
                raise type(exc)(f"{image}: {exc}") from exc
        if isinstance(image, bytes):
            return preprocess_bytes(image, cfg, max_pixels=self.max_image_pixels)
        if isinstance(image, np.ndarray):
            image = _array_to_image(image)
        if isinstance(image, Image.Image):
            return transform(image_io.to_model_mode(image, cfg.channels), cfg)
        raise TypeError(
            f"an image is a path, file bytes, a PIL image or a uint8 array, got {type(image).__name__}"
        )

    def _batches(self, images: Iterable[ImageInput], batch_size: int) -> Iterator[np.ndarray]:
        batch: list[np.ndarray] = []
        for image in images:
            batch.append(self.preprocess(image))
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def _require_balanced(self) -> None:
        check_balanced(self.model.info.loss, self.model.info.tau)


def _array_to_image(array: np.ndarray) -> Image.Image:
    """A uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` array as a PIL image."""
    if array.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 (0-255), got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(
            f"image arrays are [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {list(array.shape)}"
        )
    return Image.fromarray(array)


def _describe(image: ImageInput, index: int) -> str:
    return str(image) if isinstance(image, str | Path) else f"<image {index}>"


def _scores(probabilities: np.ndarray, k: int, classes: Sequence[str]) -> list[ClassScore]:
    return [ClassScore(classes[i], i, p) for i, p in top_k(probabilities, k)]
