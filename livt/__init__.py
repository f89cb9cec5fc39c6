"""livt: long-tailed image classification with Vision Transformers (LiVT), from data to service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livt.predict import Predictor

__version__ = "0.2.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: ``import livt`` stays free of ONNX Runtime (training never needs it).
    if name == "Predictor":
        from livt.predict import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
