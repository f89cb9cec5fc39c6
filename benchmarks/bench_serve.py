"""Serving throughput and latency next to the raw engine it serves and to an ONNX Runtime fp32 server; JSON.

    python benchmarks/bench_serve.py --model model.onnx                 # starts its own servers
    python benchmarks/bench_serve.py --model model.onnx --url http://127.0.0.1:8000 --baseline none

Each HTTP request carries one image (``harness.reference``: a Fashion-MNIST test image where the
model takes one, else random pixels, as PNG; or ``--image FILE``). ``--body raw`` sends the file as
the request body (``Content-Type: image/png``), ``--body multipart`` as the form field ``files``;
both by default. The load generator is ``harness.load``'s light keep-alive one (``--client httpx``
for httpx).

The server under test runs with livt-serve's defaults (``--backend auto``) and ``--server-arg``.
``--baseline ort-fp32`` (the default) starts a second server forced to ONNX Runtime fp32, the engine
livt served before engines were chosen; both are loaded in alternating rounds at every concurrency
(only one is loaded at a time), so ``speedup_vs_baseline`` is a ratio from one interleaved run.
Then the engine each server runs (``engine`` in ``/v1/model``) is timed alone, interleaved, on the
same preprocessed image batched 1, 8 and 32: ``summary`` gives serving at c32 as a fraction of its
engine's batch 32 and its c1 p50 over the engine's batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from harness.load import http_level, request_bytes
from harness.reference import reference
from harness.server import ServerProcess

from livt.host import host_info
from livt.inference.backends import open_backend
from livt.inference.timing import rotated, time_interleaved

BASELINES = {"ort-fp32": ["--backend", "ort", "--precision", "fp32"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the ONNX artifact")
    p.add_argument("--url", help="a running server to test (default: start one on a free port)")
    p.add_argument("--image", type=Path, help="the image file to send (default: see above)")
    p.add_argument("--body", choices=["raw", "multipart"], nargs="+", default=["raw", "multipart"])
    p.add_argument("--client", choices=["light", "httpx"], default="light", help="load generator")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=2000, help="requests per concurrency level and server")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the servers per level")
    p.add_argument(
        "--baseline", choices=[*BASELINES, "none"], default="ort-fp32", help="the server to compare with"
    )
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="raw engine batch sizes")
    p.add_argument("--seconds", type=float, default=3.0, help="time per raw engine and batch size")
    p.add_argument("--server-arg", action="append", default=[], help="extra livt-serve flag (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    image, x1, expected_top1 = reference(args.model, args.image)
    headers = {"X-API-Key": os.environ["LIVT_API_KEY"]} if os.environ.get("LIVT_API_KEY") else {}
    with ExitStack() as stack:
        servers: dict[str, tuple[str, int | None]] = {}  # name -> (url, pid)
        if args.url:
            servers["served"] = (args.url, None)
        else:
            process = stack.enter_context(
                ServerProcess(args.model, ["--log-level", "warning", *args.server_arg])
            )
            servers["served"] = (process.url, process.pid)
        if args.baseline != "none":
            process = stack.enter_context(
                ServerProcess(args.model, ["--log-level", "warning", *BASELINES[args.baseline]])
            )
            servers[args.baseline] = (process.url, process.pid)
        engines = {name: _engine(url, headers) for name, (url, _) in servers.items()}
        http = {
            body: {c: _level(args, servers, image, body, c, expected_top1, headers) for c in args.concurrency}
            for body in args.body
        }
    raw = _raw_engines(args.model, engines, x1, args.batches, args.seconds)
    report = {
        "model": str(args.model),
        "server_args": args.server_arg,
        "baseline": args.baseline,
        "cpus": os.cpu_count(),
        "host": host_info(),
        "client": args.client,
        "image": image.describe(),
        "engines": engines,
        "http": {body: [levels[c]["served"] for c in args.concurrency] for body, levels in http.items()},
        "engine": raw["served"],
        "summary": _summary(http, raw, args.baseline),
    }
    if args.baseline != "none":
        report["baseline_http"] = {
            body: [levels[c][args.baseline] for c in args.concurrency] for body, levels in http.items()
        }
        report["baseline_engine"] = raw[args.baseline]
    print(json.dumps(report, indent=2))
    return 0


def _engine(url: str, headers: dict[str, str]) -> dict[str, str]:
    """What a server says serves: engine, precision, file and why."""
    response = httpx.get(f"{url}/v1/model", headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()["engine"]


def _level(args, servers, image, body: str, concurrency: int, expected_top1: int, headers) -> dict[str, dict]:
    """Every server at one concurrency, in alternating rounds; per server the rounds' figures merged."""
    per_round = max(args.requests // args.rounds, 2 * concurrency)
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    names = list(servers)
    for r in range(args.rounds):
        for name in rotated(names, r):
            url, pid = servers[name]
            request = request_bytes(url, image, body, headers)
            runs[name].append(
                http_level(args.client, url, request, concurrency, per_round, expected_top1, pid, headers)
            )
    merged = {name: _merge(rounds) for name, rounds in runs.items()}
    if len(names) > 1:
        ratios = [
            a["requests_per_s"] / b["requests_per_s"]
            for a, b in zip(runs[names[0]], runs[names[1]], strict=True)
        ]
        merged[names[0]]["speedup_vs_baseline"] = statistics.median(ratios)
    return merged


def _merge(rounds: list[dict]) -> dict:
    """One level's rounds as one: requests summed, rates and latencies their medians."""
    out = dict(rounds[0])
    out["requests"] = sum(r["requests"] for r in rounds)
    out["checked_predictions"] = sum(r["checked_predictions"] for r in rounds)
    for key in ("requests_per_s", "p50_ms", "p99_ms", "mean_ms", "mean_batch", "client_cpu_us_per_request",
                "server_cpu_us_per_request", "server_loop_cpu_us_per_request"):  # fmt: skip
        if key in out:
            out[key] = statistics.median(r[key] for r in rounds)
    out["rounds"] = len(rounds)
    return out


def _raw_engines(
    model: Path, engines: dict[str, dict], x1: np.ndarray, batches: list[int], seconds: float
) -> dict:
    """Each server's engine alone on ``batch`` copies of the image, the engines interleaved."""
    opened = {
        name: open_backend(model.with_name(e["file"]), e["engine"], e["precision"])
        for name, e in engines.items()
    }
    out: dict[str, list[dict]] = {name: [] for name in engines}
    for batch in batches:
        x = np.repeat(x1[None], batch, axis=0)
        fns = {name: (lambda m=m, x=x: m.run(x)) for name, m in opened.items()}
        probe = time_interleaved(fns, batch_size=batch, warmup=2, rounds=1, iters=1)
        slowest_s = max(batch / t["throughput"] for t in probe.values())
        iters = max(2, int(seconds / 4 / slowest_s))
        for name, t in time_interleaved(fns, batch_size=batch, warmup=0, rounds=4, iters=iters).items():
            out[name].append(
                {
                    "batch": batch,
                    "images_per_s": t["throughput"],
                    "p50_ms": t["p50_ms"],
                    "p99_ms": t["p99_ms"],
                }
            )
    return out


def _summary(http: dict, raw: dict, baseline: str) -> dict:
    """The serving targets: against the baseline server, and against the served engine itself."""
    raw_served = {r["batch"]: r for r in raw["served"]}
    out: dict = {}
    for body, levels in http.items():
        row: dict = {}
        if baseline != "none":
            row["speedup_vs_baseline"] = {c: lv["served"]["speedup_vs_baseline"] for c, lv in levels.items()}
        if 32 in levels and 32 in raw_served:
            row["c32_fraction_of_raw_b32"] = (
                levels[32]["served"]["requests_per_s"] / raw_served[32]["images_per_s"]
            )
        if 1 in levels and 1 in raw_served:
            row["c1_p50_overhead_ms"] = levels[1]["served"]["p50_ms"] - raw_served[1]["p50_ms"]
        out[body] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
