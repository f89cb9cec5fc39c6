"""harness.batchrun: real livt-train processes, side by side, with logs and prerequisites."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.batchrun import BatchRunError, Command, cli_flags, run_batch


def _evaluate_missing(run: Path) -> tuple[str, ...]:
    # A livt-train command that fails fast (no such run folder) without training anything.
    return ("evaluate", "--run", str(run))


def test_failures_name_their_log_and_skip_what_waits_for_them(tmp_path: Path) -> None:
    commands = [
        Command(_evaluate_missing(tmp_path / "nope"), tmp_path / "a.log"),
        Command(("pretrain", "--help"), tmp_path / "b.log"),
        Command(("pretrain", "--help"), tmp_path / "c.log", after=(0,)),
    ]
    with pytest.raises(BatchRunError) as exc:
        run_batch(commands, jobs=2)
    message = str(exc.value)
    assert "failed with status" in message and str(tmp_path / "a.log") in message and "nope" in message
    assert "skipped: a run it starts from failed" in message
    assert "usage: livt-train pretrain" in (tmp_path / "b.log").read_text()  # ran, independent of the failure
    assert not (tmp_path / "c.log").exists()


def test_a_command_may_only_wait_for_earlier_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="earlier commands"):
        run_batch([Command(("pretrain", "--help"), tmp_path / "a.log", after=(0,))], jobs=1)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_batch([], jobs=0)


def test_cli_flags_spell_overrides_as_livt_train_flags() -> None:
    flags = cli_flags(
        {"drop_path": 0.1, "from_scratch": True, "init": None, "quiet": False, "epochs": 3, "aa": "none"}
    )
    assert flags == ["--drop-path", "0.1", "--from-scratch", "--epochs", "3", "--aa", "none"]
