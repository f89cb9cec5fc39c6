"""The request body cap, declared and streamed, on a live server."""

from __future__ import annotations

import httpx

from .conftest import image_bytes


def test_body_cap_declared_and_streamed(serve):
    with serve(max_body_bytes=5000) as url:
        res = httpx.post(f"{url}/v1/predict", files=[("files", ("a.png", image_bytes((64, 64))))])
        assert res.status_code == 413 and "limit of 5000 bytes" in res.json()["error"]
        res = httpx.post(
            f"{url}/v1/predict", content=image_bytes((64, 64)), headers={"content-type": "image/png"}
        )
        assert res.status_code == 413 and "limit of 5000 bytes" in res.json()["error"]

        def chunks():  # no Content-Length: the cap must count the streamed bytes
            for _ in range(20):
                yield b"x" * 1000

        for content_type in ("application/json", "image/png"):
            res = httpx.post(f"{url}/v1/predict", content=chunks(), headers={"content-type": content_type})
            assert res.status_code == 413
        res = httpx.post(f"{url}/v2/models/livt/infer", content=chunks())
        assert res.status_code == 413
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
