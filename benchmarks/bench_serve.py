"""Serving throughput and latency next to raw ONNX Runtime on the same artifact; prints JSON.

    python benchmarks/bench_serve.py --model model.onnx                 # starts its own server
    python benchmarks/bench_serve.py --model model.onnx --url http://127.0.0.1:8000

Each HTTP request carries one image (``harness.reference``: a Fashion-MNIST test image where the
model takes one, else random pixels, as PNG; or ``--image FILE``). ``--body raw`` sends the file as
the request body (``Content-Type: image/png``), ``--body multipart`` as the form field ``files``;
both by default.

The load generator is ``harness.load``'s light keep-alive one (``--client httpx`` for httpx).

Raw ONNX Runtime runs the same preprocessed image batched 1, 8 and 32 in a session with its
default options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from harness.load import http_level, request_bytes
from harness.reference import reference
from harness.server import ServerProcess

from livt.host import host_info


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

    image, x1, expected_top1 = reference(args.model, args.image)
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
        "host": host_info(),
        "client": args.client,
        "image": image.describe(),
        "http": http,
        "onnxruntime": raw,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
