"""Fixtures shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from livt.data.formats import DATA_ROOT_ENV, idx


@pytest.fixture
def no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide $LIVT_DATA_ROOT and the Debian Fashion-MNIST folder."""
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr(idx, "SYSTEM_DIRS", (tmp_path / "no-system-data",))
