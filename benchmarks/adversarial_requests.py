"""The bad clients of bench_adversarial.py: one request of each kind of hostile input, and slow clients.

Each request is the complete bytes of an HTTP/1.1 request (or, for the kinds in ``DROPPED``, the
part of one a client sends before it goes away), built once.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import urllib.parse
from collections import Counter

import numpy as np
from PIL import Image

INFER = "/v2/models/livt/infer"


def _http(url: str, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    """One complete HTTP/1.1 request, built once."""
    host = urllib.parse.urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {headers.pop('Host', host)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body


def _multipart(files: list[bytes], path: str = "/v1/predict") -> tuple[str, bytes, str]:
    boundary = "livt-adversarial"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="f{i}.png"\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    )
    return path, parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def bad_requests(url: str, shape: tuple[int, int, int], num_classes: int, image: bytes) -> dict[str, bytes]:
    """One request of each kind of bad input, ready to send."""
    values = int(np.prod(shape))
    c, h, w = shape

    def tensor(data: str, **extra: str) -> bytes:
        fields = "".join(f', "{k}": {v}' for k, v in extra.items())
        return (
            f'{{"inputs": [{{"name": "input", "shape": [1, {c}, {h}, {w}], "datatype": "FP32", '
            f'"data": {data}}}]{fields}}}'
        ).encode()

    def spliced(value: str) -> str:
        return "[" + ", ".join([value] + ["0.5"] * (values - 1)) + "]"

    flat = "[" + ", ".join(["0.5"] * values) + "]"
    bomb = _png(Image.new("1", (6320, 6320)))  # 4.9 KB, 39.9 M pixels: under the per-image cap
    big_json = b'{"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": ['
    big_json += b"0," * ((32 * 1024 * 1024 - 2048) // 2) + b"0]}]}"
    multipart_path, bombs, bombs_type = _multipart([bomb] * 32)
    _, one_bomb, one_bomb_type = _multipart([bomb])
    _, one_image, one_image_type = _multipart([image])
    json_type = {"Content_Type": "application/json"}
    huge_prior = json.dumps({"images": [_b64(image)], "prior": [1e308, 1e308] + [1] * (num_classes - 2)})
    return {
        "data-url-without-comma": _http(url, "POST", "/v1/predict", b'{"images": ["data:abc"]}', **json_type),
        "v2-data-1e400": _http(url, "POST", INFER, tensor(spliced("1e400")), **json_type),
        "v2-data-huge-int": _http(url, "POST", INFER, tensor(spliced("1" + "0" * 400)), **json_type),
        "v2-prior-1e400": _http(
            url,
            "POST",
            INFER,
            tensor(flat, parameters='{"prior": [' + ", ".join(["1e400"] * num_classes) + "]}"),
            **json_type,
        ),
        "v2-header-length-superscript": _http(
            url, "POST", INFER, tensor(flat), **json_type, Inference_Header_Content_Length="²"
        ),
        "v2-data-3.4e38": _http(
            url, "POST", INFER, tensor("[" + ", ".join(["3.4e38"] * values) + "]"), **json_type
        ),
        "v2-data-string": _http(url, "POST", INFER, tensor(spliced('"1.5"')), **json_type),
        "v2-data-bool": _http(url, "POST", INFER, tensor(spliced("true")), **json_type),
        "v2-binary-output-string": _http(
            url, "POST", INFER, tensor(flat, parameters='{"binary_data_output": "false"}'), **json_type
        ),
        "v1-prior-sum-overflows": _http(url, "POST", "/v1/predict", huge_prior.encode(), **json_type),
        "multipart-top-k-0": _http(
            url, "POST", multipart_path + "?top_k=0", one_image, Content_Type=one_image_type
        ),
        "32-bomb-pngs-158kb": _http(url, "POST", multipart_path, bombs, Content_Type=bombs_type),
        "one-bomb-png-4.9kb": _http(url, "POST", multipart_path, one_bomb, Content_Type=one_bomb_type),
        "json-32mb-of-values": _http(url, "POST", INFER, big_json, **json_type),
        "json-33-images": _http(
            url, "POST", "/v1/predict", json.dumps({"images": [_b64(image)] * 33}).encode(), **json_type
        ),
        "foreign-host-header": _http(url, "GET", "/v1/model", Host="attacker.example"),
        "body-over-the-cap": _http(
            url, "POST", "/v1/predict", b"x" * (33 * 1024 * 1024), Content_Type="image/png"
        ),
        **issue_26_requests(url, tensor(flat), image),
    }


# Requests sent in part, then the connection dropped (a closed tab, a client that timed out).
DROPPED = ("drop-mid-upload-raw", "drop-mid-upload-multipart")


def issue_26_requests(url: str, infer_body: bytes, image: bytes) -> dict[str, bytes]:
    """Issue 26's costly-but-small requests: pixel-amplifying strips, repeated outputs, odd framing."""
    strip = _png(Image.new("L", (1_000_000, 1)))  # 1 KB: 28,000,000 x 28 if resized before cropping
    strips_path, strips, strips_type = _multipart([strip] * 32)
    outputs = json.loads(infer_body)
    outputs["outputs"] = [{"name": "logits"}] * 26_000
    json_type = {"Content_Type": "application/json"}
    big_header = _http(url, "POST", "/v1/predict", image, Content_Type="image/png", X_Big="a" * 200_000)
    many_headers = "\r\n".join(f"X-{i}: 1" for i in range(1000))
    host = urllib.parse.urlsplit(url).netloc
    partial = _http(url, "POST", "/v1/predict", image, Content_Type="image/png")
    return {
        "strip-png-1000000x1": _http(url, "POST", "/v1/predict", strip, Content_Type="image/png"),
        "32-strip-pngs": _http(url, "POST", strips_path, strips, Content_Type=strips_type),
        "v2-outputs-repeated-26000": _http(url, "POST", INFER, json.dumps(outputs).encode(), **json_type),
        "header-200kb": big_header,
        "1000-headers": f"GET /v2 HTTP/1.1\r\nHost: {host}\r\n{many_headers}\r\n\r\n".encode(),
        "two-host-headers": f"GET /v1/model HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n".encode(),
        "transfer-encoding-gzip-chunked": (
            f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
            "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        ).encode(),
        "cross-site-post": _http(
            url, "POST", "/v1/predict", image, Content_Type="image/png", Origin="https://evil.example"
        ),
        DROPPED[0]: partial[: len(partial) - len(image) // 2],
        DROPPED[1]: _http(url, "POST", strips_path, strips, Content_Type=strips_type)[:2000],
    }


class SlowClients:
    """``n`` connections that send a request's headers (half of them) or body a byte at a time.

    Each reconnects when the server closes it; ``statuses`` counts what they got ("held": the
    round ended first).
    """

    def __init__(self, url: str, n: int, image: bytes, interval_s: float = 0.5):
        self.url, self.n, self.interval_s = url, n, interval_s
        self.image = image
        self.statuses: Counter = Counter()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True) for i in range(n)
        ]

    def _run(self, headers_slowly: bool) -> None:
        parts = urllib.parse.urlsplit(self.url)
        request = _http(self.url, "POST", "/v1/predict", self.image, Content_Type="image/png")
        head_end = request.find(b"\r\n\r\n") + 4
        # Headers slowly: all but the blank line, then a header whose value never ends.
        start = request[: head_end - 2] + b"X-Slow: " if headers_slowly else request[:head_end]
        while not self._stop.is_set():
            with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
                sock.sendall(start)
                self.statuses[self._trickle(sock)] += 1

    def _trickle(self, sock: socket.socket) -> int | str:
        sock.setblocking(False)
        while not self._stop.wait(self.interval_s):
            try:
                answer = sock.recv(4096)
            except BlockingIOError:  # nothing yet: one more byte
                try:
                    sock.send(b"a")
                except OSError:
                    return "closed"
                continue
            except OSError:
                return "closed"
            return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else "closed"
        return "held"

    def __enter__(self) -> SlowClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
