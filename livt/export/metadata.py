"""The artifact metadata: the JSON stored in ONNX ``metadata_props["livt"]`` and engine sidecars.

Torch-free (stdlib + onnx only where a model file is read). The names and keys of the contract
itself live in ``livt.artifact``, which serving shares.
"""

from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import livt
from livt.artifact import INPUT_NAME, METADATA_KEY, ArtifactMetadata, FoldedPrior
from livt.metrics import SCALAR_METRICS

# The run's metrics.json subset worth carrying (per-class lists and confusion matrices stay behind).
_METRIC_KEYS = (*SCALAR_METRICS, "many_threshold", "few_threshold")
_VERSIONED = ("torch", "onnx", "onnxruntime", "timm")


def build_metadata(
    meta: dict[str, Any],
    *,
    prior: dict[str, Any],
    calibration: dict[str, Any] | None,
    run_metrics: dict[str, Any],
    source_sha256: str,
    quantization: str | None = None,
) -> dict[str, Any]:
    """The contract metadata (``ArtifactMetadata``) for an artifact exported from checkpoint ``meta``."""
    pp = meta["preprocess"]
    return ArtifactMetadata(
        livt_version=livt.__version__,
        model_name=meta["model"].get("name", "custom"),
        model=meta["model"],
        classes=tuple(meta["classes"]),
        class_counts=tuple(meta["class_counts"]),
        loss=meta["loss"],
        tau=float(meta["tau"]),
        input={
            "name": INPUT_NAME,
            "shape": [None, int(pp["channels"]), int(pp["img_size"]), int(pp["img_size"])],
            "dtype": "float32",
        },
        preprocess=pp,
        prior=FoldedPrior(
            mode=prior["mode"],
            rule=prior["rule"],
            offset=tuple(prior["offset"]),
            source=prior.get("source"),
            pi=None if prior.get("pi") is None else tuple(prior["pi"]),
        ),
        calibration=calibration,
        quantization=quantization,
        metrics={k: run_metrics[k] for k in _METRIC_KEYS if k in run_metrics},
        source_sha256=source_sha256,
        versions=package_versions(),
    ).to_dict()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages an artifact depends on (``None`` when absent)."""
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_onnx_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Set ``metadata_props["livt"]`` on an ``onnx.ModelProto`` in place (replacing an old entry)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The ``livt`` metadata of an ONNX file (weights are not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError(f"{path} has no metadata_props[{METADATA_KEY!r}]: not a livt export")
