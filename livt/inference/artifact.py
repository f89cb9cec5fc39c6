"""The served artifact: its checksum and the ``livt`` metadata it carries (docs/architecture.md).

The contract's names, format version and sidecar files come from ``livt.artifact``, shared with export.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import FORMAT_VERSION, checksum_path, read_checksum, sha256_file
from livt.inference.preprocess import PreprocessConfig
from livt.prior import PRIOR_RULES

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(RuntimeError):
    """The artifact cannot be served; the message names the file and the cause."""


@dataclass(frozen=True)
class ArtifactInfo:
    """What serving needs from the artifact's metadata, validated; ``metadata`` is the whole JSON."""

    path: Path
    sha256: str
    metadata: dict[str, Any]
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    loss: str
    tau: float
    prior_mode: str
    prior_rule: str
    offset: np.ndarray = field(repr=False)  # the folded prior's: logits - offset = calibrated balanced logits
    calibration: dict[str, Any] | None
    preprocess: PreprocessConfig

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def version(self) -> str:
        """A version string unique to the artifact's bytes: the first 12 hex digits of its sha256."""
        return self.sha256[:12]


def verify_checksum(path: Path, expected: str | None = None, *, required: bool = False) -> str:
    """Hash ``path`` and compare it with ``expected``, else with a ``PATH.sha256`` file beside it.

    Returns the digest. The sidecar may be bare hex or ``sha256sum`` output (``HEX  NAME``). With
    neither, ``required`` refuses the artifact; otherwise the unverified start is logged.
    """
    if not path.is_file():
        raise ArtifactError(f"model artifact {path} does not exist")
    source = "--sha256"
    if expected is None:
        expected, source = read_checksum(path), str(checksum_path(path))
        if expected is None:
            if required:
                raise ArtifactError(
                    f"no checksum for {path}: neither --sha256 nor {source} (--require-checksum is on)"
                )
            logger.warning("no checksum for %s (no --sha256, no %s): serving it unverified", path, source)
    actual = sha256_file(path)
    if expected is not None:
        expected = expected.strip().lower()
        if not _SHA256.match(expected):
            raise ArtifactError(f"checksum from {source} is not a sha256 hex digest: {expected!r}")
        if expected != actual:
            raise ArtifactError(
                f"checksum mismatch for {path}: expected {expected} (from {source}), file has {actual}"
            )
    return actual


def parse_metadata(raw: str, path: Path, sha256: str) -> ArtifactInfo:
    """Validate the artifact's ``livt`` JSON; every problem is an ``ArtifactError`` naming the key."""
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: the livt metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: the livt metadata is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        hint = (
            " (exported by an older livt: export it again)"
            if isinstance(version, int) and version < FORMAT_VERSION
            else ""
        )
        raise ArtifactError(
            f"{path}: metadata format_version {version!r} is not supported (this server reads "
            f"{FORMAT_VERSION}){hint}"
        )
    try:
        classes = tuple(str(c) for c in meta["classes"])
        counts = tuple(int(c) for c in meta["class_counts"])
        offset = np.asarray(meta["prior"]["offset"], dtype=np.float32)
        info = ArtifactInfo(
            path=path,
            sha256=sha256,
            metadata=meta,
            classes=classes,
            class_counts=counts,
            loss=str(meta["loss"]),
            tau=float(meta["tau"]),
            prior_mode=str(meta["prior"]["mode"]),
            prior_rule=str(meta["prior"]["rule"]),
            offset=offset,
            calibration=meta["calibration"],
            preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
        )
    except KeyError as exc:
        raise ArtifactError(f"{path}: the livt metadata lacks the key {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: invalid livt metadata: {exc}") from exc
    k = info.num_classes
    if k < 1 or len(counts) != k or offset.shape != (k,):
        raise ArtifactError(
            f"{path}: metadata has {k} classes, {len(counts)} class_counts and {offset.size} offsets"
        )
    if not np.isfinite(offset).all():
        raise ArtifactError(f"{path}: metadata prior offset must be finite")
    if info.prior_rule not in PRIOR_RULES:
        raise ArtifactError(f"{path}: metadata prior rule {info.prior_rule!r} is not one of {PRIOR_RULES}")
    if info.calibration is not None and not isinstance(info.calibration, dict):
        raise ArtifactError(f"{path}: metadata calibration must be an object or null")
    return info
