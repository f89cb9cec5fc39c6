"""Tiny synthetic-tiny runs shared by the training tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livt.training.cli import main

# A smaller cut of the synthetic-tiny recipe: seconds per stage on one CPU core.
TINY = ["--recipe", "synthetic-tiny", "--workers", "0", "--quiet"]
PRETRAIN = [*TINY, "--epochs", "2"]
FINETUNE = [*TINY, "--epochs", "4"]


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pre"
    assert main(["pretrain", *PRETRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def finetune_run(pretrain_run: Path) -> Path:
    out = pretrain_run.parent / "ft"
    assert main(["finetune", *FINETUNE, "--init", str(pretrain_run), "--out", str(out)]) == 0
    return out


def damage(path: Path, how: str) -> None:
    """Damage a checkpoint file as a failing disk or an interrupted copy would.

    ``zeroed`` clears the second half (a safetensors header survives it, so the file still loads),
    ``truncated`` cuts it there.
    """
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes(data[:half] + (bytes(len(data) - half) if how == "zeroed" else b""))
