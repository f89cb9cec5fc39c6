"""Predict without a server: ``Predictor("model.onnx").predict(images)`` and ``livt-predict``.

Torch-free (ONNX Runtime, Pillow, numpy), so it works from the serving install. It is the server's
inference layer (``livt.inference``: model, engines, preprocessing), so the numbers equal ``/v1/predict``'s.
"""

from livt.predict.predictor import ClassScore, ImageResult, Predictor

__all__ = ["ClassScore", "ImageResult", "Predictor"]
