"""The CPU image against the same server run on this host, side by side; prints JSON.

    python benchmarks/bench_docker.py --image livt-serve:check --model build/serve-check/model.onnx
    python benchmarks/bench_docker.py ... --build          # also time docker build, cold and cached
    python benchmarks/bench_docker.py ... --host-python build/bench-venv/bin/python

- Image: its size.
- ``--build``: ``docker build --no-cache`` of docker/Dockerfile on the offline base with the
  wheelhouse (as ``make docker-check`` builds it; the base image itself is not rebuilt), then again
  with the layer cache after a change to the package's code only (a copy of the build context with
  one comment added: the dependency layer is reused), then again with nothing changed.
- Start-up: from ``docker run`` (the README's flags) to /v2/health/ready answering, and to Docker's
  health status ``healthy`` (which waits for the HEALTHCHECK's first probe, 5 s after the start).
- Requests/s at each ``--concurrency`` (default 1 and 32), one PNG per request, with the light
  load generator of harness/load.py: the container (``--network host``, so no NAT or proxy in the
  path) and ``livt-serve`` on this host on the same artifact, in ``--rounds`` rounds that alternate
  which side goes first, so that whatever else runs on a shared machine hits both alike. Each
  side's CPU per request is read from /proc (the container's server is a process of this host).

``--host-python``: an interpreter whose ``livt-serve`` is a host side (default: this one;
repeatable, each one more side). Give it a venv installed from docker/requirements-serve.lock to
compare the same library versions; the interpreter's own build (PGO or not) shows too.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from harness.load import http_level, request_bytes
from harness.reference import BenchImage, reference
from harness.server import ServerProcess, free_port, is_ready

from livt.host import host_info
from livt.inference.timing import rotated

ROOT = Path(__file__).resolve().parents[1]
LABEL = "livt.bench-docker"
VERSIONS = (
    "import importlib.metadata as m, json, platform; "
    "print(json.dumps({'python': platform.python_version(), "
    "**{p: m.version(p) for p in ('onnxruntime', 'numpy', 'uvicorn', 'fastapi', 'pillow')}}))"
)


def docker(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"bench_docker: docker {' '.join(args[:3])} ... failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def wait(predicate, what: str, timeout: float = 120) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench_docker: {what} did not happen in {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def run_container(image: str, model_dir: Path, port: int, extra: tuple[str, ...] = ()) -> str:
    return docker(
        "run", "-d", "--label", LABEL, "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "-v", f"{model_dir}:/models:ro", "-e", f"LIVT_PORT={port}", "-e", "LIVT_LOG_LEVEL=warning",
        *extra, image,
    )  # fmt: skip


def health(cid: str) -> str:
    return docker("inspect", "--format", "{{.State.Health.Status}}", cid)


def build(context: Path, tag: str, base: str, no_cache: bool) -> float:
    cmd = ["build", "--network", "none", "-f", str(context / "docker" / "Dockerfile")]
    cmd += ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", "PIP_NO_INDEX=1", "-t", tag]
    start = time.monotonic()
    docker(*cmd, *(["--no-cache"] if no_cache else []), str(context))
    return time.monotonic() - start


def build_times(image: str, base: str) -> dict:
    cold = build(ROOT, image, base, no_cache=True)
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        for name in ("pyproject.toml", "README.md", ".dockerignore"):
            shutil.copy2(ROOT / name, context / name)
        shutil.copytree(ROOT / "livt", context / "livt", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "docker", context / "docker")
        with (context / "livt" / "serving" / "app.py").open("a") as f:
            f.write("# a code change\n")
        code_change = build(context, f"{image}-bench-edit", base, no_cache=False)
    docker("rmi", f"{image}-bench-edit")
    unchanged = build(ROOT, image, base, no_cache=False)
    return {
        "cold_no_cache_s": cold,
        "cached_after_code_change_s": code_change,
        "cached_unchanged_s": unchanged,
    }


def startup_times(image: str, model_dir: Path, starts: int) -> dict:
    to_ready, to_healthy = [], []
    for _ in range(starts):
        port = free_port()
        begin = time.monotonic()
        cid = run_container(image, model_dir, port)
        try:
            wait(lambda port=port: is_ready(f"http://127.0.0.1:{port}"), "ready")
            to_ready.append(time.monotonic() - begin)
            wait(lambda cid=cid: health(cid) == "healthy", "healthy")
            to_healthy.append(time.monotonic() - begin)
        finally:
            docker("rm", "-f", "-v", cid)
    return {
        "starts": starts,
        "run_to_ready_s": statistics.median(to_ready),
        "run_to_healthy_s": statistics.median(to_healthy),
        "all_ready_s": to_ready,
        "all_healthy_s": to_healthy,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="livt-serve:check", help="(default: %(default)s)")
    parser.add_argument("--model", type=Path, required=True, help="the ONNX artifact (with its .sha256)")
    parser.add_argument("--base", default="livt-base:bookworm", help="base image of --build")
    parser.add_argument("--build", action="store_true", help="time docker build cold and cached")
    parser.add_argument("--starts", type=int, default=3, help="container starts to time")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=2000, help="requests per side, level and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--host-python",
        type=Path,
        action="append",
        help="an interpreter whose livt-serve is a host side (repeatable; default: this one)",
    )
    parser.add_argument(
        "--container-variant",
        action="append",
        default=[],
        metavar="DOCKER_RUN_ARGS",
        help="one more container side started with these extra docker run arguments (repeatable), "
        "e.g. '--security-opt seccomp=unconfined'",
    )
    return parser.parse_args(argv)


# A side: a name -> (its URL, the pid of its server process on this host).
Sides = dict[str, tuple[str, int]]


def start_containers(stack: ExitStack, image: str, model: Path, variants: list[str], sides: Sides) -> dict:
    """One container per variant (the plain one first), ready; their versions (the first one's)."""
    first = ""
    for variant in ["", *variants]:
        name = f"container {variant}".strip()
        port = free_port()
        cid = run_container(image, model.parent, port, tuple(shlex.split(variant)))
        stack.callback(docker, "rm", "-f", "-v", cid)
        first = first or cid
        sides[name] = (f"http://127.0.0.1:{port}", int(docker("inspect", "-f", "{{.State.Pid}}", cid)))
        wait(lambda name=name: is_ready(sides[name][0]), f"{name}'s readiness")
    return json.loads(docker("exec", first, "python", "-c", VERSIONS))


def start_hosts(stack: ExitStack, model: Path, pythons: list[Path], sides: Sides) -> dict[str, dict]:
    """``livt-serve`` of each interpreter on this host, ready; the versions each one runs."""
    versions = {}
    for i, python in enumerate(pythons):
        name = "host" if len(pythons) == 1 else f"host{i + 1}"
        try:
            server = ServerProcess(model, ["--log-level", "warning"], python=python, start_timeout_s=120)
            stack.enter_context(server)
        except RuntimeError as exc:
            raise SystemExit(f"bench_docker: livt-serve of {python}: {exc}") from exc
        sides[name] = (server.url, server.pid)
        found = json.loads(subprocess.check_output([str(python), "-c", VERSIONS], text=True))
        versions[name] = {"interpreter": str(python), **found}
    return versions


def measure_rounds(
    args: argparse.Namespace, sides: Sides, image: BenchImage, expected_top1: int
) -> list[dict]:
    """Every side at every concurrency, ``args.rounds`` times, each side going first in turn."""
    rounds = []
    names = list(sides)
    for r in range(args.rounds):
        order = rotated(names, r)
        for c in args.concurrency:
            for name in order:
                url, pid = sides[name]
                request = request_bytes(url, image, "raw", {})
                level = http_level("light", url, request, c, args.requests, expected_top1, pid, {})
                rounds.append({"round": r, "side": name, **level})
    return rounds


def summarise(rounds: list[dict], sides: Sides, concurrency: list[int]) -> dict:
    """Per concurrency and side, the medians over rounds, throughput also relative to the container."""

    def median(side: str, c: int, key: str) -> float:
        return statistics.median(x[key] for x in rounds if x["side"] == side and x["concurrency"] == c)

    return {
        f"c{c}": {
            name: {
                "requests_per_s": median(name, c, "requests_per_s"),
                "p50_ms": median(name, c, "p50_ms"),
                "server_cpu_us_per_request": median(name, c, "server_cpu_us_per_request"),
                "over_container": median(name, c, "requests_per_s")
                / median("container", c, "requests_per_s"),
            }
            for name in sides
        }
        for c in concurrency
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.model.resolve()
    report: dict = {"image": args.image, "model": str(model), "cpus": os.cpu_count(), "host": host_info()}
    if args.build:
        report["build"] = build_times(args.image, args.base)
    report["image_size_mb"] = int(docker("image", "inspect", "--format", "{{.Size}}", args.image)) / 1e6
    report["startup"] = startup_times(args.image, model.parent, args.starts)

    image, _, expected_top1 = reference(model, None)
    sides: Sides = {}
    with ExitStack() as stack:
        report["versions"] = {
            "container": start_containers(stack, args.image, model, args.container_variant, sides),
            **start_hosts(stack, model, args.host_python or [Path(sys.executable)], sides),
        }
        rounds = measure_rounds(args, sides, image, expected_top1)
    report["image_file"] = image.describe()
    report["throughput_median_over_rounds"] = summarise(rounds, sides, args.concurrency)
    report["rounds"] = rounds
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
