"""``livt-serve`` in a child process on a free loopback port: for the demo, benchmarks and tests.

``with ServerProcess(model) as server: ... server.url ...`` starts the service with the given
flags, waits until ``/v2/health/ready`` answers (or the process exits, which raises with its log),
and stops it on leaving. The log goes to a temporary file: a pipe nobody reads would block the
server once full.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_ready(url: str, timeout_s: float = 1.0, headers: dict[str, str] | None = None) -> bool:
    """Whether the service at ``url`` answers its readiness route."""
    request = urllib.request.Request(f"{url}/v2/health/ready", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class ServerProcess:
    """A ``livt-serve --model MODEL --port PORT FLAGS...`` child process, ready once entered."""

    def __init__(
        self,
        model: Path | str,
        flags: Sequence[str] = (),
        *,
        python: Path | str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        start_timeout_s: float = 60.0,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            str(python or sys.executable), "-m", "livt.serving.cli", "--model", str(model),
            "--port", str(self.port), *flags,
        ]  # fmt: skip
        self._env = env
        self._timeout_s = start_timeout_s
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open while the server runs)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not started"
        return self.proc.pid

    def log(self) -> str:
        """What the server wrote so far."""
        self._log.seek(0)
        return self._log.read()

    def start(self) -> ServerProcess:
        env = {**os.environ, **(self._env or {})}
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=self._log, env=env, text=True)
        deadline = time.monotonic() + self._timeout_s
        while not is_ready(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"livt-serve exited with status {self.proc.returncode}: {self.log().strip()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"livt-serve was not ready after {self._timeout_s:.0f} s: {self.log().strip()}"
                )
            time.sleep(0.1)
        return self

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Terminate the server (SIGTERM: a graceful shutdown) and return its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._log.close()
