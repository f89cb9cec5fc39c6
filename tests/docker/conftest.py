"""Fixtures for the checks of the CPU image: a real Docker daemon, the image, its running containers.

Run by ``make docker-check`` (docker/docker-check.sh builds the image, then ``pytest -m docker
tests/docker`` with ``LIVT_DOCKER_IMAGE`` and ``LIVT_DOCKER_ARTIFACT`` set). Without them, or without
a daemon, these tests fail with the reason: they never skip.

Containers start the README's way, ``docker run -p 127.0.0.1:PORT:8000 ...``, on a network made
for the session: docker-check's daemon runs without the default bridge (``--bridge=none``), and a
user-defined bridge network publishes ports all the same (through docker-proxy: no iptables here).
``host_network=True`` runs one with ``--network host`` and ``LIVT_PORT`` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.server import ServerProcess, free_port, is_ready

DOCKER = os.environ.get("DOCKER", "docker")
# docker-check.sh removes whatever carries this label, should a test be killed before its cleanup.
LABEL = "livt.docker-check"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; with ``check``, a failure shows its stderr."""
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Container:
    id: str
    port: int
    started: float  # time.monotonic() just before `docker run`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.id).stdout)[0]

    def logs(self) -> str:
        proc = docker("logs", self.id)
        return proc.stdout + proc.stderr

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from ``docker run`` until /v2/health/ready answers 200."""
        deadline = time.monotonic() + timeout
        while not is_ready(self.url):
            state = self.inspect()["State"]
            if not state["Running"]:
                pytest.fail(f"the container exited ({state['ExitCode']}) during start-up:\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become ready in {timeout} s:\n{self.logs()}")
            time.sleep(0.1)
        return time.monotonic() - self.started

    def wait_health(self, timeout: float = 90) -> float:
        """Seconds from ``docker run`` until Docker's own health status is ``healthy``."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect()["State"]
            status = state.get("Health", {}).get("Status")
            if status == "healthy":
                return time.monotonic() - self.started
            if status == "unhealthy" or not state["Running"] or time.monotonic() > deadline:
                pytest.fail(
                    f"health status {status!r} (running: {state['Running']}) after "
                    f"{time.monotonic() - self.started:.1f} s; probes: {state.get('Health', {}).get('Log')}\n"
                    f"{self.logs()}"
                )
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect()["State"]
            if state["Status"] == "exited":
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"the container still runs ({state['Status']}) after {timeout} s:\n{self.logs()}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("LIVT_DOCKER_IMAGE")
    if not name:
        pytest.fail("LIVT_DOCKER_IMAGE is not set: run these checks with `make docker-check`")
    if shutil.which(DOCKER) is None:
        pytest.fail(f"no {DOCKER!r} command: install docker.io (make docker-check does, as root)")
    proc = docker("version", "--format", "{{.Server.Version}}", check=False)
    if proc.returncode != 0:
        pytest.fail(f"no Docker daemon answers: {proc.stderr.strip()}")
    docker("image", "inspect", name)
    return name


@pytest.fixture(scope="session")
def artifact() -> Path:
    path = Path(os.environ.get("LIVT_DOCKER_ARTIFACT", ""))
    if not path.is_file() or not Path(f"{path}.sha256").is_file():
        pytest.fail(f"LIVT_DOCKER_ARTIFACT must name an exported model.onnx with its .sha256: {path}")
    return path.resolve()


@pytest.fixture(scope="session")
def network(image: str) -> Iterator[str]:
    name = f"livt-docker-check-{os.getpid()}"
    docker("network", "create", "--label", LABEL, name)
    yield name
    docker("network", "rm", name, check=False)


@pytest.fixture(scope="session")
def run_container(image: str, network: str) -> Iterator[Callable[..., Container]]:
    """``run(*docker_run_args, model_dir=..., env=..., host_network=False)``: a detached container
    with port 8000 published on 127.0.0.1 (or on the host's network), removed at the end."""
    started: list[str] = []

    def run(
        *args: str,
        model_dir: Path | None = None,
        env: dict[str, str] | None = None,
        host_network: bool = False,
    ) -> Container:
        port = free_port()
        cmd = ["run", "-d", "--label", LABEL]
        if host_network:
            cmd += ["--network", "host", "-e", f"LIVT_PORT={port}"]
        else:
            cmd += ["--network", network, "-p", f"127.0.0.1:{port}:8000"]
        if model_dir is not None:
            cmd += ["-v", f"{model_dir}:/models:ro"]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        begin = time.monotonic()
        cid = docker(*cmd, *args, image).stdout.strip()
        started.append(cid)
        return Container(cid, port, begin)

    yield run
    for cid in started:
        # -v: the anonymous /models volume of a container started without a model mounted.
        docker("rm", "-f", "-v", cid, check=False)


def readme_run_args() -> list[str]:
    """What the README's ``docker run`` adds to the entry point: a read-only root and a tmpfs /tmp."""
    return ["--read-only", "--tmpfs", "/tmp"]


@pytest.fixture(scope="module")
def served(run_container: Callable[..., Container], artifact: Path) -> Container:
    """The image started the way the README says, model mounted read-only, healthy. On ONNX Runtime
    fp32, as ``host_server``: answers are compared at 1e-5, which ``--backend auto``'s choice (bf16,
    say) need not meet; ``test_auto_serves_a_measured_engine`` starts it with the default."""
    container = run_container(*readme_run_args(), model_dir=artifact.parent, env={"LIVT_BACKEND": "ort"})
    container.wait_ready()
    container.wait_health()
    return container


@pytest.fixture(scope="module")
def host_server(artifact: Path) -> Iterator[str]:
    """``livt-serve`` on this host, on the same artifact: the reference for the container's answers."""
    try:
        with ServerProcess(artifact, ["--log-level", "warning", "--backend", "ort"]) as server:
            yield server.url
    except RuntimeError as exc:
        pytest.fail(f"livt-serve on the host did not start: {exc}")
