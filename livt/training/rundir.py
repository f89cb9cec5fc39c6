"""The run folder: choosing it, claiming it only once a run is ready to train, its ``train.log`` and
its ``metrics.jsonl``.

A run folder is planned (checked, nothing written) before a stage sets up and committed (created,
``config.yaml`` written, the log so far flushed into ``train.log``) just before the first step, so a
start that fails (a typo, missing data, a model that does not fit) leaves no folder behind. Without
``--out`` a run goes to ``runs/<stage>/<name>``, numbered ``<name>2``, ``<name>3``... so that it never
overwrites one. A folder that already holds a run (a ``config.yaml``) is only reused with ``resume``
(same config; ``epochs`` may grow) or ``overwrite`` (its outputs are deleted first), or when that run
never saved a checkpoint (a start that failed in its first epoch), which is replaced with a note.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livt.files import atomic_write_text
from livt.training.checkpoint import CheckpointError, find_checkpoint
from livt.training.config import ConfigError, TrainConfig
from livt.training.config_sources import config_to_yaml, load_run_config

_logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
HISTORY_FILE = "metrics.jsonl"
RUNS_DIR = Path("runs")
# Fields that do not change what is computed (where, how fast, who watches); never a reason to refuse a folder.
RUNTIME_FIELDS = ("out", "workers", "device", "compile", "logger")
_OUTPUTS = (
    CONFIG_FILE,
    LOG_FILE,
    HISTORY_FILE,
    "metrics.json",
    "checkpoints",
    "plots",
    "tensorboard",
    "mlruns",
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class RunFolder:
    """Where a run will write, as planned before its setup; ``commit`` creates it."""

    path: Path
    auto: bool  # chosen by default: claimed under the next free number at commit
    resume: bool
    replace: bool  # the outputs of the run already there are deleted at commit


def default_name(cfg: TrainConfig) -> str:
    """The data set's name, or for an image folder the folder's own name (``runs/finetune/flowers``)."""
    name = (
        Path(cfg.data_root).resolve().name if cfg.dataset == "imagefolder" and cfg.data_root else cfg.dataset
    )
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


def plan_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> RunFolder:
    """Check where ``cfg`` would write, against what is there; nothing is written.

    Raises:
        ConfigError: the folder holds a different run (without ``overwrite``), there is nothing to
            resume, or the folder cannot be created.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if not cfg.out:
        if resume or overwrite:
            flag = "--resume" if resume else "--overwrite"
            raise ConfigError(f"{flag} needs --out RUN_DIR (a default run folder is new every time)")
        return RunFolder(_next_free(RUNS_DIR / cfg.stage / default_name(cfg)), True, False, False)
    run_dir = Path(cfg.out)
    replace = overwrite
    if (run_dir / CONFIG_FILE).is_file():
        old = load_run_config(run_dir)
        ignore = (*RUNTIME_FIELDS, "epochs") if resume else RUNTIME_FIELDS
        diffs = (
            old.differences(cfg, ignore) if type(old) is type(cfg) else [f"stage: {old.stage} -> {cfg.stage}"]
        )
        if resume and diffs:
            raise ConfigError(f"cannot resume {run_dir}: its config differs ({'; '.join(diffs)})")
        if not resume and not overwrite:
            if _saved_a_checkpoint(run_dir):
                what = f"a run with a different config ({'; '.join(diffs)})" if diffs else "a run"
                raise ConfigError(
                    f"{run_dir} already holds {what}; pass --resume to continue it or --overwrite to replace it"
                )
            _logger.info("%s holds a run that never saved a checkpoint: it is replaced", run_dir)
            replace = True
    elif resume:
        raise ConfigError(f"nothing to resume: {run_dir} holds no {CONFIG_FILE}")
    _check_creatable(run_dir)
    return RunFolder(run_dir, False, resume, replace)


def commit_run_dir(folder: RunFolder, cfg: TrainConfig) -> Path:
    """Create the planned folder (rank 0 only), write ``config.yaml`` and start ``train.log`` there.

    Returns the folder, which for a default one is the number claimed now (another run may have
    taken the planned one meanwhile).
    """
    path = folder.path
    try:
        if folder.auto:
            # From the unnumbered name again: the planned number may be taken meanwhile.
            path = _claim(RUNS_DIR / cfg.stage / default_name(cfg))
        else:
            if folder.replace:
                for name in _OUTPUTS:
                    old = path / name
                    shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
            path.mkdir(parents=True, exist_ok=True)
        # Rewritten on resume too: ``epochs`` may have grown.
        atomic_write_text(path / CONFIG_FILE, config_to_yaml(dataclasses.replace(cfg, out=str(path))))
    except OSError as exc:
        raise ConfigError(f"output folder {path} is not writable: {exc.strerror or exc}") from exc
    RunLog.attach(path / LOG_FILE)
    _logger.info("run folder %s", path)
    return path


def _next_free(base: Path) -> Path:
    """``base``, else ``base2``, ``base3``... : the first that does not exist (Ultralytics' ``train2``)."""
    n = 1
    while (candidate := base if n == 1 else base.with_name(f"{base.name}{n}")).exists():
        n += 1
    return candidate


def _claim(base: Path) -> Path:
    """Create the first free ``base``, ``base2``... exclusively, so two runs never share one."""
    path = _next_free(base)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path = _next_free(base)


def _saved_a_checkpoint(run_dir: Path) -> bool:
    try:
        find_checkpoint(run_dir, "last")
    except CheckpointError:
        return False
    return True


def _check_creatable(folder: Path) -> None:
    """Fail now, not after the setup, when ``folder`` cannot be created or written (nothing is made)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = "Not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = "Permission denied"
    else:
        return
    raise ConfigError(f"output folder {folder} is not writable: {reason} ({existing})")


class RunLog(logging.Handler):
    """The ``livt`` loggers' records of one command: held in memory until the run folder exists,
    then written to its ``train.log`` (and everything after them)."""

    _active: RunLog | None = None

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._held.append(record)
        else:
            self._file.emit(record)

    @classmethod
    def attach(cls, path: Path) -> None:
        """Send the held records and all later ones to ``path`` (appended: a resumed run continues it)."""
        log = cls._active
        if log is None or log._file is not None:
            return
        log._file = logging.FileHandler(path, encoding="utf-8")
        log._file.setFormatter(log.formatter)
        for record in log._held:
            log._file.emit(record)
        log._held.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextlib.contextmanager
def run_log(is_main: bool = True) -> Iterator[None]:
    """Collect the ``livt`` loggers' INFO records for ``train.log`` (rank 0; other ranks log warnings).

    Nested uses share the outer one, so the CLI can hold what it logs before a stage starts (such as
    the recipe options a ``--dataset`` dropped) for the run's log.
    """
    logger = logging.getLogger("livt")
    old_level = logger.level
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    outer = RunLog._active is None
    if outer:
        RunLog._active = RunLog()
        logger.addHandler(RunLog._active)
    try:
        yield
    finally:
        if outer:
            logger.removeHandler(RunLog._active)
            RunLog._active.close()
            RunLog._active = None
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
