"""Experiment tracking: a run's scalars sent to TensorBoard, MLflow or W&B as well as to its own files.

Off by default (``--logger none``). Every tracker writes locally and downloads nothing: TensorBoard
event files in ``RUN_DIR/tensorboard``, MLflow a SQLite store ``RUN_DIR/mlflow.db`` (MLflow 3's
local backend; ``MLFLOW_TRACKING_URI`` names another), W&B in offline mode (unless ``WANDB_MODE``
says otherwise).
The libraries are optional, imported only when asked for; a missing one is a one-line
``ConfigError`` naming what to install, raised before the run folder is created.

Scalars are logged per epoch (step = the epoch, counted from 1) under ``train/``, ``val/`` and, once
at the end, ``test/``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from livt.training.config import ConfigError, TrainConfig

# tracker name -> (module to import, what to install)
_LIBRARIES = {
    "tensorboard": (("tensorboard",), "pip install 'livt[track]' (or pip install tensorboard)"),
    # mlflow-skinny lacks what the local SQLite store needs
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "pip install mlflow"),
    "wandb": (("wandb",), "pip install wandb"),
}


class Tracker(Protocol):
    def log(self, step: int, scalars: Mapping[str, float | None]) -> None: ...

    def close(self) -> None: ...


def check_tracker(name: str) -> None:
    """Raise ``ConfigError`` now when tracker ``name``'s library is not installed."""
    if name == "none":
        return
    if name not in _LIBRARIES:
        raise ConfigError(f"unknown logger {name!r}; choose one of none, {', '.join(_LIBRARIES)}")
    modules, install = _LIBRARIES[name]
    for module in modules:
        if name == "mlflow" and module != "mlflow" and os.environ.get("MLFLOW_TRACKING_URI"):
            continue  # a store of the user's own
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--logger {name} needs the {module} package: {install}") from exc


def open_tracker(cfg: TrainConfig, run_dir: Path, *, enabled: bool = True) -> Tracker:
    """The tracker ``cfg.logger`` names for the run in ``run_dir``, with the config recorded
    (``enabled=False``, on ranks other than 0: one that records nothing)."""
    name = cfg.logger if enabled else "none"
    check_tracker(name)
    opener = {"none": _Null, "tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}[name]
    return opener(cfg, Path(run_dir))


class _Null:
    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        pass

    def log(self, step: int, scalars: Mapping[str, float | None]) -> None:
        pass

    def close(self) -> None:
        pass


class _TensorBoard:
    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self._writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in cfg.to_dict().items()))

    def log(self, step: int, scalars: Mapping[str, float | None]) -> None:
        for key, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class _MLflow:
    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        # A client of its own: the global mlflow state (an active run, a tracking URI) stays the user's.
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self._client = MlflowClient(tracking_uri=uri)
        name = f"livt-{cfg.stage}"
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(name)
        self._run_id = self._client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        for key, value in _flat(cfg.to_dict()).items():
            self._client.log_param(self._run_id, key, value)

    def log(self, step: int, scalars: Mapping[str, float | None]) -> None:
        for key, value in scalars.items():
            if value is not None:
                self._client.log_metric(self._run_id, key, value, step=step)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


class _WandB:
    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        import wandb

        self._run = wandb.init(
            project=f"livt-{cfg.stage}",
            name=run_dir.name,
            dir=str(run_dir),
            config=cfg.to_dict(),
            mode=os.environ.get("WANDB_MODE", "offline"),
        )

    def log(self, step: int, scalars: Mapping[str, float | None]) -> None:
        self._run.log({k: v for k, v in scalars.items() if v is not None}, step=step)

    def close(self) -> None:
        self._run.finish()


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dataset_options": {"seed": 0}}`` -> ``{"dataset_options.seed": 0}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
