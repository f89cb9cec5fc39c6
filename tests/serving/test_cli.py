"""``livt-serve``: a model that cannot be served is one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from livt.serving.cli import main


def _fails(capsys: pytest.CaptureFixture, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_unloadable_models_exit_2(tmp_path: Path, artifact: Path, capsys, monkeypatch):
    monkeypatch.delenv("LIVT_MODEL", raising=False)
    _fails(capsys, [], "--model: Field required")
    _fails(capsys, ["--model", str(tmp_path / "none.onnx")], "does not exist")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage")
    _fails(capsys, ["--model", str(corrupt)], "not a loadable ONNX model")
    _fails(capsys, ["--model", str(artifact), "--sha256", "f" * 64], "checksum mismatch")
    _fails(capsys, ["--model", str(artifact), "--providers", "NopeExecutionProvider"], "not available")
    _fails(capsys, ["--model", str(artifact), "--max-batch", "0"], "--max-batch")
    _fails(capsys, ["--model", str(artifact), "--max-batch", "4", "--max-images", "5"], "--max-images")
