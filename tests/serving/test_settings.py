"""Settings from LIVT_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from livt.serving.settings import ServeSettings


def test_environment_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LIVT_MODEL", "/models/model.onnx")
    monkeypatch.setenv("LIVT_MAX_BATCH", "8")
    monkeypatch.setenv("LIVT_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("LIVT_API_KEY", "sekrit-123")
    monkeypatch.setenv("LIVT_INTRA_OP_SPINNING", "true")
    settings = ServeSettings()
    assert settings.intra_op_spinning and not settings.access_log
    assert settings.model == Path("/models/model.onnx")
    assert settings.max_batch == 8
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sekrit-123"
    assert "sekrit-123" not in repr(settings)
    assert ServeSettings(model="x", max_batch=2).max_batch == 2  # arguments beat the environment


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LIVT_MODEL", raising=False)
    with pytest.raises(ValidationError, match="model"):
        ServeSettings()
    with pytest.raises(ValidationError, match="max_batch"):
        ServeSettings(model="m.onnx", max_batch=0)
    assert ServeSettings(model="m.onnx", api_key="").api_key is None


def test_max_images_defaults_to_and_never_exceeds_max_batch():
    assert ServeSettings(model="m.onnx").max_images == 32
    assert ServeSettings(model="m.onnx", max_batch=8).max_images == 8
    assert ServeSettings(model="m.onnx", max_batch=8, max_images=3).max_images == 3
    with pytest.raises(ValidationError, match=r"max_images \(9\) must not exceed max_batch \(8\)"):
        ServeSettings(model="m.onnx", max_batch=8, max_images=9)


def test_hardening_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LIVT_ALLOWED_HOSTS", "livt.internal, Example.ORG")
    monkeypatch.setenv("LIVT_REQUIRE_CHECKSUM", "true")
    monkeypatch.setenv("LIVT_DECODE_THREADS", "3")
    settings = ServeSettings(model="m.onnx")
    assert settings.allowed_hosts == ["livt.internal", "example.org"]
    assert settings.require_checksum and settings.decode_threads == 3
    monkeypatch.delenv("LIVT_ALLOWED_HOSTS")
    assert ServeSettings(model="m.onnx", host="::1").allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    assert ServeSettings(model="m.onnx", host="127.0.0.2").allowed_hosts[-1] == "127.0.0.2"
    assert ServeSettings(model="m.onnx", host="192.168.1.5").allowed_hosts == ["*"]
    with pytest.raises(ValidationError, match="decode_threads"):
        ServeSettings(model="m.onnx", decode_threads=0)


def test_a_kubernetes_service_link_in_livt_port_is_named(tmp_path, monkeypatch):
    """A Service called "livt" sets LIVT_PORT=tcp://IP:PORT in its pods (service links)."""
    monkeypatch.setenv("LIVT_PORT", "tcp://10.0.0.7:8000")
    with pytest.raises(ValidationError, match="Kubernetes service link"):
        ServeSettings(model=tmp_path / "m.onnx")


def test_unknown_livt_variables_are_reported_but_service_links_are_not():
    from livt.serving.cli import unknown_environment

    env = {"LIVT_MAX_BATCHES": "8", "LIVT_MAX_BATCH": "8", "LIVT_SERVICE_HOST": "10.0.0.7",
           "LIVT_PORT_8000_TCP_ADDR": "10.0.0.7", "HOME": "/root"}  # fmt: skip
    assert unknown_environment(env) == ["LIVT_MAX_BATCHES"]


def test_a_padded_api_key_is_refused_at_start(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValidationError, match="starts or ends with whitespace"):
        ServeSettings(model="m.onnx", api_key=" s3cret\n")
    monkeypatch.setenv("LIVT_ALLOWED_ORIGINS", "https://App.example/, http://localhost:3000")
    assert ServeSettings(model="m.onnx").allowed_origins == ["https://app.example", "http://localhost:3000"]
