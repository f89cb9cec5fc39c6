"""Good requests under an adversarial load, next to the same load without it; prints JSON.

    python benchmarks/bench_adversarial.py --model model.onnx        # starts its own livt-serve

One real ``livt-serve`` on loopback gets rounds of ``--requests`` requests at ``--concurrency``,
clean rounds (every request a good one) and adversarial rounds (``--bad-fraction`` of them bad, of
every kind issue 10 found) in turn, so both see the same server, machine and moment. Reported: for
good requests, failures (must be 0) and latency percentiles per kind of round; for bad ones, the
statuses they got (never a 5xx); the server's resident memory (RSS) sampled through the run; and
that the server is ready at the end. The load generator is bench_serve's light keep-alive one; a
connection the server closes (it does after refusing a body it will not read) is reopened.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from harness.load import CHECK_EVERY, request_bytes
from harness.load import Connection as _Connection
from harness.load import event_loop as _event_loop
from harness.load import percentile as _percentile
from harness.reference import reference as _reference
from harness.server import ServerProcess
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
    """One request of each kind of bad input issue 10 found, ready to send."""
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
    }


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


class _ClosingAwareConnection(_Connection):
    """bench_serve's connection, noting a response's ``Connection: close`` before it is handed on."""

    closing = False
    kind = "good"

    def data_received(self, data: bytes) -> None:
        head_end = (bytes(self.buffer) + data).find(b"\r\n\r\n")
        if head_end >= 0:
            self.closing = b"\r\nconnection: close" in (bytes(self.buffer) + data)[:head_end].lower()
        super().data_received(data)


class _MixedLevel:
    """``schedule`` (kind, request) pairs over ``concurrency`` keep-alive connections, closed loop."""

    def __init__(self, schedule: list[tuple[str, bytes]], expected_top1: int, reconnect):
        self.schedule = list(reversed(schedule))
        self.expected_top1 = expected_top1
        self.reconnect = reconnect
        self.good: list[float] = []
        self.good_failures: list[str] = []
        self.bad_statuses: dict[str, Counter] = {}
        self.bad_latency: list[float] = []
        self.checked = 0
        self.last_good = 0.0
        self.open = 0
        self.finished: asyncio.Future | None = None
        self.errors: list[str] = []  # bench_serve's connection reports protocol problems here

    def next_request(self, conn: _ClosingAwareConnection) -> None:
        if not self.schedule:
            conn.transport.close()
            return
        conn.kind, request = self.schedule.pop()
        conn.send(request)

    def response(self, conn: _ClosingAwareConnection, status: int, body: bytes, latency: float) -> None:
        if conn.kind == "good":
            self.good.append(latency)
            self.last_good = time.perf_counter()
            if status != 200:
                self.good_failures.append(f"HTTP {status}: {body[:200]!r}")
            elif len(self.good) % CHECK_EVERY == 1:
                top = json.loads(body)["predictions"][0]["top_k"][0]["index"]
                if top != self.expected_top1:
                    self.good_failures.append(f"top class {top}, raw ONNX Runtime says {self.expected_top1}")
                self.checked += 1
        else:
            self.bad_statuses.setdefault(conn.kind, Counter())[status] += 1
            self.bad_latency.append(latency)
        if conn.closing:  # the server closes it: the next request goes on a new connection
            conn.transport.close()
        else:
            self.next_request(conn)

    def closed(self, conn: _ClosingAwareConnection) -> None:
        if conn.waiting and conn.kind == "good":
            self.good_failures.append("the server closed a connection before answering a good request")
        elif conn.waiting:
            self.bad_statuses.setdefault(conn.kind, Counter())["closed"] += 1
        self.open -= 1
        if self.schedule:
            self.reconnect(self)
        elif self.open == 0 and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


async def run_round(
    url: str, schedule: list[tuple[str, bytes]], concurrency: int, expected_top1: int
) -> dict:
    parts = urllib.parse.urlsplit(url)
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Task] = []

    async def connect(level: _MixedLevel) -> None:
        level.open += 1
        _, conn = await loop.create_connection(
            lambda: _ClosingAwareConnection(level), parts.hostname, parts.port
        )
        level.next_request(conn)

    level = _MixedLevel(schedule, expected_top1, lambda lv: pending.append(loop.create_task(connect(lv))))
    level.finished = loop.create_future()
    start = time.perf_counter()
    await asyncio.gather(*(connect(level) for _ in range(concurrency)))
    await level.finished
    # Good requests' throughput runs to the last good answer: a round of bad ones can end later.
    elapsed = level.last_good - start
    if level.errors:
        raise SystemExit(f"bench_adversarial: {level.errors[0]}")
    return {"level": level, "elapsed": elapsed}


class RssSampler:
    """The server's resident memory, read from /proc every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss()))
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, start: float, end: float) -> float:
        within = [rss for t, rss in self.samples if start <= t <= end]
        return max(within, default=0) / 2**20


def _schedule(
    good: bytes, bad: dict[str, bytes], total: int, bad_fraction: float, rng: random.Random
) -> list:
    """``total`` requests, ``bad_fraction`` of them bad, the kinds in turn, at random places."""
    n_bad = round(total * bad_fraction)
    kinds = list(bad)
    items = [("good", good)] * (total - n_bad) + [
        (kinds[i % len(kinds)], bad[kinds[i % len(kinds)]]) for i in range(n_bad)
    ]
    rng.shuffle(items)
    return items


def _summary(latencies: list[float]) -> dict:
    return {
        "requests": len(latencies),
        "p50_ms": _percentile(latencies, 50) * 1e3,
        "p90_ms": _percentile(latencies, 90) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the ONNX artifact (with its .sha256)")
    parser.add_argument("--requests", type=int, default=2000, help="requests of each kind of round, in all")
    parser.add_argument(
        "--rounds", type=int, default=8, help="clean/adversarial pairs the requests split into"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra livt-serve flag (repeatable)"
    )
    args = parser.parse_args(argv)

    image, x1, expected_top1 = _reference(args.model, None)
    server = ServerProcess(args.model, ["--require-checksum", *args.server_arg]).start()
    url, pid = server.url, server.pid
    rng = random.Random(args.seed)
    per_round = args.requests // args.rounds
    results: dict[str, dict] = {
        "clean": {"good": [], "elapsed": 0.0},
        "adversarial": {"good": [], "elapsed": 0.0},
    }
    bad_statuses: dict[str, Counter] = {}
    good_failures: list[str] = []
    checked = 0
    windows: dict[str, list[tuple[float, float]]] = {"clean": [], "adversarial": []}
    round_peaks: list[tuple[str, float]] = []
    try:
        good = request_bytes(url, image, "raw", {})
        bad = bad_requests(url, tuple(x1.shape), _num_classes(url), image.data)
        loop = _event_loop()
        with RssSampler(pid) as rss:
            # Warm-up: ORT's first batches, the server's caches, the client's code paths.
            loop.run_until_complete(
                run_round(url, [("good", good)] * (4 * args.concurrency), args.concurrency, expected_top1)
            )
            baseline_mb = rss.rss() / 2**20
            for r in range(args.rounds):
                # Alternate which goes first, so neither always follows the other's after-effects.
                for mode in ("clean", "adversarial") if r % 2 == 0 else ("adversarial", "clean"):
                    fraction = args.bad_fraction if mode == "adversarial" else 0.0
                    schedule = _schedule(good, bad, per_round, fraction, rng)
                    start = time.perf_counter()
                    out = loop.run_until_complete(run_round(url, schedule, args.concurrency, expected_top1))
                    windows[mode].append((start, time.perf_counter()))
                    round_peaks.append((mode, rss.peak_mb(start, time.perf_counter())))
                    level = out["level"]
                    results[mode]["good"] += level.good
                    results[mode]["elapsed"] += out["elapsed"]
                    good_failures += level.good_failures
                    checked += level.checked
                    for kind, counts in level.bad_statuses.items():
                        bad_statuses.setdefault(kind, Counter()).update(counts)
            loop.close()
            final_mb = rss.rss() / 2**20
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as res:
            ready = json.load(res)["ready"]
        hwm_mb = _status_kb(pid, "VmHWM") / 1024
    finally:
        server.stop()

    clean, adversarial = (_summary(results[m]["good"]) for m in ("clean", "adversarial"))
    for mode, summary in (("clean", clean), ("adversarial", adversarial)):
        summary["good_requests_per_s"] = len(results[mode]["good"]) / results[mode]["elapsed"]
        summary["server_rss_peak_mb"] = max(rss.peak_mb(a, b) for a, b in windows[mode])
    server_errors = {
        k: dict(v) for k, v in bad_statuses.items() if any(isinstance(s, int) and s >= 500 for s in v)
    }
    report = {
        "model": str(args.model),
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "requests_per_kind_of_round": per_round * args.rounds,
        "rounds": args.rounds,
        "bad_fraction": args.bad_fraction,
        "good_request_failures": len(good_failures),
        "first_good_failure": good_failures[0] if good_failures else None,
        "checked_predictions": checked,
        "clean": clean,
        "adversarial": adversarial,
        "p99_ratio": adversarial["p99_ms"] / clean["p99_ms"],
        "bad_statuses": {k: dict(v) for k, v in sorted(bad_statuses.items())},
        "bad_5xx": server_errors,
        "server_rss_mb": {
            "after_warm_up": baseline_mb,
            "peak_sampled": max(s for _, s in rss.samples) / 2**20,
            "high_water_mark": hwm_mb,
            "peak_per_round": [f"{mode} {peak:.0f}" for mode, peak in round_peaks],
            "at_end": final_mb,
        },
        "ready_after": ready,
    }
    print(json.dumps(report, indent=2))
    ok = not good_failures and not server_errors and ready and report["p99_ratio"] <= 2.0
    return 0 if ok else 1


def _num_classes(url: str) -> int:
    with urllib.request.urlopen(f"{url}/v1/model", timeout=10) as res:
        return len(json.load(res)["classes"])


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
