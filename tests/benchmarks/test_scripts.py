"""Every benchmark script still imports and parses its flags: a refactor of what they use shows here."""

from __future__ import annotations

from pathlib import Path

import pytest

from .scripts import BENCHMARKS, load_script

SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if "def main(" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_imports_and_prints_its_help(script: Path, capsys: pytest.CaptureFixture[str]):
    module = load_script(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_every_script_is_covered():
    assert len(SCRIPTS) >= 10, SCRIPTS
