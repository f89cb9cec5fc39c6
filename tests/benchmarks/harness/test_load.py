"""harness.load and harness.reference against a real livt-serve: every answer counted and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.load import http_level, request_bytes
from harness.reference import reference
from harness.server import ServerProcess


@pytest.mark.parametrize("client", ["light", "httpx"])
def test_a_level_counts_every_request_and_checks_the_top_class(artifact: Path, client: str) -> None:
    image, x, expected_top1 = reference(artifact, None)
    assert image.source == "random pixels (seed 0)" and image.content_type == "image/png"
    assert x.shape == (3, 16, 16)
    with ServerProcess(artifact, ["--log-level", "warning"]) as server:
        for body in ("raw", "multipart"):
            request = request_bytes(server.url, image, body, {})
            level = http_level(client, server.url, request, 2, 20, expected_top1, server.pid, {})
            assert level["requests"] == 20 and level["checked_predictions"] >= 1
            assert level["p50_ms"] > 0 and level["mean_batch"] >= 1
            assert level["server_cpu_us_per_request"] > 0


def test_a_wrong_expected_class_stops_the_level(artifact: Path) -> None:
    image, _, expected_top1 = reference(artifact, None)
    with ServerProcess(artifact, ["--log-level", "warning"]) as server:
        request = request_bytes(server.url, image, "raw", {})
        with pytest.raises(SystemExit, match="differs from raw ONNX Runtime's"):
            http_level("light", server.url, request, 1, 10, expected_top1 + 1, server.pid, {})
