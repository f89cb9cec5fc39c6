"""Regenerate the serving images' lock files from pyproject.toml (run after changing the serve extra).

    python scripts/lock_serve.py              # keeps the pins that still fit; --upgrade moves them all

Writes, with pip-compile (pip-tools, in the dev extra), exact versions and sha256 hashes of every
file of each pinned release:

- ``docker/requirements-serve.lock``: the ``serve`` extra and what it pulls in. The images install
  the package itself with ``--no-deps``, so the core's torch, torchvision and timm never enter.
- ``docker/requirements-gpu.lock``: the same, with ``onnxruntime-gpu`` (same version range) in
  place of ``onnxruntime``, and every other package at the serve lock's version (it is compiled
  with the serve lock as constraints). onnxruntime-gpu's releases lag onnxruntime's, so its
  version may be an older one.
- ``docker/requirements-build.lock``: ``build-system.requires``, to build the package's wheel in an
  image without reaching an index.

They are resolved for the Python running this script (3.11, the interpreter of the CPU image's
Debian bookworm base and of python:3.11-slim) against PyPI alone: this machine's pip configuration
(local wheel folders, extra indexes) is ignored so the hashes are PyPI's. tests/test_packaging.py
fails when a lock and pyproject.toml, or the two serving locks, disagree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SERVE_LOCK = ROOT / "docker" / "requirements-serve.lock"
GPU_LOCK = ROOT / "docker" / "requirements-gpu.lock"
BUILD_LOCK = ROOT / "docker" / "requirements-build.lock"
# The input files' names appear in the locks' "# via -r NAME" lines, which the test reads.
SERVE_INPUT = "serve-extra.in"
GPU_INPUT = "serve-extra-gpu.in"
BUILD_INPUT = "build-system.in"
COMMAND = "python scripts/lock_serve.py"


def lock_inputs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, list[str]]:
    """The requirement lines each lock is compiled from, keyed by input file name."""
    data = tomllib.loads(pyproject.read_text())
    serve = list(data["project"]["optional-dependencies"]["serve"])
    return {
        SERVE_INPUT: serve,
        GPU_INPUT: [gpu_requirement(r) for r in serve],
        BUILD_INPUT: list(data["build-system"]["requires"]),
    }


def gpu_requirement(line: str) -> str:
    """``onnxruntime...`` becomes ``onnxruntime-gpu...`` with the same specifier and marker."""
    req = Requirement(line)
    if req.name != "onnxruntime":
        return line
    req.name = "onnxruntime-gpu"
    return str(req)


def compile_lock(
    requirements: list[str],
    input_name: str,
    output: Path,
    index_url: str,
    upgrade: bool = False,
    constraints: Path | None = None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lines = list(requirements)
        if constraints is not None:
            shutil.copy2(constraints, Path(tmp) / constraints.name)
            lines.insert(0, f"-c {constraints.name}")
        (Path(tmp) / input_name).write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        env["CUSTOM_COMPILE_COMMAND"] = COMMAND  # the header's "regenerate with" line
        cmd = [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--allow-unsafe",  # setuptools is what the build lock is for
            "--strip-extras",
            "--no-emit-index-url",
            "--index-url",
            index_url,
            "--output-file",
            str(output),
            *(["--upgrade"] if upgrade else []),  # else pins already in the lock are kept
            input_name,
        ]
        subprocess.run(cmd, cwd=tmp, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-url", default="https://pypi.org/simple", help="(default: %(default)s)")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to its newest release")
    args = parser.parse_args(argv)
    inputs = lock_inputs()
    compile_lock(inputs[SERVE_INPUT], SERVE_INPUT, SERVE_LOCK, args.index_url, args.upgrade)
    # Upgrading the serve lock is what moves the shared pins: the GPU lock follows it.
    compile_lock(inputs[GPU_INPUT], GPU_INPUT, GPU_LOCK, args.index_url, args.upgrade, constraints=SERVE_LOCK)
    compile_lock(inputs[BUILD_INPUT], BUILD_INPUT, BUILD_LOCK, args.index_url, args.upgrade)
    for lock in (SERVE_LOCK, GPU_LOCK, BUILD_LOCK):
        print(f"wrote {lock.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
