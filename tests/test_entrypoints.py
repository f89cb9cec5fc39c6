"""The console scripts: a missing dependency is one line naming it and the install, not a traceback."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from livt import entrypoints


def test_livt_train_without_torch_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # As in the serving image: livt is installed, torch is not.
    for name in [m for m in sys.modules if m == "livt.training.cli" or m.split(".")[0] == "torch"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    assert entrypoints.train() == entrypoints.EXIT_MISSING
    err = capsys.readouterr().err
    assert "livt-train: needs the package 'torch'" in err and "pip install torch torchvision" in err


def _command_failing_with(name: str) -> SimpleNamespace:
    def main() -> int:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    return SimpleNamespace(main=main)


def test_a_dependency_imported_by_the_command_itself_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # livt-export reads its flags before it imports torch and onnx.
    monkeypatch.setattr(
        entrypoints.importlib, "import_module", lambda _: _command_failing_with("onnx.helper")
    )
    assert entrypoints.export() == entrypoints.EXIT_MISSING
    assert "livt-export: needs the package 'onnx'" in capsys.readouterr().err


def test_a_broken_livt_import_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(entrypoints.importlib, "import_module", lambda _: _command_failing_with("livt.nope"))
    with pytest.raises(ModuleNotFoundError):
        entrypoints.predict()


def test_a_script_runs_its_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(sys, "argv", ["livt-serve", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        entrypoints.serve()
    assert exit_info.value.code == 0 and "livt-serve" in capsys.readouterr().out
