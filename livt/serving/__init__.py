"""A FastAPI service over the exported artifact, on the inference layer ``livt.inference``. Imports no PyTorch.

``livt-serve --model model.onnx`` runs it; ``create_app(ServeSettings(model=...))`` builds the app.
Both names load on first use, so ``import livt.serving`` costs nothing until they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livt.serving.app import create_app
    from livt.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from livt.serving.app import create_app

        return create_app
    if name == "ServeSettings":
        from livt.serving.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
