"""Serving throughput and latency next to raw ONNX Runtime on the same artifact; prints JSON.

    python benchmarks/bench_serve.py --model model.onnx                 # starts its own server
    python benchmarks/bench_serve.py --model model.onnx --url http://127.0.0.1:8000

Each HTTP request carries one image: by default a Fashion-MNIST test image when the model takes
28 x 28 greyscale input and the data set is installed, else random pixels at the model's input
size, as PNG (or ``--image FILE``). ``--body raw`` sends the file as the request body
(``Content-Type: image/png``), ``--body multipart`` as the form field ``files``; both by default.

The default load generator is light, as wrk's is: asyncio protocols over keep-alive HTTP/1.1
connections, one request in flight per connection, the request bytes built once, and only the
status line and Content-Length parsed. On a small machine it shares the CPU with the server, and
httpx (``--client httpx``) spends about a millisecond of Python per request, which the server
then lacks. Every response must be 200, and a sample of them is parsed to check that the top
class is the one raw ONNX Runtime predicts for the same image.

Raw ONNX Runtime runs the same preprocessed image batched 1, 8 and 32 in a session with its
default options.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from livt.inference.artifact import ArtifactInfo, parse_metadata
from livt.inference.preprocess import preprocess_bytes
from livt.serving.process import ServerProcess

FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
PREDICT = "/v1/predict"
CHECK_EVERY = 64  # parse one response in this many (and the first) to check the prediction
BOUNDARY = "livt-bench-boundary"


@dataclass(frozen=True)
class BenchImage:
    data: bytes
    source: str

    def describe(self) -> dict:
        img = Image.open(io.BytesIO(self.data))
        return {
            "source": self.source,
            "format": img.format,
            "size": list(img.size),
            "mode": img.mode,
            "bytes": len(self.data),
        }


def _fashion_mnist_image(index: int) -> np.ndarray:
    """Image ``index`` of the Fashion-MNIST test IDX file, read without livt.data (which needs torch)."""
    with gzip.open(FASHION_MNIST_TEST, "rb") as f:
        header = f.read(16)
        rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        f.seek(16 + index * rows * cols)
        return np.frombuffer(f.read(rows * cols), dtype=np.uint8).reshape(rows, cols)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def choose_image(info: ArtifactInfo, path: Path | None) -> BenchImage:
    """The file each request sends: ``path``, a real Fashion-MNIST image, or random pixels."""
    if path is not None:
        return BenchImage(path.read_bytes(), str(path))
    cfg = info.preprocess
    if (cfg.img_size, cfg.channels) == (28, 1) and FASHION_MNIST_TEST.is_file():
        return BenchImage(_png(_fashion_mnist_image(0)), f"{FASHION_MNIST_TEST} image 0")
    shape = (cfg.img_size, cfg.img_size) if cfg.channels == 1 else (cfg.img_size, cfg.img_size, 3)
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    return BenchImage(_png(pixels), "random pixels (seed 0)")


def request_bytes(url: str, image: BenchImage, body: str, headers: dict[str, str]) -> bytes:
    """One complete HTTP/1.1 POST to /v1/predict, built once and sent again and again."""
    parts = urllib.parse.urlsplit(url)
    if body == "raw":
        content_type, payload = f"image/{Image.open(io.BytesIO(image.data)).format.lower()}", image.data
    else:
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        payload = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="image"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + image.data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
    lines = [
        f"POST {PREDICT} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class _Level:
    """One concurrency level: ``total`` requests over ``concurrency`` connections, closed loop."""

    def __init__(self, request: bytes, total: int, expected_top1: int):
        self.request = request
        self.remaining = total
        self.expected_top1 = expected_top1
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.checked = 0
        self.open = 0
        self.finished: asyncio.Future | None = None

    def next_request(self, conn: _Connection) -> None:
        if self.remaining > 0 and not self.errors:
            self.remaining -= 1
            conn.send(self.request)
        else:
            conn.transport.close()

    def response(self, conn: _Connection, status: int, body: bytes, latency: float) -> None:
        self.latencies.append(latency)
        if status != 200:
            self.errors.append(f"HTTP {status}: {body[:300]!r}")
        elif len(self.latencies) % CHECK_EVERY == 1:
            self._check(body)
        self.next_request(conn)

    def _check(self, body: bytes) -> None:
        try:
            top = json.loads(body)["predictions"][0]["top_k"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.errors.append(f"response is not a prediction ({exc!r}): {body[:300]!r}")
            return
        if top["index"] != self.expected_top1 or not 0.0 <= top["probability"] <= 1.0:
            self.errors.append(f"served top class {top} differs from raw ONNX Runtime's {self.expected_top1}")
        self.checked += 1

    def closed(self, conn: _Connection) -> None:
        if conn.waiting:
            self.errors.append("the server closed a connection before answering")
        self.open -= 1
        if self.open == 0 and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


class _Connection(asyncio.Protocol):
    """A keep-alive connection that parses just the status line and Content-Length of each answer."""

    def __init__(self, level: _Level):
        self.level = level
        self.buffer = bytearray()
        self.waiting = False
        self.sent = 0.0
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio subclass

    def send(self, request: bytes) -> None:
        self.waiting = True
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            self.level.errors.append(f"response without Content-Length: {head[:300]!r}")
            self.transport.close()
            return
        line_end = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : line_end if line_end >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        latency = time.perf_counter() - self.sent
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.waiting = False
        self.level.response(self, int(head[9:12]), body, latency)

    def connection_lost(self, exc: Exception | None) -> None:
        self.level.closed(self)


async def _light_level(url: str, request: bytes, concurrency: int, total: int, expected_top1: int) -> dict:
    parts = urllib.parse.urlsplit(url)
    loop = asyncio.get_running_loop()

    level = _Level(request, total, expected_top1)
    conns = [
        (await loop.create_connection(lambda: _Connection(level), parts.hostname, parts.port))[1]
        for _ in range(concurrency)
    ]
    level.open = len(conns)
    level.finished = loop.create_future()
    start = time.perf_counter()
    for conn in conns:
        level.next_request(conn)
    await level.finished
    if level.errors:
        raise SystemExit(f"bench_serve: {len(level.errors)} bad responses, first: {level.errors[0]}")
    return {"latencies": level.latencies, "elapsed": time.perf_counter() - start, "checked": level.checked}


async def _httpx_level(url: str, request: bytes, concurrency: int, total: int, expected_top1: int) -> dict:
    import httpx

    head, payload = request.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    headers.pop("Host"), headers.pop("Content-Length")
    latencies: list[float] = []
    checked = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:
        remaining = total

        async def worker() -> None:
            nonlocal remaining, checked
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                res = await client.post(PREDICT, content=payload)
                latencies.append(time.perf_counter() - start)
                res.raise_for_status()
                if len(latencies) % CHECK_EVERY == 1:
                    assert res.json()["predictions"][0]["top_k"][0]["index"] == expected_top1, res.text
                    checked += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "elapsed": elapsed, "checked": checked}


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def http_level(
    client: str,
    url: str,
    request: bytes,
    concurrency: int,
    total: int,
    expected_top1: int,
    server_pid: int | None,
    headers: dict[str, str],
) -> dict:
    """Run one level and summarise it, with the CPU each side spent per request."""
    level = _light_level if client == "light" else _httpx_level
    loop = _event_loop()
    try:
        # Warm-up: ORT's first batches of each size, the server's caches, the client's code paths.
        loop.run_until_complete(level(url, request, concurrency, max(4 * concurrency, 50), expected_top1))
        before = _batch_counts(url, headers)
        server_cpu, loop_cpu = _process_cpu_s(server_pid), _thread_cpu_s(server_pid)
        client_cpu = time.process_time()
        result = loop.run_until_complete(level(url, request, concurrency, total, expected_top1))
        client_cpu = time.process_time() - client_cpu
        server_cpu = _process_cpu_s(server_pid) - server_cpu
        loop_cpu = _thread_cpu_s(server_pid) - loop_cpu
    finally:
        loop.close()
    after = _batch_counts(url, headers)
    latencies, n = result["latencies"], len(result["latencies"])
    summary = {
        "concurrency": concurrency,
        "requests": n,
        "requests_per_s": n / result["elapsed"],
        "p50_ms": _percentile(latencies, 50) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "checked_predictions": result["checked"],
        "mean_batch": (after[1] - before[1]) / max(after[0] - before[0], 1),
        "client_cpu_us_per_request": client_cpu / n * 1e6,
    }
    if server_pid is not None:
        summary["server_cpu_us_per_request"] = server_cpu / n * 1e6
        # The main thread runs the event loop: HTTP, decoding and JSON, but not the model.
        summary["server_loop_cpu_us_per_request"] = loop_cpu / n * 1e6
    return summary


def _batch_counts(url: str, headers: dict[str, str]) -> tuple[float, float]:
    """(model calls, images) so far, from the server's Prometheus histogram livt_batch_size."""
    req = urllib.request.Request(f"{url}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as res:
        text = res.read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("livt_batch_size_count", "livt_batch_size_sum"):
            values[name] = float(value)
    return values.get("livt_batch_size_count", 0.0), values.get("livt_batch_size_sum", 0.0)


def _process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` and all its threads (Linux /proc)."""
    return _cpu_s(f"/proc/{pid}/stat") if pid is not None else 0.0


def _thread_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of the main thread of process ``pid``."""
    return _cpu_s(f"/proc/{pid}/task/{pid}/stat") if pid is not None else 0.0


def _cpu_s(stat_file: str) -> float:
    fields = Path(stat_file).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _raw_ort(model: Path, x1: np.ndarray, batch: int, seconds: float) -> dict:
    """ONNX Runtime alone on ``batch`` copies of the image, for about ``seconds``."""
    import onnxruntime as ort

    from livt.export.bench import time_callable

    session = ort.InferenceSession(str(model), providers=ort.get_available_providers())
    x = np.repeat(x1[None], batch, axis=0)
    start = time.perf_counter()
    session.run(None, {"input": x})
    iters = max(5, int(seconds / max(time.perf_counter() - start, 1e-6)))
    timing = time_callable(lambda: session.run(None, {"input": x}), batch_size=batch, iters=iters)
    return {
        "batch": batch,
        "images_per_s": timing["throughput"],
        "p50_ms": timing["p50_ms"],
        "p99_ms": timing["p99_ms"],
    }


def _reference(model: Path, path: Path | None) -> tuple[BenchImage, np.ndarray, int]:
    """The image to send, preprocessed as the server does it, and raw ONNX Runtime's top class for it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=ort.get_available_providers())
    info = parse_metadata(session.get_modelmeta().custom_metadata_map["livt"], model, "0" * 64)
    image = choose_image(info, path)
    x = preprocess_bytes(image.data, info.preprocess, max_pixels=10**8)
    _, probabilities = session.run(["logits", "probabilities"], {"input": x[None]})
    return image, x, int(np.argmax(probabilities[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the ONNX artifact")
    parser.add_argument("--url", help="a running server (default: start one on a free port)")
    parser.add_argument("--image", type=Path, help="the image file to send (default: see above)")
    parser.add_argument("--body", choices=["raw", "multipart"], nargs="+", default=["raw", "multipart"])
    parser.add_argument("--client", choices=["light", "httpx"], default="light", help="load generator")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="raw ORT batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per raw ORT batch size")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra livt-serve flag (repeatable)"
    )
    args = parser.parse_args(argv)

    image, x1, expected_top1 = _reference(args.model, args.image)
    headers = {"X-API-Key": os.environ["LIVT_API_KEY"]} if os.environ.get("LIVT_API_KEY") else {}
    server = None
    url = args.url
    if url is None:
        server = ServerProcess(args.model, ["--log-level", "warning", *args.server_arg]).start()
        url = server.url
    http: dict[str, list[dict]] = {}
    try:
        for body in args.body:
            request = request_bytes(url, image, body, headers)
            http[body] = [
                http_level(
                    args.client,
                    url,
                    request,
                    c,
                    args.requests,
                    expected_top1,
                    server.pid if server else None,
                    headers,
                )
                for c in args.concurrency
            ]
    finally:
        if server is not None:
            server.stop()
    raw = [_raw_ort(args.model, x1, b, args.seconds) for b in args.batches]
    report = {
        "model": str(args.model),
        "url": url,
        "server_args": args.server_arg,
        "cpus": os.cpu_count(),
        "client": args.client,
        "image": image.describe(),
        "http": http,
        "onnxruntime": raw,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
