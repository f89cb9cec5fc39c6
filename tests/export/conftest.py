"""A tiny fine-tuned run folder shared by the export tests, trained by ``livt-train`` itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from livt.training.checkpoint import load_checkpoint_meta
from livt.training.cli import main as train_main


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``livt-train finetune --recipe synthetic-tiny --from-scratch``: vit_micro, 10 synthetic classes, 32 px."""
    run = tmp_path_factory.mktemp("export-run") / "run"
    # One intra-op thread: on a small shared CPU, OpenMP threads contending with other processes make
    # this run several times slower (measured 10 s vs 50 s on 2 busy cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["finetune", "--recipe", "synthetic-tiny", "--from-scratch", "--quiet", "--out", str(run)]
        assert train_main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="session")
def run_meta(run_dir: Path) -> dict:
    """The run's best checkpoint ``meta.json``."""
    return load_checkpoint_meta(run_dir / "checkpoints" / "best")
