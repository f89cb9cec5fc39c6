"""The export tests' view of the shared tiny run (``run_dir``, in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livt.training.checkpoint import load_checkpoint_meta


@pytest.fixture(scope="session")
def run_meta(run_dir: Path) -> dict:
    """The run's best checkpoint ``meta.json``."""
    return load_checkpoint_meta(run_dir / "checkpoints" / "best")
