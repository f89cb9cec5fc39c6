"""Export a folded classifier to a single-file ONNX model and check it against PyTorch.

Exporter choice (torch 2.14): the TorchScript exporter (``dynamo=False``) writes opset 17 with
``LayerNormalization`` nodes and a symbolic batch axis. The torch.export-based exporter only
implements opset >= 18 and its down-conversion to 17 fails on ``ReduceMean`` (axes became an input
in 18), so it is used for ``opset >= 18`` only, where it gives the leaner graph.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from livt.artifact import INPUT_NAME, OUTPUT_NAMES
from livt.export.metadata import write_onnx_metadata

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 17  # first opset with LayerNormalization


@dataclass(frozen=True)
class Parity:
    """How closely a candidate's outputs follow the reference on the same images."""

    samples: int
    max_abs_diff_logits: float
    max_abs_diff_probabilities: float
    top1_agreement: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def export_onnx(
    module: nn.Module,
    path: Path,
    input_shape: tuple[int, int, int],
    metadata: dict[str, Any],
    *,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Write ``module`` (a ``FoldedClassifier``, returning ``(logits, probabilities)``) to ``path``.

    One ONNX file, the batch axis dynamic, ``metadata`` in ``metadata_props["livt"]``. The ViT's
    attention is exported as ``livt.export.attention`` computes it; ``module`` itself is left as it is.
    """
    from livt.export.attention import for_export

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    module = copy.deepcopy(module).eval()
    for_export(module.model)
    # Batch 2, not 1: a batch of 1 invites exporters to specialise the batch axis away.
    example = torch.zeros(2, *input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        # timm's shape assertions trace to constants; the batch axis stays symbolic regardless.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        if opset >= 18:
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                verbose=False,
            )
            model = program.model_proto
        else:
            tmp = Path(path).with_name(Path(path).name + ".trace")
            try:
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    opset_version=opset,
                    dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
                    dynamo=False,
                )
                model = onnx.load(str(tmp))
            finally:
                tmp.unlink(missing_ok=True)
    write_onnx_metadata(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_session(path: Path, *, threads: int | None = None, optimize: bool = True) -> Any:
    """A CPU ONNX Runtime session; ``threads`` intra-op threads (default: all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, probabilities)`` of an ONNX session over ``x`` in batches."""
    outs = [
        session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i : i + batch_size]})
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


@torch.no_grad()
def run_torch(module: nn.Module, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, probabilities)`` of a folded PyTorch module over ``x`` in batches."""
    outs = [module(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy()


def compare(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> Parity:
    """Parity of ``candidate`` ``(logits, probabilities)`` against ``reference``."""
    (ref_logits, ref_probs), (logits, probs) = reference, candidate
    return Parity(
        samples=len(ref_logits),
        max_abs_diff_logits=float(np.abs(ref_logits - logits).max()),
        max_abs_diff_probabilities=float(np.abs(ref_probs - probs).max()),
        top1_agreement=float((ref_logits.argmax(1) == logits.argmax(1)).mean()),
    )
