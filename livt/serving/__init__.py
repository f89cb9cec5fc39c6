"""A FastAPI service over the exported ONNX / TensorRT artifact. Imports no PyTorch.

``livt-serve --model model.onnx`` runs it; ``create_app(ServeSettings(model=...))`` builds the app.
"""

from livt.serving.app import create_app
from livt.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
