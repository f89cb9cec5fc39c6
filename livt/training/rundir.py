"""The run folder: creating it safely, its ``train.log`` and its ``metrics.jsonl``.

A folder that already holds a run (a ``config.yaml``) is only reused with ``resume`` (same config;
``epochs`` may grow) or ``overwrite`` (its outputs are deleted first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from livt.training.checkpoint import CheckpointError, atomic_write_text, find_checkpoint, load_checkpoint_meta
from livt.training.config import ConfigError, TrainConfig, config_to_yaml, load_run_config

CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
HISTORY_FILE = "metrics.jsonl"
# Fields that do not change what is computed (where, how fast); never a reason to refuse a folder.
RUNTIME_FIELDS = ("out", "workers", "device", "compile")
_OUTPUTS = (CONFIG_FILE, LOG_FILE, HISTORY_FILE, "metrics.json", "checkpoints", "plots")


def prepare_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> Path:
    """Check the run folder against ``cfg``, make sure it is writable and write ``config.yaml``.

    Raises:
        ConfigError: the folder holds a different run (without ``overwrite``), there is nothing to
            resume, or the folder cannot be written.
    """
    run_dir = Path(cfg.out)
    saved = run_dir / CONFIG_FILE
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if saved.is_file():
        old = load_run_config(run_dir)
        ignore = (*RUNTIME_FIELDS, "epochs") if resume else RUNTIME_FIELDS
        diffs = (
            old.differences(cfg, ignore) if type(old) is type(cfg) else [f"stage: {old.stage} -> {cfg.stage}"]
        )
        if resume and diffs:
            raise ConfigError(f"cannot resume {run_dir}: its config differs ({'; '.join(diffs)})")
        if not resume and not overwrite:
            what = f"a run with a different config ({'; '.join(diffs)})" if diffs else "a run"
            raise ConfigError(
                f"{run_dir} already holds {what}; pass --resume to continue it or --overwrite to replace it"
            )
        if overwrite:
            for name in _OUTPUTS:
                path = run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
    elif resume:
        raise ConfigError(f"nothing to resume: {run_dir} holds no {CONFIG_FILE}")
    check_writable(run_dir)
    atomic_write_text(saved, config_to_yaml(cfg))
    return run_dir


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"output folder {folder} is not writable: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def log_to_file(run_dir: Path, is_main: bool = True) -> Iterator[None]:
    """Copy the ``livt`` loggers' INFO records into ``run_dir/train.log`` (rank 0; others log warnings)."""
    logger = logging.getLogger("livt")
    old_level = logger.level
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    handler = None
    if is_main:
        handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(old_level)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_history(run_dir: Path, epochs: int) -> None:
    """Keep the records of epochs ``< epochs``: a resumed run rewrites what came after its checkpoint."""
    kept = [r for r in read_history(run_dir) if r["epoch"] < epochs]
    atomic_write_text(Path(run_dir) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in kept))


def append_history(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / HISTORY_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def run_state(stage: str, run_dir: Path) -> str:
    """``new`` (no run), ``stale`` (config but no checkpoint), ``partial`` or ``done``.

    A fine-tuning run is done once it has written its test metrics; a pretraining run once its last
    checkpoint is of its last epoch.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        return "new"
    if stage == "finetune" and (run_dir / "metrics.json").is_file():
        return "done"
    try:
        meta = load_checkpoint_meta(find_checkpoint(run_dir, "last"))
    except CheckpointError:
        return "stale"
    if stage == "pretrain" and meta["epoch"] + 1 >= load_run_config(run_dir).epochs:
        return "done"
    return "partial"


def check_reusable(stage: str, run_dir: Path, recipe: str | Path, overrides: dict[str, Any]) -> None:
    """A finished run is reused only when its config is the one asked for; ``ConfigError`` otherwise.

    For the runners that build many runs from one recipe (benchmarks/study.py, benchmarks/sweep.py).
    """
    from livt.training.config import build_config

    wanted = build_config(stage, recipe=recipe, overrides=overrides)
    diffs = load_run_config(run_dir).differences(wanted, RUNTIME_FIELDS)
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a finished run with another config ({'; '.join(diffs)}); "
            "delete it or choose another --runs folder"
        )
