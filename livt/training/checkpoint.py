"""Checkpoints: safetensors weights, a plain-JSON ``meta.json``, and a ``state.pt`` for resuming.

Every file is written atomically (temporary file in the same folder, fsync, rename) so a run that is
killed while saving leaves the previous checkpoint intact. ``state.pt`` holds only tensors and plain
Python containers so it loads with ``torch.load(weights_only=True)``; nothing is pickled as an object.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint or run folder that is missing or unreadable."""


def atomic_write(path: Path, write: Any) -> None:
    """Write ``path`` through ``write(tmp_path)`` on a temporary sibling, fsync it, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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
    atomic_write(staging / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    if state is not None:
        atomic_write(staging / STATE_FILE, lambda tmp: torch.save(state, tmp))
    # meta.json last: a staging folder holding it is complete.
    atomic_write_text(staging / META_FILE, json.dumps(meta, indent=2, sort_keys=False) + "\n")
    shutil.rmtree(retired, ignore_errors=True)
    if ckpt_dir.exists():
        os.replace(ckpt_dir, retired)
    os.replace(staging, ckpt_dir)
    shutil.rmtree(retired, ignore_errors=True)


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
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def load_model_weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(ckpt_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    return load_file(str(path))


def load_training_state(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: this checkpoint cannot be resumed")
    return torch.load(path, map_location="cpu", weights_only=True)


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
