"""``livt-serve``: a model that cannot be served is one line on stderr and exit code 2."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from livt.artifact import sha256_file
from livt.serving.cli import main

from .conftest import free_port, image_bytes


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
    monkeypatch.setenv("LIVT_API_KEY", "s3cret ")  # as `echo s3cret > key` and a careless copy leave it
    _fails(
        capsys,
        ["--model", str(artifact)],
        "LIVT_API_KEY: Value error, the API key starts or ends with whitespace",
    )


def _wait_until_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/v2/health/ready")
            return
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "livt-serve did not start"
            time.sleep(0.1)


@pytest.mark.parametrize("flag", [[], ["--access-log"]])
def test_access_log_is_off_unless_asked_for(artifact: Path, flag: list[str]):
    port = free_port()
    cmd = [sys.executable, "-m", "livt.serving.cli", "--model", str(artifact), "--port", str(port), *flag]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_ready(proc, url)
        res = httpx.post(
            f"{url}/v1/predict", content=image_bytes((20, 20)), headers={"content-type": "image/png"}
        )
        assert res.status_code == 200, res.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert ('"POST /v1/predict HTTP/1.1" 200' in err) == bool(flag), err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_is_a_graceful_exit_0(artifact: Path, sig: signal.Signals):
    # docker stop sends SIGTERM and reports the exit code: 143 would read as a crash.
    port = free_port()
    cmd = [sys.executable, "-m", "livt.serving.cli", "--model", str(artifact), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_ready(proc, f"http://127.0.0.1:{port}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Application shutdown complete" in err and "Traceback" not in err, err


def test_a_missing_checksum_is_logged_or_refused(tmp_path: Path, artifact: Path, capsys, caplog):
    """Without a ``.sha256`` beside the model, verification is not skipped silently."""
    import logging
    import shutil

    from livt.serving.settings import ServeSettings
    from livt.serving.state import load_model

    bare = tmp_path / "bare.onnx"
    shutil.copy(artifact, bare)
    with caplog.at_level(logging.WARNING, logger="livt.serving"):
        load_model(ServeSettings(model=bare))
    assert any(
        "no checksum" in r.getMessage() and "bare.onnx.sha256" in r.getMessage() for r in caplog.records
    )
    _fails(capsys, ["--model", str(bare), "--require-checksum"], "no checksum")
    (tmp_path / "bare.onnx.sha256").write_text(f"{sha256_file(bare)}  bare.onnx\n")
    assert load_model(ServeSettings(model=bare, require_checksum=True)).info.sha256 == sha256_file(bare)


def test_the_images_require_a_checksum():
    root = Path(__file__).resolve().parents[2]
    for dockerfile in ("docker/Dockerfile", "docker/Dockerfile.gpu"):
        assert "LIVT_REQUIRE_CHECKSUM=true" in (root / dockerfile).read_text(), dockerfile


def test_version(capsys):
    from livt import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"livt-serve {__version__}"
