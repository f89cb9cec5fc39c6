"""What a connection may cost before the app answers: raw sockets against a real uvicorn on loopback."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from harness.server import ServerProcess

from .conftest import image_bytes, metric_value


def _exchange(url: str, data: bytes, *, wait_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait_s``)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(data)
        return _read_until_closed(sock)


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _request(*headers: str, body: bytes = b"") -> bytes:
    head = "\r\n".join(["POST /v1/predict HTTP/1.1", *headers, "", ""]).encode()
    return head + body


@pytest.fixture(scope="module")
def guarded(serve):
    with serve(read_timeout_s=0.5, max_delay_ms=1000) as url:
        yield url


@pytest.mark.parametrize(
    ("request_bytes", "needle"),
    [
        (_request("Host: 127.0.0.1", "Host: 127.0.0.1", "Content-Length: 0"), b"more than one Host header"),
        (
            _request("Host: 127.0.0.1", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
            b"unsupported Transfer-Encoding 'gzip, chunked'",
        ),
        (_request("Host: 127.0.0.1", "X-Big: " + "a" * 200_000), b"larger than 65536 bytes"),
        (_request("Host: 127.0.0.1", *(f"X-{i}: 1" for i in range(1000))), b"more than 100 headers"),
    ],
    ids=["two-hosts", "gzip-chunked", "200-kb-header", "1000-headers"],
)
def test_requests_rfc_9112_refuses_or_too_large_headers_are_400(guarded: str, request_bytes, needle):
    response = _exchange(guarded, request_bytes)
    assert _status(response) == 400, response[:300]
    assert needle in response


def test_headers_sent_slowly_are_timed_out(guarded: str):
    host, port = guarded.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        response = b""
        for _ in range(40):  # one header byte every 0.1 s, as a slowloris client does
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        response = _read_until_closed(sock)
    assert _status(response) == 408 and b"headers did not arrive within 0.5 s" in response
    assert time.perf_counter() - start < 3.5


def test_a_slow_body_holds_no_batch_slot_and_is_timed_out(guarded: str):
    # A forming batch waits (here up to --max-delay-ms 1000) for requests that hold a slot; one
    # whose body trickles in must not hold one, or every other request waits the full delay.
    host, port = guarded.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(_request("Host: 127.0.0.1", "Content-Type: image/png", "Content-Length: 5000"))
        slow.sendall(image_bytes((16, 16))[:10])
        time.sleep(0.05)
        res = httpx.post(
            f"{guarded}/v1/predict", content=image_bytes((16, 16)), headers={"Content-Type": "image/png"}
        )
        assert res.status_code == 200, res.text
        assert res.json()["timing"]["queue_ms"] < 500
        response = _read_until_closed(slow)
    assert _status(response) == 408 and b"body did not arrive within 0.5 s" in response


def test_a_client_that_drops_mid_upload_is_499_not_500(guarded: str, caplog: pytest.LogCaptureFixture):
    before = metric_value(guarded, "livt_http_requests_total", status="499")
    with caplog.at_level(logging.DEBUG, logger="livt.serving.errors"):
        for fmt in ("image/png", "multipart/form-data; boundary=x"):
            host, port = guarded.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(_request("Host: 127.0.0.1", f"Content-Type: {fmt}", "Content-Length: 100000"))
                sock.sendall(b"--x\r\n" + b"y" * 1000)
                time.sleep(0.1)
        deadline = time.monotonic() + 5
        while metric_value(guarded, "livt_http_requests_total", status="499") < before + 2:
            assert time.monotonic() < deadline, httpx.get(f"{guarded}/metrics").text[-3000:]
            time.sleep(0.05)
    assert metric_value(guarded, "livt_http_requests_total", status="500") == 0
    assert "unhandled error" not in caplog.text
    assert "client closed the connection" in caplog.text


def test_sigterm_during_a_slow_upload_stops_within_the_graceful_timeout(artifact: Path):
    flags = ["--graceful-timeout-s", "1", "--read-timeout-s", "60"]
    with ServerProcess(artifact, flags) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(_request("Host: 127.0.0.1", "Content-Type: image/png", "Content-Length: 5000"))
            stop = threading.Event()

            def trickle() -> None:
                while not stop.wait(0.2):
                    try:
                        sock.sendall(b"x")
                    except OSError:
                        return

            sender = threading.Thread(target=trickle)
            sender.start()
            time.sleep(0.3)
            start = time.perf_counter()
            try:
                status = server.stop(timeout_s=15)
            finally:
                stop.set()
                sender.join()
        assert status == 0, server.log()[-2000:]
        assert time.perf_counter() - start < 6, server.log()[-2000:]
