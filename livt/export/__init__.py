"""Export a fine-tuned LiVT run to a deployable artifact (ONNX, TensorRT, Triton).

The target prior's logit offset and a fitted temperature are folded into the classifier head, so an
artifact outputs calibrated ``logits`` and ``probabilities`` directly. Submodules import their heavy
dependencies themselves. The contract's torch-free pieces (tensor names, checksums, engine sidecars)
live in ``livt.artifact``, shared with serving, which never imports ``livt.export``.
"""
