"""Export a fine-tuned LiVT run to a deployable artifact (ONNX, TensorRT, Triton).

The target prior's logit offset and a fitted temperature are folded into the classifier head, so an
artifact outputs calibrated ``logits`` and ``probabilities`` directly. Submodules import their heavy
dependencies themselves: ``livt.export.engine_meta`` and ``livt.export.metadata`` stay torch-free so
serving can use them.
"""
