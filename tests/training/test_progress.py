"""Progress output: bars on a terminal only, one line an epoch in a redirected log (``--progress``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livt.training.progress import console_progress
from tests.training.conftest import PRETRAIN

# A few steps an epoch: what is measured is the output, not the training.
_ARGS = [a for a in PRETRAIN if a != "--quiet"] + ["--data-opt", "n_max=16", "--min-steps-per-epoch", "0"]


def _pretrain(tmp_path: Path, *flags: str) -> tuple[str, Path]:
    """A real ``livt-train pretrain`` with stderr to a pipe (as ``make demo > log 2>&1``); its stderr."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "livt.training.cli", "pretrain", *_ARGS, *flags, "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, timeout=300, check=True)
    return result.stderr.decode(), out  # bytes: text mode would turn tqdm's carriage returns into newlines


# Slow: spawning this child from the full default run's pytest process (after about 960 tests, with
# torch, ONNX Runtime and OpenVINO loaded in it) killed that process with SIGSEGV, reproducibly, while
# the same tests pass alone and beside every folder tried; ``pytest -m slow`` runs them.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "none", "line", "bar"])
def test_redirected_stage_log_by_progress_mode(tmp_path: Path, mode: str):
    err, out = _pretrain(tmp_path, "--progress", mode)
    lines = [line for line in err.splitlines() if "  loss " in line and " img/s " in line]
    assert ("\r" in err) == (mode == "bar")  # tqdm redraws with carriage returns
    assert len(lines) == (0 if mode == "none" else 2)  # --epochs 2
    log = (out / "train.log").read_text()
    assert log.count(" img/s ") == 2 and "\r" not in log  # the run's log has the epoch lines in every mode


def test_auto_draws_bars_on_a_terminal(monkeypatch: pytest.MonkeyPatch):
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            with console_progress("auto") as bars:
                assert bars
            with console_progress("line") as bars:
                assert not bars
    finally:
        os.close(leader)
    with pytest.raises(ValueError, match="progress must be one of"), console_progress("fancy"):
        pass
