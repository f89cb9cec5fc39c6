"""The served artifact: its checksum and the ``livt`` metadata it carries (docs/architecture.md).

The contract (names, format version, the typed ``ArtifactMetadata``, sidecars) is ``livt.artifact``, shared with export.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import ArtifactMetadata, MetadataError, checksum_path, read_checksum, sha256_file
from livt.inference.preprocess import PreprocessConfig

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
    """Validate the artifact's ``livt`` JSON (``livt.artifact.ArtifactMetadata``); every problem is an
    ``ArtifactError`` naming the file and the key."""
    try:
        meta = ArtifactMetadata.from_json(raw)
        preprocess = PreprocessConfig.from_dict(meta.preprocess)
    except KeyError as exc:
        raise ArtifactError(f"{path}: the livt metadata lacks the key {exc}") from exc
    except (TypeError, ValueError) as exc:
        prefix = "" if isinstance(exc, MetadataError) else "invalid livt metadata: "
        raise ArtifactError(f"{path}: {prefix}{exc}") from exc
    return ArtifactInfo(
        path=path,
        sha256=sha256,
        metadata=json.loads(raw),
        classes=meta.classes,
        class_counts=meta.class_counts,
        loss=meta.loss,
        tau=meta.tau,
        prior_mode=meta.prior.mode,
        prior_rule=meta.prior.rule,
        offset=np.asarray(meta.prior.offset, dtype=np.float32),
        calibration=meta.calibration,
        preprocess=preprocess,
    )
