"""OpenVINO's INT8 variant: NNCF post-training quantisation of the fp32 ONNX on the run's val images.

The result stays an ONNX file (Q/DQ pairs placed by NNCF for OpenVINO's CPU plugin), so it carries
the same ``livt`` metadata and checksum sidecar as every other artifact and OpenVINO reads it as it
reads the fp32 file (``livt.inference.backends.openvino``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import INPUT_NAME
from livt.export.metadata import write_onnx_metadata

logger = logging.getLogger(__name__)

NNCF_QUANTIZATION = "int8-nncf"


def quantize_int8_nncf(src: Path, dst: Path, metadata: dict[str, Any], images: np.ndarray) -> None:
    """Quantise ``src`` into ``dst`` with NNCF, activation ranges from ``images`` (ViT patterns kept)."""
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    if len(images) == 0:
        raise ValueError("NNCF quantisation needs at least one calibration image")
    batches = [np.ascontiguousarray(images[i : i + 16], dtype=np.float32) for i in range(0, len(images), 16)]
    dataset = nncf.Dataset(batches, lambda x: {INPUT_NAME: x})
    quantized = nncf.quantize(
        onnx.load(str(src)),
        dataset,
        subset_size=len(batches),
        # Transformer mode keeps softmax, LayerNorm and GELU in float: the accuracy-sensitive ops of a ViT.
        model_type=nncf.ModelType.TRANSFORMER,
        # Without SmoothQuant: on the ONNX it writes, OpenVINO 2026.4 kept 30 % of the fp32 answers of
        # the test run's ViT (ONNX Runtime on the same file: 100 %); without it OpenVINO kept 100 %.
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
        ),
    )
    write_onnx_metadata(quantized, metadata)
    onnx.save(quantized, str(dst))
    logger.info("NNCF INT8 of %s on %d images -> %s", src.name, len(images), dst.name)
