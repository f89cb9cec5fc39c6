"""The artifact contract shared by export (writer) and serving (reader); see docs/architecture.md.

Torch-free and TensorRT-free (stdlib, and ``livt.prior`` for the rule names): serving imports it
without pulling ``livt.export``. It holds the tensor names, the metadata key and format version, the typed metadata
(``ArtifactMetadata``: export writes it, every engine's reader parses it), the ``X.sha256``
checksum sidecar, and the TensorRT ``X.plan.json`` sidecar with the check that an engine fits the
GPU and TensorRT it is about to run on (a serialized engine only runs on the GPU architecture and
the exact TensorRT version that built it, so a mismatch must fail with a message, not a crash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livt.prior import PRIOR_RULES

METADATA_KEY = "livt"  # ONNX metadata_props key (and Triton parameter) holding the metadata JSON
# 2: logits = calibrated balanced logits + prior offset (1 divided the offset by a temperature).
FORMAT_VERSION = 2
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probabilities")
CHECKSUM_SUFFIX = ".sha256"
# The files of one ONNX export ``X.onnx``: its fp32 model and the INT8 variants beside it.
VARIANT_SUFFIXES = {
    "onnx-fp32": ".onnx",
    "onnx-int8-dynamic": ".int8.onnx",  # ONNX Runtime, dynamic INT8
    "onnx-int8-qdq": ".qdq.onnx",  # ONNX Runtime / TensorRT, static Q/DQ
    "openvino-int8": ".ov-int8.onnx",  # OpenVINO, NNCF post-training INT8
}
ENGINE_KEYS = ("tensorrt_version", "gpu_name", "compute_capability")
QUANTIZATION_MODES = (None, "int8-dynamic", "int8-qdq", "int8-nncf")


class MetadataError(ValueError):
    """Metadata that breaks the contract; the message names the key."""


@dataclass(frozen=True)
class FoldedPrior:
    """The prior folded into the head: ``logits - offset`` are the calibrated balanced logits."""

    mode: str
    rule: str
    offset: tuple[float, ...]
    source: str | None = None
    pi: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.rule not in PRIOR_RULES:
            raise MetadataError(f"metadata prior rule {self.rule!r} is not one of {PRIOR_RULES}")
        if not all(math.isfinite(o) for o in self.offset):
            raise MetadataError("metadata prior offset must be finite")


@dataclass(frozen=True)
class ArtifactMetadata:
    """The ``livt`` metadata every artifact carries: written by export, read by every engine's loader.

    Readers need the fields without defaults; export writes them all.
    """

    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    loss: str
    tau: float
    prior: FoldedPrior
    preprocess: dict[str, Any]
    calibration: dict[str, Any] | None
    format_version: int = FORMAT_VERSION
    livt_version: str | None = None
    model_name: str = "custom"
    model: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = OUTPUT_NAMES
    quantization: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            self._check_version(self.format_version)
        k = len(self.classes)
        if k < 1 or len(self.class_counts) != k or len(self.prior.offset) != k:
            raise MetadataError(
                f"metadata has {k} classes, {len(self.class_counts)} class_counts and "
                f"{len(self.prior.offset)} offsets"
            )
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise MetadataError("metadata calibration must be an object or null")
        if self.quantization not in QUANTIZATION_MODES:
            raise MetadataError(
                f"quantization must be one of {QUANTIZATION_MODES}, got {self.quantization!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in the artifact (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any) -> ArtifactMetadata:
        """Parse and validate; ``MetadataError`` names the missing or malformed key."""
        if not isinstance(data, dict):
            raise MetadataError("the livt metadata is not a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            cls._check_version(data.get("format_version"))
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            prior = data["prior"]
            return cls(
                **{k: v for k, v in data.items() if k in names and k not in _TYPED},
                classes=tuple(str(c) for c in data["classes"]),
                class_counts=tuple(int(c) for c in data["class_counts"]),
                loss=str(data["loss"]),
                tau=float(data["tau"]),
                prior=FoldedPrior(
                    mode=str(prior["mode"]),
                    rule=str(prior["rule"]),
                    offset=tuple(float(o) for o in prior["offset"]),
                    source=prior.get("source"),
                    pi=None if prior.get("pi") is None else tuple(float(p) for p in prior["pi"]),
                ),
                preprocess=data["preprocess"],
                calibration=data["calibration"],
                outputs=tuple(data.get("outputs", OUTPUT_NAMES)),
            )
        except KeyError as exc:
            raise MetadataError(f"the livt metadata lacks the key {exc}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, MetadataError):
                raise
            raise MetadataError(f"invalid livt metadata: {exc}") from exc

    @classmethod
    def from_json(cls, raw: str) -> ArtifactMetadata:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"the livt metadata is not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    @staticmethod
    def _check_version(version: Any) -> None:
        older = isinstance(version, int) and version < FORMAT_VERSION
        raise MetadataError(
            f"metadata format_version {version!r} is not supported (this server reads "
            f"{FORMAT_VERSION}){' (exported by an older livt: export it again)' if older else ''}"
        )


# Parsed by hand in ``from_dict``; the other fields are taken as written.
_TYPED = frozenset(
    {"classes", "class_counts", "loss", "tau", "prior", "preprocess", "calibration", "outputs"}
)


class EngineMismatchError(RuntimeError):
    """An engine built for another GPU or TensorRT version, or one without a usable sidecar."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(artifact: Path) -> Path:
    """``X.onnx`` -> ``X.onnx.sha256``, the sidecar ``livt-serve`` checks an artifact against."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + CHECKSUM_SUFFIX)


def write_checksum(path: Path, name: str | None = None) -> Path:
    """Write ``path``'s sha256 beside it in ``sha256sum`` format; return the sidecar.

    ``name`` is the file name recorded in the sidecar (default ``path``'s own): the final name when
    ``path`` is a temporary file about to be renamed, so ``sha256sum -c`` works where it lands.
    """
    sidecar = checksum_path(path)
    sidecar.write_text(f"{sha256_file(path)}  {name or Path(path).name}\n", encoding="utf-8")
    return sidecar


def read_checksum(artifact: Path) -> str | None:
    """The digest recorded in ``artifact``'s sidecar (bare hex or ``sha256sum`` line), None without one.

    Returned as written (possibly empty or malformed): the caller validates it.
    """
    sidecar = checksum_path(artifact)
    if not sidecar.is_file():
        return None
    words = sidecar.read_text(encoding="utf-8").split()
    return words[0] if words else ""


def engine_sidecar_path(plan_path: Path) -> Path:
    """``X.plan`` -> ``X.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def read_engine_sidecar(plan_path: Path) -> dict[str, Any]:
    """The JSON sidecar of engine ``plan_path``; ``EngineMismatchError`` if absent or incomplete."""
    path = engine_sidecar_path(plan_path)
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EngineMismatchError(
            f"{plan_path}: a TensorRT engine needs its metadata sidecar {path.name}, which is missing "
            "(it records the GPU and TensorRT that built the engine)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise EngineMismatchError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(sidecar, dict):
        raise EngineMismatchError(f"{path} is not a JSON object")
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
    sidecar = read_engine_sidecar(plan_path)
    differences = engine_mismatches(sidecar, runtime)
    if differences:
        raise EngineMismatchError(
            f"refusing TensorRT engine {plan_path}: "
            + "; ".join(differences)
            + ". Rebuild it on this machine with `livt-export --format tensorrt`."
        )
    return sidecar
