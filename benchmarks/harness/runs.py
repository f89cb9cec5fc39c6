"""The state of a run folder, for the runners that build many runs and reuse the finished ones.

``run_state`` says whether a folder holds no run, a run that never saved a checkpoint, a partial run
or a finished one; ``check_reusable`` refuses a finished run whose config is not the one asked for,
so a study or a sweep never reports a run that trained something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livt.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint_meta
from livt.training.config import ConfigError
from livt.training.config_sources import build_config, load_run_config
from livt.training.rundir import CONFIG_FILE, RUNTIME_FIELDS


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
    wanted = build_config(stage, recipe=recipe, overrides=overrides)
    diffs = load_run_config(run_dir).differences(wanted, RUNTIME_FIELDS)
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a finished run with another config ({'; '.join(diffs)}); "
            "delete it or choose another --runs folder"
        )
