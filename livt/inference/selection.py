"""Which engine and precision serve an artifact: the one asked for, or the fastest accurate one here.

``auto`` serves the fastest candidate (images/s at batch 32) whose balanced accuracy is within
``ACCURACY_TOLERANCE`` of ONNX Runtime fp32 and whose top-1 agreement with it is at least
``MIN_AGREEMENT``. The figures come from the ``livt-export benchmark`` record beside the model
(``X.benchmark.json``) when it was measured on this CPU (model name and ISA flags) for these bytes;
otherwise from a bounded measurement at start-up (``measure``), where accuracy is judged by
agreement with fp32 alone, on a fixed set of synthetic images (no labelled data travels with an
artifact; int8 rarely agrees that closely on noise, so the start-up rule errs towards fp32 / bf16).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livt.artifact import VARIANT_SUFFIXES
from livt.host import host_fingerprint
from livt.inference.artifact import ArtifactError, verify_checksum
from livt.inference.backends import Backend, BackendUnavailableError, is_engine_file, open_backend
from livt.inference.timing import time_interleaved

logger = logging.getLogger(__name__)

ACCURACY_TOLERANCE = 0.002  # balanced accuracy: 0.2 points
MIN_AGREEMENT = 0.995
MARGIN = 1.05  # how much faster than ONNX Runtime fp32 another candidate must be to serve instead
RECORD_SUFFIX = ".benchmark.json"
# The INT8 file of each engine beside X.onnx, in order of preference.
INT8_SUFFIXES = {
    "ort": (VARIANT_SUFFIXES["onnx-int8-dynamic"], VARIANT_SUFFIXES["onnx-int8-qdq"]),
    "openvino": (VARIANT_SUFFIXES["openvino-int8"],),
}
# The start-up measurement's fixed synthetic set: a batch a ViT-S runs in ~0.5 s on 2 cores, so five
# candidates' warm-up and timing stay within a few seconds.
CHECK_IMAGES = 16


@dataclass(frozen=True)
class Candidate:
    """One engine at one precision over one file."""

    engine: str
    precision: str
    path: Path

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}"


@dataclass(frozen=True)
class EngineChoice:
    """What serves, and why (logged, in the v2 model metadata and in ``/metrics``)."""

    engine: str
    precision: str
    path: Path
    reason: str

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}"

    def describe(self) -> dict[str, str]:
        return {
            "engine": self.engine,
            "precision": self.precision,
            "file": self.path.name,
            "reason": self.reason,
        }


def record_path(artifact: Path) -> Path:
    """``X.onnx`` -> ``X.benchmark.json``, where ``livt-export benchmark`` saves its table."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name.removesuffix(".onnx") + RECORD_SUFFIX)


def variant_path(artifact: Path, engine: str, precision: str) -> Path | None:
    """The file ``engine`` runs at ``precision`` for the export ``X.onnx`` (None: not written)."""
    artifact = Path(artifact)
    if precision != "int8":
        return artifact
    stem = artifact.name.removesuffix(".onnx")
    found = [artifact.with_name(stem + s) for s in INT8_SUFFIXES.get(engine, ())]
    return next((p for p in found if p.is_file()), None)


def candidates(artifact: Path, precision: str | None = None) -> list[Candidate]:
    """Every engine x precision that could serve the export ``X.onnx`` on this host (ort-fp32 first)."""
    from livt.inference.backends.openvino import cpu_has_bf16, openvino_available

    artifact = Path(artifact)
    # An INT8 file named directly runs as it is, on the engine it was quantised for.
    own = [e for e, suffixes in INT8_SUFFIXES.items() if artifact.name.endswith(suffixes)]
    if own:
        return [Candidate(own[0], "int8", artifact)] if precision in (None, "int8") else []
    pairs = [("ort", "fp32"), ("ort", "int8")]
    if openvino_available():
        pairs += [("openvino", "fp32"), ("openvino", "int8")]
        if cpu_has_bf16():
            pairs.insert(3, ("openvino", "bf16"))
    found = []
    for engine, prec in pairs:
        path = variant_path(artifact, engine, prec)
        if path is not None and precision in (None, prec):
            found.append(Candidate(engine, prec, path))
    return found


def select_engine(
    artifact: Path,
    backend: str = "auto",
    precision: str | None = None,
    *,
    sha256: str | None = None,
    require_checksum: bool = False,
    providers: list[str] | None = None,
    threads: int = 0,
    spinning: bool = False,
) -> tuple[Backend, EngineChoice, str]:
    """Open ``artifact`` on the engine ``backend`` names (``auto``: chosen here); ``(backend, choice, sha256)``.

    ``artifact`` is checked against ``sha256`` (else its sidecar); another file of the export (an
    INT8 variant) must match its own sidecar to be served.
    """
    artifact = Path(artifact)
    digest = verify_checksum(artifact, sha256, required=require_checksum)
    options = {"providers": providers, "threads": threads, "spinning": spinning}
    if backend == "auto" and is_engine_file(artifact):
        backend = "tensorrt"
    if backend != "auto":
        path = artifact if is_engine_file(artifact) else variant_path(artifact, backend, precision or "fp32")
        if path is None:
            raise BackendUnavailableError(
                f"{artifact}: no {precision} file for {backend} beside it (expected "
                f"{' or '.join(artifact.name.removesuffix('.onnx') + s for s in INT8_SUFFIXES.get(backend, ()))}; "
                "livt-export writes it)"
            )
        digest = _verified(path, artifact, digest)
        opened = open_backend(path, backend, precision, **options)
        return (
            opened,
            EngineChoice(opened.engine, opened.precision, path, "forced by --backend/--precision"),
            digest,
        )
    pool = [c for c in candidates(artifact, precision) if _has_valid_checksum(c.path, artifact)]
    if not pool:
        raise BackendUnavailableError(f"{artifact}: no engine can run it here at precision {precision}")
    chosen, reason, opened = _from_record(artifact, digest, pool) or measure(pool, **options)
    if opened is None:
        opened = open_backend(chosen.path, chosen.engine, chosen.precision, **options)
    logger.info("serving %s on %s %s: %s", chosen.path.name, chosen.engine, chosen.precision, reason)
    return (
        opened,
        EngineChoice(chosen.engine, chosen.precision, chosen.path, reason),
        _verified(chosen.path, artifact, digest),
    )


def pick(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The fastest row that keeps fp32's accuracy, and why; rows have ``name``, ``images_per_s``,
    ``agreement`` and (where measured) ``balanced_acc``. The first fp32 row is the reference, which
    another row must beat by ``MARGIN`` to be chosen."""
    reference = next((r for r in rows if r["precision"] == "fp32"), rows[0])
    kept, excluded = [], []
    for row in rows:
        why = _shortfall(row, reference)
        (excluded if why else kept).append((row, why))
    # Another engine must beat the reference by a margin: two near-equal figures on a busy machine are noise.
    best = max((r for r, _ in kept), key=lambda r: r["images_per_s"] / (1 if r is reference else MARGIN))
    others = ", ".join(f"{r['name']} {r['images_per_s']:.0f}" for r, _ in kept if r is not best)
    reason = f"fastest accurate candidate: {best['name']} {best['images_per_s']:.0f} images/s"
    reason += f" (vs {others})" if others else ""
    if excluded:
        reason += "; excluded " + ", ".join(f"{r['name']} ({why})" for r, why in excluded)
    return best, reason


def _shortfall(row: dict[str, Any], reference: dict[str, Any]) -> str | None:
    if row is reference:
        return None
    if row.get("agreement") is None or row["agreement"] < MIN_AGREEMENT:
        agreement = "unmeasured" if row.get("agreement") is None else f"{100 * row['agreement']:.2f} %"
        return f"top-1 agreement {agreement} < {100 * MIN_AGREEMENT:.1f} %"
    ref, acc = reference.get("balanced_acc"), row.get("balanced_acc")
    if ref is not None and acc is not None and ref - acc > ACCURACY_TOLERANCE:
        return f"balanced accuracy {100 * acc:.2f} vs fp32 {100 * ref:.2f}"
    return None


def measure(
    pool: Sequence[Candidate], *, budget_s: float = 3.0, providers: list[str] | None = None, **options: Any
) -> tuple[Candidate, str, Backend]:
    """Open and time every candidate on a fixed synthetic set within about ``budget_s`` seconds.

    Each candidate's images/s is over interleaved rounds of ``CHECK_IMAGES`` images; its
    agreement is with the first candidate's (ort-fp32) top-1 on the same images.
    """
    opened: dict[str, Backend] = {}
    for c in pool:
        try:
            opened[c.name] = open_backend(c.path, c.engine, c.precision, providers=providers, **options)
        except ArtifactError as exc:
            # The reference's failure is the artifact's or the settings' (a bad file, an unknown provider).
            if c is pool[0] and not isinstance(exc, BackendUnavailableError):
                raise
            logger.info("candidate %s skipped: %s", c.name, exc)
    if not opened:
        raise BackendUnavailableError(f"{pool[0].path}: none of {[c.name for c in pool]} could be opened")
    x = _check_images(next(iter(opened.values())).input_shape)
    answers: dict[str, np.ndarray] = {}
    for name, backend in opened.items():
        try:
            top1 = backend.run(x)[0].argmax(-1)  # also the warm-up: the first call at a shape compiles
            if top1.shape != (len(x),):
                raise RuntimeError(f"{top1.size} answers for {len(x)} images")
            answers[name] = top1
        except Exception as exc:  # a model that cannot run this batch: the model check reports it
            logger.warning("candidate %s failed on %d synthetic images: %s", name, len(x), exc)
    if not answers:
        name = next(iter(opened))
        return (
            _by_name(pool, name),
            "no candidate ran the start-up measurement: the first served",
            opened[name],
        )
    reference = next(iter(answers.values()))
    speeds = _interleaved_throughput({n: opened[n] for n in answers}, x, budget_s)
    rows = [
        {
            "name": name,
            "precision": opened[name].precision,
            "images_per_s": speeds[name],
            "agreement": float(np.mean(top1 == reference)),
        }
        for name, top1 in answers.items()
    ]
    best, reason = pick(rows)
    return (
        _by_name(pool, best["name"]),
        f"measured at start-up on synthetic images: {reason}",
        opened[best["name"]],
    )


def _by_name(pool: Sequence[Candidate], name: str) -> Candidate:
    return next(c for c in pool if c.name == name)


def _interleaved_throughput(backends: dict[str, Backend], x: np.ndarray, budget_s: float) -> dict[str, float]:
    """Each backend's images/s over as many interleaved rounds (1-10) as fit in ``budget_s``."""
    fns = {name: (lambda b=b: b.run(x)) for name, b in backends.items()}
    probe = time_interleaved(fns, batch_size=len(x), warmup=0, rounds=1, iters=1)
    round_s = sum(len(x) / t["throughput"] for t in probe.values())
    rounds = int(min(10, max(1, budget_s // max(round_s, 1e-6))))
    timed = time_interleaved(fns, batch_size=len(x), warmup=0, rounds=rounds, iters=1)
    return {name: t["throughput"] for name, t in timed.items()}


def _check_images(input_shape: Sequence[int | None]) -> np.ndarray:
    """Uniform pixels through a unit-scale normalisation: seeded, so every start sees the same set."""
    _, c, h, w = (d or 1 for d in input_shape)
    rng = np.random.default_rng(0)
    return ((rng.random((CHECK_IMAGES, c, h, w), dtype=np.float32) - 0.45) / 0.225).astype(np.float32)


def _from_record(
    artifact: Path, digest: str, pool: Sequence[Candidate]
) -> tuple[Candidate, str, None] | None:
    """The choice the benchmark record beside ``artifact`` makes, if it was measured here on these bytes."""
    path = record_path(artifact)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("ignoring the benchmark record %s: %s", path, exc)
        return None
    host = host_fingerprint()
    if record.get("host") != host or record.get("sha256") != digest:
        logger.info("benchmark record %s is from another CPU or artifact: measuring at start-up", path)
        return None
    names = {c.name: c for c in pool}
    # Batch 32 (the server's default --max-batch) where measured, else the largest: the server batches under load.
    rows = [
        {**r, "images_per_s": r["throughput"].get("32") or r["throughput"][max(r["throughput"], key=int)]}
        for r in record.get("rows", [])
        if r.get("name") in names and r.get("throughput")
    ]
    if not rows:
        return None
    best, reason = pick(rows)
    return names[best["name"]], f"benchmark record {path.name} ({host['cpu']}): {reason}", None


def _verified(path: Path, artifact: Path, digest: str) -> str:
    """``path``'s digest: ``digest`` for the artifact itself, else checked against its own sidecar."""
    if path == artifact:
        return digest
    return verify_checksum(path, required=True)


def _has_valid_checksum(path: Path, artifact: Path) -> bool:
    if path == artifact:
        return True
    try:
        verify_checksum(path, required=True)
    except ArtifactError as exc:
        logger.warning("not a candidate: %s (%s)", path.name, exc)
        return False
    return True
