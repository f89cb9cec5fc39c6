"""livt-serve against LitServe and BentoML serving the same ONNX; prints JSON (not part of CI).

    python benchmarks/bench_peers.py --model build/serve-check/model.onnx --setup   # makes the venvs once
    python benchmarks/bench_peers.py --model build/serve-check/model.onnx --json runs/bench/peers.json

Each peer runs in a virtual environment of its own (``--venvs``, default ``build/peers``; ``--setup``
creates them from PyPI: the peer, onnxruntime, numpy, pillow, python-multipart) and serves
``benchmarks/peers/*_app.py``: livt's own preprocessing and ONNX Runtime on the same artifact,
batching up to 32 images as livt-serve does, behind livt's ``/v1/predict`` route and answer shape.
One client for all (``harness.load``'s light keep-alive client, one PNG per multipart request; a
sample of the answers is checked against raw ONNX Runtime's top class); the rounds interleave the
servers (the order rotating), every concurrency level in each; every figure is the median over the
rounds. All three servers stay up for the whole run on loopback; their CPU while idle is recorded,
as one that spins would slow the one being measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness.load import http_level, request_bytes
from harness.reference import reference
from harness.report import write_json
from harness.server import ServerProcess, free_port

from livt.host import host_info
from livt.inference.timing import rotated

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = {"litserve": ["litserve"], "bentoml": ["bentoml"]}
COMMON = ["onnxruntime", "numpy", "pillow", "python-multipart"]


def setup_venv(venv: Path, packages: list[str]) -> None:
    """A fresh venv with ``packages`` from PyPI (this machine's pip configuration ignored)."""
    subprocess.run([sys._base_executable, "-m", "venv", "--clear", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--index-url", "https://pypi.org/simple", *packages, *COMMON], check=True, env=env)


def venv_versions(python: Path, packages: list[str]) -> dict[str, str]:
    code = "import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    out = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _answers(url: str, image: bytes) -> bool:
    """Whether ``url`` answers a real prediction request (the peers have no common readiness route)."""
    boundary = "livt-peers-ready"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="image"\r\n\r\n'.encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{url}/v1/predict", body, headers), timeout=5
        ) as r:
            return r.status == 200 and "predictions" in json.load(r)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False


@contextmanager
def peer_server(
    name: str, venv: Path, model: Path, image: bytes, timeout_s: float = 180
) -> Iterator[tuple[str, int]]:
    """``(url, pid)`` of a peer serving ``model`` from its venv; stopped (its process group) at exit."""
    port = free_port()
    python = venv / "bin" / "python"
    if name == "litserve":
        cmd = [str(python), "litserve_app.py", str(port)]
    else:
        cmd = [
            str(venv / "bin" / "bentoml"),
            "serve",
            "bentoml_app:Livt",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    env = {
        **os.environ,
        "LIVT_MODEL": str(model),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE / 'peers'}",  # livt's preprocessing, torch-free
        "BENTOML_HOME": str(venv / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen(cmd, cwd=HERE / "peers", env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{port}"
        while not _answers(url, image):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"{name} did not start (status {proc.poll()}):\n{log.read()[-3000:]}")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # the group started above: the peer and the workers it spawned
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every descendant (Linux /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def idle_cpu_percent(pids: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: 100 * (tree_cpu_s(pid) - before[name]) / seconds for name, pid in pids.items()}


def summarise(rounds: list[dict], concurrency: list[int]) -> dict:
    """Median requests/s and p50/p99 per server and level, and livt's per-round ratio to each peer."""
    names = list(rounds[0])
    summary: dict = {}
    for c in concurrency:
        level = {
            n: {
                k: statistics.median(r[n][str(c)][k] for r in rounds)
                for k in ("requests_per_s", "p50_ms", "p99_ms")
            }
            for n in names
        }
        for n in names:
            if n != "livt":
                ratios = [
                    r["livt"][str(c)]["requests_per_s"] / r[n][str(c)]["requests_per_s"] for r in rounds
                ]
                level["livt"][f"vs_{n}"] = statistics.median(ratios)
        summary[str(c)] = level
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an exported model.onnx (with its .sha256)")
    p.add_argument("--venvs", type=Path, default=ROOT / "build" / "peers", help="one venv per peer here")
    p.add_argument("--setup", action="store_true", help="(re)create the peers' venvs from PyPI first")
    p.add_argument("--peers", nargs="+", choices=sorted(PEERS), default=sorted(PEERS))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--requests", type=int, default=1000, help="per server, level and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--livt-ort", action="store_true",
                   help="also livt-serve forced to ONNX Runtime fp32, the peers' engine (livt: --backend auto)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the report here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.model.resolve()
    if args.setup:
        for name in args.peers:
            setup_venv(args.venvs / name, PEERS[name])
    image, _, expected_top1 = reference(model, None)
    versions = {"livt": {"python": sys.executable}}
    for name in args.peers:
        versions[name] = venv_versions(args.venvs / name / "bin" / "python", [name, "onnxruntime"])
    with ExitStack() as stack:
        livt = stack.enter_context(ServerProcess(model, ["--log-level", "warning"]))
        servers = {"livt": (livt.url, livt.pid)}
        if args.livt_ort:
            flags = ["--log-level", "warning", "--backend", "ort", "--precision", "fp32"]
            ort = stack.enter_context(ServerProcess(model, flags))
            servers["livt-ort"] = (ort.url, ort.pid)
        for name in args.peers:
            servers[name] = stack.enter_context(peer_server(name, args.venvs / name, model, image.data))
        idle = idle_cpu_percent({name: pid for name, (_, pid) in servers.items()})
        rounds = []
        for r in range(args.rounds):
            order = rotated(list(servers), r)
            result: dict = {name: {} for name in servers}
            for c in args.concurrency:
                for name in order:
                    url, _ = servers[name]
                    request = request_bytes(url, image, "multipart", {})
                    level = http_level("light", url, request, c, args.requests, expected_top1, None, {})
                    result[name][str(c)] = {
                        k: level[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "requests")
                    }
            rounds.append(result)
    report = {
        "model": str(model),
        "host": host_info(),
        "image": image.describe(),
        "versions": versions,
        "requests_per_level": args.requests,
        "idle_cpu_percent": idle,
        "median_over_rounds": summarise(rounds, args.concurrency),
        "rounds": rounds,
    }
    print(write_json(report, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
