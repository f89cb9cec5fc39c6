"""TensorRT engine sidecars and the check that an engine fits the GPU and TensorRT it runs on.

A serialized engine only runs on the GPU architecture and the exact TensorRT version that built
it. ``X.plan.json`` records both; loaders compare it with the runtime before deserializing, so a
mismatch fails with a message saying what differs instead of a TensorRT crash. Torch-free and
TensorRT-free (stdlib only): serving imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENGINE_KEYS = ("tensorrt_version", "gpu_name", "compute_capability")


class EngineMismatchError(RuntimeError):
    """An engine built for another GPU or TensorRT version than the one at hand."""


def sidecar_path(plan_path: Path) -> Path:
    """``X.plan`` -> ``X.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def read_sidecar(plan_path: Path) -> dict[str, Any]:
    """The JSON sidecar of engine ``plan_path``; ``EngineMismatchError`` if absent or incomplete."""
    path = sidecar_path(plan_path)
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EngineMismatchError(
            f"{path} is missing: cannot tell which GPU/TensorRT built {plan_path}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise EngineMismatchError(f"{path} is not valid JSON: {exc}") from exc
    missing = [k for k in ENGINE_KEYS if k not in sidecar]
    if missing:
        raise EngineMismatchError(f"{path} lacks {missing}")
    return sidecar


def engine_mismatches(sidecar: dict[str, Any], runtime: dict[str, Any]) -> list[str]:
    """Human-readable differences between the build environment and ``runtime`` (empty: compatible).

    ``runtime`` has the ``ENGINE_KEYS``: the TensorRT version string, the GPU name and the compute
    capability as ``"major.minor"``.
    """
    return [
        f"{key}: engine built with {sidecar.get(key)!r}, this machine has {runtime.get(key)!r}"
        for key in ENGINE_KEYS
        if str(sidecar.get(key)) != str(runtime.get(key))
    ]


def check_engine_compatible(plan_path: Path, runtime: dict[str, Any]) -> dict[str, Any]:
    """Return the sidecar of ``plan_path`` if the engine can run under ``runtime``; raise otherwise."""
    sidecar = read_sidecar(plan_path)
    differences = engine_mismatches(sidecar, runtime)
    if differences:
        raise EngineMismatchError(
            f"refusing TensorRT engine {plan_path}: "
            + "; ".join(differences)
            + ". Rebuild it on this machine "
            "with `livt-export --format tensorrt`."
        )
    return sidecar
