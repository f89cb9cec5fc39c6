"""Good requests under an adversarial load, next to the same load without it; prints JSON.

    python benchmarks/bench_adversarial.py --model model.onnx        # starts its own livt-serve

One real ``livt-serve`` on loopback gets rounds of ``--requests`` requests at ``--concurrency``,
clean rounds (every request a good one) and adversarial rounds (``--bad-fraction`` of them bad, of
every kind of malformed, oversized, slow or cross-site input) in turn, so both see the same server, machine and moment. Reported: for
good requests, failures (must be 0) and latency percentiles per kind of round; for bad ones, the
statuses they got (never a 5xx); the server's resident memory (RSS) sampled through the run; and
that the server is ready at the end. The load generator is harness.load's light keep-alive one; a
connection the server closes (it does after refusing a body it will not read) is reopened.
During adversarial rounds, ``--slow-clients`` more connections send their headers or their body a
byte at a time (slow clients); they count toward the bad fraction's spirit, not its
number, and what they got (408, or still held when the round ended) is reported. A SIGTERM during
a slow upload ends the server, so it is tested, not benchmarked.
"""

from __future__ import annotations

import argparse
import asyncio
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

from adversarial_requests import DROPPED, SlowClients, bad_requests
from harness.load import CHECK_EVERY, Connection, event_loop, percentile, request_bytes
from harness.reference import reference
from harness.server import ServerProcess

from livt.host import host_info


class _ClosingAwareConnection(Connection):
    """harness.load's connection, noting a response's ``Connection: close`` before it is handed on."""

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
        self.errors: list[str] = []  # harness.load's connection reports protocol problems here

    def next_request(self, conn: _ClosingAwareConnection) -> None:
        if not self.schedule:
            conn.transport.close()
            return
        conn.kind, request = self.schedule.pop()
        conn.send(request)
        if conn.kind in DROPPED:
            conn.transport.close()

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
        elif conn.waiting and conn.kind in DROPPED:
            self.bad_statuses.setdefault(conn.kind, Counter())["dropped by the client"] += 1
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
    good: bytes, bad: dict[str, bytes], total: int, bad_fraction: float, rng: random.Random, first: int = 0
) -> list:
    """``total`` requests, ``bad_fraction`` of them bad, the kinds in turn from the ``first``-th, at
    random places (a round may hold fewer bad requests than there are kinds: the next goes on)."""
    n_bad = round(total * bad_fraction)
    kinds = list(bad)
    chosen = [kinds[(first + i) % len(kinds)] for i in range(n_bad)]
    items = [("good", good)] * (total - n_bad) + [(kind, bad[kind]) for kind in chosen]
    rng.shuffle(items)
    return items


def _summary(latencies: list[float]) -> dict:
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p90_ms": percentile(latencies, 90) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


RSS_LIMIT_MB = 600


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--slow-clients", type=int, default=6, help="byte-at-a-time connections during adversarial rounds"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra livt-serve flag (repeatable)"
    )
    return parser


class _Tally:
    """What the rounds of one run add up to."""

    def __init__(self) -> None:
        self.good: dict[str, list[float]] = {"clean": [], "adversarial": []}
        self.elapsed: dict[str, float] = {"clean": 0.0, "adversarial": 0.0}
        self.windows: dict[str, list[tuple[float, float]]] = {"clean": [], "adversarial": []}
        self.round_peaks: list[tuple[str, float]] = []
        self.bad_statuses: dict[str, Counter] = {}
        self.good_failures: list[str] = []
        self.checked = 0

    def add(self, mode: str, out: dict, window: tuple[float, float], peak_mb: float) -> None:
        level = out["level"]
        self.good[mode] += level.good
        self.elapsed[mode] += out["elapsed"]
        self.windows[mode].append(window)
        self.round_peaks.append((mode, peak_mb))
        self.good_failures += level.good_failures
        self.checked += level.checked
        for kind, counts in level.bad_statuses.items():
            self.bad_statuses.setdefault(kind, Counter()).update(counts)


def run_rounds(args: argparse.Namespace, url: str, good: bytes, bad: dict, image: bytes, rss, expected: int):
    """Warm up, then ``args.rounds`` clean/adversarial pairs; the tally and the slow clients' statuses."""
    rng = random.Random(args.seed)
    per_round = args.requests // args.rounds
    tally = _Tally()
    slow_statuses: Counter = Counter()
    sent_bad = 0
    loop = event_loop()
    # Warm-up: ORT's first batches, the server's caches, the client's code paths.
    loop.run_until_complete(
        run_round(url, [("good", good)] * (4 * args.concurrency), args.concurrency, expected)
    )
    for r in range(args.rounds):
        # Alternate which goes first, so neither always follows the other's after-effects.
        for mode in ("clean", "adversarial") if r % 2 == 0 else ("adversarial", "clean"):
            fraction = args.bad_fraction if mode == "adversarial" else 0.0
            schedule = _schedule(good, bad, per_round, fraction, rng, sent_bad)
            sent_bad += round(per_round * fraction)
            slow = SlowClients(url, args.slow_clients if mode == "adversarial" else 0, image)
            start = time.perf_counter()
            with slow:
                out = loop.run_until_complete(run_round(url, schedule, args.concurrency, expected))
            end = time.perf_counter()
            slow_statuses.update(slow.statuses)
            tally.add(mode, out, (start, end), rss.peak_mb(start, end))
    loop.close()
    return tally, slow_statuses


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    image, x1, expected_top1 = reference(args.model, None)
    server = ServerProcess(args.model, ["--require-checksum", *args.server_arg]).start()
    url, pid = server.url, server.pid
    try:
        good = request_bytes(url, image, "raw", {})
        bad = bad_requests(url, tuple(x1.shape), _num_classes(url), image.data)
        with RssSampler(pid) as rss:
            start_mb = rss.rss() / 2**20
            tally, slow_statuses = run_rounds(args, url, good, bad, image.data, rss, expected_top1)
            final_mb = rss.rss() / 2**20
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as res:
            ready = json.load(res)["ready"]
        hwm_mb = _status_kb(pid, "VmHWM") / 1024
    finally:
        server.stop()
    report = _report(args, tally, rss, start_mb, final_mb, hwm_mb, ready)
    report["host"] = host_info()
    report["slow_clients"] = {"connections": args.slow_clients, "statuses": dict(slow_statuses)}
    print(json.dumps(report, indent=2, default=str))
    ok = not tally.good_failures and not report["bad_5xx"] and ready and report["p99_ratio"] <= 2.0
    return 0 if ok and report["server_rss_mb"]["peak_sampled"] < RSS_LIMIT_MB else 1


def _report(args, tally: _Tally, rss: RssSampler, start_mb: float, final_mb: float, hwm_mb: float, ready):
    clean, adversarial = (_summary(tally.good[m]) for m in ("clean", "adversarial"))
    for mode, summary in (("clean", clean), ("adversarial", adversarial)):
        summary["good_requests_per_s"] = len(tally.good[mode]) / tally.elapsed[mode]
        summary["server_rss_peak_mb"] = max(rss.peak_mb(a, b) for a, b in tally.windows[mode])
    server_errors = {
        k: dict(v) for k, v in tally.bad_statuses.items() if any(isinstance(s, int) and s >= 500 for s in v)
    }
    return {
        "model": str(args.model),
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "requests_per_kind_of_round": args.requests // args.rounds * args.rounds,
        "rounds": args.rounds,
        "bad_fraction": args.bad_fraction,
        "good_request_failures": len(tally.good_failures),
        "first_good_failure": tally.good_failures[0] if tally.good_failures else None,
        "checked_predictions": tally.checked,
        "clean": clean,
        "adversarial": adversarial,
        "p99_ratio": adversarial["p99_ms"] / clean["p99_ms"],
        "bad_statuses": {k: dict(v) for k, v in sorted(tally.bad_statuses.items())},
        "bad_5xx": server_errors,
        "server_rss_mb": {
            "at_start": start_mb,
            "peak_sampled": max(s for _, s in rss.samples) / 2**20,
            "limit": RSS_LIMIT_MB,
            "high_water_mark": hwm_mb,
            "peak_per_round": [f"{mode} {peak:.0f}" for mode, peak in tally.round_peaks],
            "at_end": final_mb,
        },
        "ready_after": ready,
    }


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
