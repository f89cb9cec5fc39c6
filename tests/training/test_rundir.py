"""livt.training.rundir: a run folder planned without writing, committed once, its log and history."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from harness.runs import check_reusable, run_state

from livt.training.checkpoint import save_checkpoint
from livt.training.config import ConfigError
from livt.training.config_sources import build_config, load_run_config
from livt.training.rundir import (
    CONFIG_FILE,
    HISTORY_FILE,
    LOG_FILE,
    append_history,
    commit_run_dir,
    default_name,
    plan_run_dir,
    read_history,
    run_log,
    truncate_history,
)

_logger = logging.getLogger("livt.test")


def _config(stage: str = "finetune", **overrides):
    if stage == "finetune":
        overrides = {"from_scratch": True, **overrides}
    return build_config(stage, recipe="synthetic-tiny", overrides=overrides)


def _checkpoint(run_dir: Path, epoch: int) -> None:
    """A real (tiny) checkpoint of ``epoch`` in ``run_dir/checkpoints/last``."""
    save_checkpoint(run_dir / "checkpoints" / "last", torch.nn.Linear(2, 2), {"epoch": epoch})


def test_default_name_is_the_data_set_or_the_image_folder(tmp_path: Path):
    assert default_name(_config()) == "synthetic"
    folder = tmp_path / "my flowers!"
    assert default_name(_config(dataset="imagefolder", data_root=str(folder))) == "my-flowers"


def test_a_default_folder_is_the_next_free_number_and_is_claimed_at_commit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "finetune" / "synthetic").mkdir(parents=True)
    planned = plan_run_dir(_config(), resume=False, overwrite=False)
    assert planned.path == Path("runs/finetune/synthetic2") and planned.auto
    assert not planned.path.exists()  # planning writes nothing
    planned.path.mkdir()  # another run takes it meanwhile
    with run_log():
        path = commit_run_dir(planned, _config())
    assert path == Path("runs/finetune/synthetic3")
    assert load_run_config(path).out == str(path)


def test_the_log_held_before_the_commit_lands_in_train_log(tmp_path):
    cfg = _config(out=str(tmp_path / "run"))
    with run_log():
        _logger.info("before the folder exists")
        folder = plan_run_dir(cfg, resume=False, overwrite=False)
        assert not folder.path.exists()
        commit_run_dir(folder, cfg)
        _logger.info("after it")
    text = (tmp_path / "run" / LOG_FILE).read_text()
    assert text.index("before the folder exists") < text.index("after it")
    assert "run folder" in text


@pytest.mark.parametrize(
    ("resume", "overwrite", "message"),
    [
        (True, True, "--resume and --overwrite exclude each other"),
        (True, False, r"--resume needs --out RUN_DIR"),
        (False, True, r"--overwrite needs --out RUN_DIR"),
    ],
)
def test_flags_that_need_an_explicit_folder(resume, overwrite, message):
    with pytest.raises(ConfigError, match=message):
        plan_run_dir(_config(), resume=resume, overwrite=overwrite)


def test_a_finished_run_is_refused_resumed_or_replaced(tmp_path):
    run = tmp_path / "run"
    cfg = _config(out=str(run))
    with run_log():
        commit_run_dir(plan_run_dir(cfg, resume=False, overwrite=False), cfg)
    _checkpoint(run, epoch=0)
    append_history(run, {"epoch": 0})
    (run / "notes.txt").write_text("mine")

    with pytest.raises(ConfigError, match=r"already holds a run; pass --resume .* or --overwrite"):
        plan_run_dir(cfg, resume=False, overwrite=False)
    other = _config(out=str(run), lr=0.5)
    with pytest.raises(ConfigError, match=r"a run with a different config \(lr: "):
        plan_run_dir(other, resume=False, overwrite=False)
    with pytest.raises(ConfigError, match=r"cannot resume .*: its config differs \(lr: "):
        plan_run_dir(other, resume=True, overwrite=False)
    with pytest.raises(ConfigError, match=r"stage: finetune -> pretrain"):
        plan_run_dir(_config("pretrain", out=str(run)), resume=True, overwrite=False)

    longer = _config(out=str(run), epochs=cfg.epochs + 3)
    resumed = plan_run_dir(longer, resume=True, overwrite=False)  # more epochs: still the same run
    assert resumed.resume and not resumed.replace

    replaced = plan_run_dir(other, resume=False, overwrite=True)
    assert replaced.replace and (run / HISTORY_FILE).exists()  # planning deletes nothing
    with run_log():
        commit_run_dir(replaced, other)
    assert not (run / HISTORY_FILE).exists() and not (run / "checkpoints").exists()
    assert (run / "notes.txt").read_text() == "mine"  # not an output of the run: kept
    assert load_run_config(run).lr == 0.5


def test_a_run_that_never_saved_a_checkpoint_is_replaced(tmp_path):
    run = tmp_path / "run"
    cfg = _config(out=str(run))
    with run_log():
        commit_run_dir(plan_run_dir(cfg, resume=False, overwrite=False), cfg)
    assert plan_run_dir(_config(out=str(run), lr=0.5), resume=False, overwrite=False).replace


def test_nothing_to_resume_and_a_folder_that_cannot_be_made(tmp_path):
    with pytest.raises(ConfigError, match=rf"nothing to resume: .* holds no {CONFIG_FILE}"):
        plan_run_dir(_config(out=str(tmp_path / "none")), resume=True, overwrite=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"is not writable: Not a directory"):
        plan_run_dir(_config(out=str(tmp_path / "file" / "run")), resume=False, overwrite=False)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match=r"is not writable: Permission denied"):
            plan_run_dir(_config(out=str(locked / "run")), resume=False, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", *(["locked"] if os.geteuid() else [])]


def test_history_is_appended_read_and_cut_back_to_a_checkpoint(tmp_path):
    assert read_history(tmp_path) == []
    for epoch in range(4):
        append_history(tmp_path, {"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    assert [r["epoch"] for r in read_history(tmp_path)] == [0, 1, 2, 3]
    truncate_history(tmp_path, 2)
    assert read_history(tmp_path) == [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]


def test_run_state_and_reuse_for_the_runners(tmp_path):
    run = tmp_path / "run"
    assert run_state("pretrain", run) == "new"
    cfg = _config("pretrain", out=str(run), epochs=2)
    with run_log():
        commit_run_dir(plan_run_dir(cfg, resume=False, overwrite=False), cfg)
    assert run_state("pretrain", run) == "stale"
    _checkpoint(run, epoch=0)
    assert run_state("pretrain", run) == "partial"
    _checkpoint(run, epoch=1)
    assert run_state("pretrain", run) == "done"
    check_reusable("pretrain", run, "synthetic-tiny", {"epochs": 2, "out": "elsewhere"})  # where: no matter
    with pytest.raises(ConfigError, match=r"holds a finished run with another config \(epochs: 2 -> 3\)"):
        check_reusable("pretrain", run, "synthetic-tiny", {"epochs": 3})

    finetune = tmp_path / "ft"
    ft_cfg = _config(out=str(finetune))
    with run_log():
        commit_run_dir(plan_run_dir(ft_cfg, resume=False, overwrite=False), ft_cfg)
    (finetune / "metrics.json").write_text("{}")
    assert run_state("finetune", finetune) == "done"  # its test metrics are written last
