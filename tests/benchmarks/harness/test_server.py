"""``harness.server.ServerProcess``: livt-serve in a child process, ready when entered, stopped on leaving."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from harness.server import ServerProcess, is_ready


def test_a_ready_server_answers_and_stops_with_status_0(artifact: Path):
    with ServerProcess(artifact, ["--log-level", "warning"]) as server:
        assert is_ready(server.url)
        assert httpx.get(f"{server.url}/v1/model").json()["classes"]
    assert server.proc.returncode == 0 and not is_ready(server.url)


def test_a_server_that_exits_raises_with_its_log(tmp_path: Path):
    with pytest.raises(RuntimeError, match=r"exited with status 2: .*does not exist"):
        ServerProcess(tmp_path / "missing.onnx").start()
