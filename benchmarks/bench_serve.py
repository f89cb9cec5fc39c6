"""Serving throughput and latency next to raw ONNX Runtime on the same artifact; prints JSON.

    python benchmarks/bench_serve.py --model model.onnx                 # starts its own server
    python benchmarks/bench_serve.py --model model.onnx --url http://127.0.0.1:8000

Each HTTP request carries one PNG image (multipart). Raw ORT runs the same preprocessed image
batched 1, 8 and 32.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def _image_png(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def _http_level(url: str, png: bytes, concurrency: int, requests: int, headers: dict) -> dict:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:
        files = [("files", ("x.png", png))]
        for _ in range(min(concurrency, 8)):  # warm-up
            (await client.post("/v1/predict", files=files)).raise_for_status()
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                res = await client.post("/v1/predict", files=files)
                res.raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 50) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
    }


def _raw_ort(model: Path, png: bytes, batch: int, seconds: float) -> dict:
    import onnxruntime as ort

    from livt.serving.artifact import parse_metadata
    from livt.serving.preprocess import preprocess_bytes

    session = ort.InferenceSession(str(model), providers=ort.get_available_providers())
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map["livt"], model, "0" * 64)
    x = np.repeat(preprocess_bytes(png, meta.preprocess, max_pixels=10**8)[None], batch, axis=0)
    for _ in range(3):
        session.run(None, {"input": x})
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    return {
        "batch": batch,
        "images_per_s": batch * len(times) / sum(times),
        "p50_ms": _percentile(times, 50) * 1e3,
        "p99_ms": _percentile(times, 99) * 1e3,
    }


def _start_server(model: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "livt.serving.cli",
        "--model",
        str(model),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"livt-serve exited: {proc.stderr.read().strip()}")
        try:
            urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("livt-serve did not become ready in 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the ONNX artifact")
    parser.add_argument("--url", help="a running server (default: start one on a free port)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="raw ORT batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per raw ORT batch size")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra livt-serve flag (repeatable)"
    )
    args = parser.parse_args(argv)

    png = _image_png()
    headers = {"X-API-Key": os.environ["LIVT_API_KEY"]} if os.environ.get("LIVT_API_KEY") else {}
    proc = None
    url = args.url
    if url is None:
        proc, url = _start_server(args.model, args.server_arg)
    try:
        http = [asyncio.run(_http_level(url, png, c, args.requests, headers)) for c in args.concurrency]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    raw = [_raw_ort(args.model, png, b, args.seconds) for b in args.batches]
    report = {"model": str(args.model), "url": url, "cpus": os.cpu_count(), "http": http, "onnxruntime": raw}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
