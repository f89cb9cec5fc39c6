"""Request limits on a live server: body size, pixels per request, the deadline, a free event loop."""

from __future__ import annotations

import io
import threading
import time

import httpx
import pytest
from PIL import Image

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


def _one_bit_png(side: int) -> bytes:
    """A tiny file of ``side`` x ``side`` 1-bit pixels: cheap to send, costly to decode."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _one_bit_png(6320)  # 39.9 M pixels: under the per-image cap of 40 M


def test_a_request_buys_a_bounded_number_of_pixels(server: str, bomb: bytes):
    """32 such files (158 KB) would take 9.4 s to decode; their headers add up past the budget."""
    assert len(bomb) < 10_000
    files = [("files", (f"{i}.png", bomb)) for i in range(32)]
    start = time.perf_counter()
    res = httpx.post(f"{server}/v1/predict", files=files, timeout=60)
    assert res.status_code == 413 and "pixels in all" in res.json()["error"], res.text
    assert time.perf_counter() - start < 2.0
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200


def test_the_deadline_covers_decoding(serve, bomb: bytes):
    with serve(timeout_s=1.0, max_request_pixels=10**9, decode_threads=1) as url:
        start = time.perf_counter()
        res = httpx.post(f"{url}/v1/predict", files=[("files", (f"{i}.png", bomb)) for i in range(12)])
        assert res.status_code == 504 and "within 1 s" in res.json()["error"], res.text
        assert time.perf_counter() - start < 2.0
        # The decoding thread stopped at the deadline: the next large image waits for one image at
        # most, not for the 10 or so left of the twelve.
        start = time.perf_counter()
        res = httpx.post(f"{url}/v1/predict", files=[("files", ("big.png", image_bytes((300, 300))))])
        assert res.status_code == 200, res.text
        assert time.perf_counter() - start < 1.0


def _max_stall(url: str, send) -> tuple[float, httpx.Response]:
    """The longest /v2/health/live took while ``send()`` ran, and ``send()``'s response."""
    stalls: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client() as client:
            while not done.is_set():
                start = time.perf_counter()
                client.get(f"{url}/v2/health/live")
                stalls.append(time.perf_counter() - start)
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.1)
    try:
        res = send()
    finally:
        done.set()
        poller.join()
    return max(stalls), res


@pytest.mark.parametrize("kind", ["v2-values", "v1-strings", "v1-one-string"])
def test_large_json_bodies_do_not_stall_the_event_loop(server: str, kind: str):
    """Issue 10: a 32 MB JSON body stalled /v2/health/live for 1.2-1.6 s."""
    size = 32 * 1024 * 1024 - 1024
    if kind == "v2-values":
        head = b'{"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": ['
        body, path = head + b"0," * ((size - len(head)) // 2) + b"0]}]}", "/v2/models/livt/infer"
    elif kind == "v1-strings":
        body, path = b'{"images": [' + b'"AAAA",' * (size // 7) + b'"AAAA"]}', "/v1/predict"
    else:
        body, path = b'{"images": ["' + b"A" * size + b'"]}', "/v1/predict"
    headers = {"content-type": "application/json"}
    stall, res = _max_stall(
        server, lambda: httpx.post(f"{server}{path}", content=body, headers=headers, timeout=60)
    )
    assert 400 <= res.status_code < 500, res.text
    assert stall < 0.5, (
        f"/v2/health/live took {stall:.2f} s while the server read a {len(body) >> 20} MB body"
    )


def test_strip_images_cost_their_crop_not_their_resize(server: str, artifact):
    """Issue 26: a 1 KB PNG of 1,000,000 x 1 pixels became 18,000,000 x 18 (here) before its crop;
    32 of them in one form took 2.4 GB and made other uploads wait half a minute."""
    import numpy as np

    from livt import Predictor

    buf = io.BytesIO()
    Image.new("L", (1_000_000, 1), 200).save(buf, format="PNG", optimize=True)
    strip = buf.getvalue()
    assert len(strip) < 5000
    res = httpx.post(f"{server}/v1/predict", content=strip, headers={"content-type": "image/png"})
    assert res.status_code == 200, res.text
    expected = Predictor(artifact).predict([strip], top_k=1)[0]
    assert np.isclose(
        res.json()["predictions"][0]["top_k"][0]["probability"], expected.probability, atol=1e-5
    )
    res = httpx.post(
        f"{server}/v1/predict", files=[("files", (f"{i}.png", strip)) for i in range(32)], timeout=60
    )
    assert res.status_code == 200 and len(res.json()["predictions"]) == 32, res.text
