"""Checkpoints: safetensors weights, a plain-JSON ``meta.json``, and a ``state.pt`` for resuming.

Every file is written atomically (temporary file in the same folder, fsync, rename) so a run that is
killed while saving leaves the previous checkpoint intact. ``state.pt`` holds only tensors and plain
Python containers so it loads with ``torch.load(weights_only=True)``; nothing is pickled as an object.

``meta.json``, written last, records the size and sha256 of the other files, and the loaders
(``load_model_weights``, ``load_training_state``) check a file against them before reading it: a
file damaged on disk or in a copy is refused in one line naming it, never trained on or exported.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from livt.artifact import sha256_file
from livt.files import atomic_write, atomic_write_text
from livt.metrics import FEW_THRESHOLD, MANY_THRESHOLD

_logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "state.pt"
# meta.json key: {file name: {"sha256": hex, "size": bytes}} for every other file of the checkpoint.
FILES_KEY = "files"
# What a fine-tuned classifier's meta.json must hold for it to be evaluated or exported.
CLASSIFIER_KEYS = ("stage", "model", "classes", "class_counts", "loss", "tau", "preprocess", "dataset")


class CheckpointError(RuntimeError):
    """A checkpoint or run folder that is missing or unreadable."""


def save_checkpoint(
    ckpt_dir: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None = None
) -> None:
    """Save ``model`` (unwrapped, uncompiled) weights, ``meta`` and optional resume ``state``.

    The files are written into a sibling ``.NAME.new`` folder which then replaces ``NAME`` by two
    renames, so weights, optimizer state and meta always belong to the same step: a run killed
    while saving keeps the previous checkpoint (or the complete new one, see ``find_checkpoint``).
    """
    ckpt_dir = Path(ckpt_dir)
    staging, retired = _sibling(ckpt_dir, "new"), _sibling(ckpt_dir, "old")
    shutil.rmtree(staging, ignore_errors=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    files = {WEIGHTS_FILE: _write_recorded(staging / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))}
    if state is not None:
        files[STATE_FILE] = _write_recorded(staging / STATE_FILE, lambda tmp: torch.save(state, tmp))
    # meta.json last: a staging folder holding it is complete.
    text = json.dumps({**meta, FILES_KEY: files}, indent=2, sort_keys=False) + "\n"
    atomic_write_text(staging / META_FILE, text)
    shutil.rmtree(retired, ignore_errors=True)
    if ckpt_dir.exists():
        os.replace(ckpt_dir, retired)
    os.replace(staging, ckpt_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _write_recorded(path: Path, write: Any) -> dict[str, Any]:
    """``atomic_write`` that returns the file's ``FILES_KEY`` entry.

    The temporary file is hashed once, just written (so from the page cache) and before the
    rename: the digest is of the bytes that land on disk, and hashing the serializer's output while
    it is written would cost the same sha256 work.
    """
    entry: dict[str, Any] = {}

    def write_and_hash(tmp: Path) -> None:
        write(tmp)
        entry.update(sha256=sha256_file(tmp), size=tmp.stat().st_size)

    atomic_write(path, write_and_hash)
    return entry


def _sibling(ckpt_dir: Path, kind: str) -> Path:
    return ckpt_dir.parent / f".{ckpt_dir.name}.{kind}"


def _recover(ckpt_dir: Path) -> None:
    """Finish a swap that a killed run left half done (``NAME`` missing between the two renames)."""
    if ckpt_dir.exists():
        return
    staging, retired = _sibling(ckpt_dir, "new"), _sibling(ckpt_dir, "old")
    if (staging / META_FILE).is_file():
        os.replace(staging, ckpt_dir)
    elif retired.is_dir():
        os.replace(retired, ckpt_dir)


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The checkpoint folder ``run_dir/checkpoints/<which>``; ``best`` falls back to ``last``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    candidates = [which] + (["last"] if which == "best" else [])
    for name in candidates:
        ckpt = run_dir / "checkpoints" / name
        _recover(ckpt)
        if (ckpt / META_FILE).is_file() and (ckpt / WEIGHTS_FILE).is_file():
            return ckpt
    raise CheckpointError(
        f"no '{which}' checkpoint in {run_dir} (looked for checkpoints/{'|'.join(candidates)}/"
        f"{{{META_FILE},{WEIGHTS_FILE}}}); is it a livt-train run folder?"
    )


def load_checkpoint_meta(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} does not exist") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return meta


def load_model_weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, checked against ``meta.json`` first (``CheckpointError`` if damaged)."""
    path = _verified(Path(ckpt_dir), WEIGHTS_FILE)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from exc


def load_training_state(ckpt_dir: Path) -> dict[str, Any]:
    """The checkpoint's resume state, checked against ``meta.json`` first (``CheckpointError`` if damaged)."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_FILE).is_file():
        raise CheckpointError(f"{ckpt_dir / STATE_FILE} does not exist: this checkpoint cannot be resumed")
    path = _verified(ckpt_dir, STATE_FILE)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise _unreadable(path, exc) from exc


def recorded_sha256(ckpt_dir: Path, name: str = WEIGHTS_FILE) -> str:
    """The sha256 of ``ckpt_dir/name`` that ``meta.json`` records (and the loaders verify).

    Hashed from the file for a checkpoint written before checksums were recorded.
    """
    entry = load_checkpoint_meta(ckpt_dir).get(FILES_KEY, {}).get(name)
    return entry["sha256"] if entry else sha256_file(Path(ckpt_dir) / name)


class Classifier(NamedTuple):
    """A fine-tuned classifier in eval mode, the checkpoint it came from and that checkpoint's meta.json."""

    model: nn.Module
    ckpt_dir: Path
    meta: dict[str, Any]


def load_classifier(run_dir: Path, which: str = "best") -> Classifier:
    """The classifier of a fine-tuned run folder's ``checkpoints/<which>`` (``best`` falls back to
    ``last``), built from its ``meta.json`` and loaded (verified) strictly, in eval mode.

    The one way evaluation and export load a trained model. Raises ``CheckpointError`` for a missing
    run, a pretrain run, an incomplete or inconsistent ``meta.json``, or weights that are damaged or
    of another model.
    """
    from livt.models import ViTConfig, create_classifier

    ckpt_dir = find_checkpoint(run_dir, which)
    meta = load_checkpoint_meta(ckpt_dir)
    if meta.get("stage") != "finetune":
        raise CheckpointError(
            f"{ckpt_dir} is a {meta.get('stage')!r} checkpoint, not a fine-tuned classifier "
            "(run `livt-train finetune` on it first)"
        )
    missing = [k for k in CLASSIFIER_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{ckpt_dir}/{META_FILE} lacks {missing}; was it written by livt-train?")
    num_classes = meta["model"].get("num_classes") if isinstance(meta["model"], dict) else None
    if not len(meta["classes"]) == len(meta["class_counts"]) == num_classes:
        raise CheckpointError(f"{ckpt_dir}/{META_FILE}: classes, class_counts and model.num_classes disagree")
    try:
        model = create_classifier(ViTConfig.from_dict(meta["model"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{ckpt_dir}/{META_FILE}: invalid model config: {exc}") from exc
    weights = load_model_weights(ckpt_dir)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        # Missing/unexpected keys or shape mismatches against meta.json's model.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{ckpt_dir}/{WEIGHTS_FILE}: cannot load the weights: {reason}") from exc
    return Classifier(model.eval(), ckpt_dir, meta)


def recorded_thresholds(meta: dict[str, Any]) -> tuple[int, int]:
    """``(many, few)``: the Many/Few thresholds a fine-tuning run recorded in its ``meta.json``.

    A checkpoint written before they were recorded gets the defaults, with a warning.
    """
    if "many_threshold" in meta and "few_threshold" in meta:
        return int(meta["many_threshold"]), int(meta["few_threshold"])
    _logger.warning(
        "meta.json records no Many/Few thresholds (written before livt kept them): using %d/%d",
        MANY_THRESHOLD, FEW_THRESHOLD,
    )  # fmt: skip
    return MANY_THRESHOLD, FEW_THRESHOLD


def _verified(ckpt_dir: Path, name: str) -> Path:
    """``ckpt_dir/name`` once its size and sha256 match ``meta.json``'s record; ``CheckpointError`` if not.

    A checkpoint from before the record was kept loads with a warning: refusing it would strand
    finished runs, and the readers still reject a truncated file; only damage that keeps the
    format readable (zeroed or flipped bytes) goes unnoticed there.
    """
    path = ckpt_dir / name
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    meta = load_checkpoint_meta(ckpt_dir)
    if FILES_KEY not in meta:
        _logger.warning(
            "%s records no checksums (written before livt kept them): %s is loaded unverified", ckpt_dir, name
        )
        return path
    problem = _file_problem(ckpt_dir, name, meta)
    if problem is not None:
        raise CheckpointError(f"{path} {problem}; {_fallback_hint(ckpt_dir)}")
    return path


def _file_problem(ckpt_dir: Path, name: str, meta: dict[str, Any]) -> str | None:
    """Why ``ckpt_dir/name`` does not match ``meta``'s record of it; None when it matches."""
    record = meta.get(FILES_KEY)
    if not isinstance(record, dict):
        return f"cannot be checked: {META_FILE} '{FILES_KEY}' is not an object"
    entry = record.get(name)
    if not isinstance(entry, dict) or not {"sha256", "size"} <= entry.keys():
        return f"is not part of this checkpoint (its {META_FILE} records no sha256 and size for it)"
    size = (ckpt_dir / name).stat().st_size
    if size != entry["size"]:
        return f"has {size} bytes, {META_FILE} records {entry['size']} (truncated or overwritten)"
    if sha256_file(ckpt_dir / name) != entry["sha256"]:
        return f"is damaged: its sha256 differs from the one {META_FILE} records"
    return None


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CheckpointError(f"{path} cannot be read ({reason}); {_fallback_hint(path.parent)}")


def _fallback_hint(ckpt_dir: Path) -> str:
    """Which other checkpoint of the run folder is intact, and what it can still be used for.

    Only on the way to an error, so hashing the other checkpoint costs a healthy run nothing.
    """
    intact = next((other for other in _other_checkpoints(ckpt_dir) if _weights_intact(other)), None)
    resumable = (ckpt_dir / STATE_FILE).is_file()  # checkpoints/last: the run cannot be continued
    if intact is None:
        return "no other checkpoint of this run is intact" + (
            ": start the run again with --overwrite" if resumable else ""
        )
    if resumable and not (intact / STATE_FILE).is_file():
        return (
            f"{_describe(intact)} is intact but holds no resume state: evaluate or export it "
            f"(--checkpoint {intact.name}), or start the run again with --overwrite"
        )
    return f"{_describe(intact)} is intact: use it instead (--checkpoint {intact.name})"


def _other_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The run folder's other checkpoints (``checkpoints/*``), in name order."""
    if ckpt_dir.parent.name != "checkpoints":
        return []
    return sorted(
        other
        for other in ckpt_dir.parent.iterdir()
        if other != ckpt_dir and not other.name.startswith(".") and (other / META_FILE).is_file()
    )


def _weights_intact(ckpt_dir: Path) -> bool:
    try:
        meta = load_checkpoint_meta(ckpt_dir)
    except CheckpointError:
        return False
    if not (ckpt_dir / WEIGHTS_FILE).is_file():
        return False
    return FILES_KEY not in meta or _file_problem(ckpt_dir, WEIGHTS_FILE, meta) is None


def _describe(ckpt_dir: Path) -> str:
    epoch = load_checkpoint_meta(ckpt_dir).get("epoch")
    return f"checkpoints/{ckpt_dir.name}" + (f" (epoch {epoch})" if epoch is not None else "")


def capture_rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and Python ``random`` states as tensors and plain lists.

    Plain containers keep ``state.pt`` loadable with ``weights_only=True``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss_next],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
