"""What the prior window costs the server: requests/s with it off and on, interleaved; prints JSON.

    python benchmarks/bench_prior_window.py --model runs/fmnist/export/model.onnx

Three servers on the same artifact, all started before the first measurement and each loaded in
turn: ``--prior-window 0 --metrics-max-classes 0`` (neither the window nor the per-class counters),
``--prior-window 0`` (the per-class prediction counters only) and the default window of 2,000
images re-estimated every 5 s. Rounds alternate the three, so a slow moment of the machine hits
all of them; the medians over rounds are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from harness.load import http_level, request_bytes
from harness.reference import reference
from harness.server import ServerProcess

from livt.host import host_info

CONFIGS = {
    "bare": ["--prior-window", "0", "--metrics-max-classes", "0"],
    "counters": ["--prior-window", "0"],
    "window": ["--prior-window", "2000", "--prior-interval-s", "5"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000, help="requests per round and server")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    image, _, expected_top1 = reference(args.model, None)
    servers = {
        name: ServerProcess(args.model, ["--log-level", "warning", *flags]).start()
        for name, flags in CONFIGS.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    p50: dict[str, list[float]] = {name: [] for name in CONFIGS}
    try:
        for _ in range(args.rounds):
            for name, server in servers.items():
                request = request_bytes(server.url, image, "raw", {})
                level = http_level(
                    "light",
                    server.url,
                    request,
                    args.concurrency,
                    args.requests,
                    expected_top1,
                    server.pid,
                    {},
                )
                rates[name].append(level["requests_per_s"])
                p50[name].append(level["p50_ms"])
    finally:
        for server in servers.values():
            server.stop()
    median = {name: statistics.median(v) for name, v in rates.items()}
    report = {
        "model": str(args.model),
        "cpus": os.cpu_count(),
        "host": host_info(),
        "concurrency": args.concurrency,
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "requests_per_s": rates,
        "p50_ms": p50,
        "median_requests_per_s": median,
        "window_cost_vs_counters": 1 - median["window"] / median["counters"],
        "window_cost_vs_bare": 1 - median["window"] / median["bare"],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
