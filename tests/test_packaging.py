"""The CPU image installs ``docker/requirements-serve.lock`` (the ``serve`` extra, pinned and hashed,
without the core's torch), the GPU image ``docker/requirements-gpu.lock`` (the same with
onnxruntime-gpu), and both build the package with ``docker/requirements-build.lock``
(``build-system.requires``): the locks must not drift from pyproject.toml or from each other.
Regenerate them with ``python scripts/lock_serve.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The interpreter the locks are for: the CPU image's (Debian bookworm's python3, python:3.11-slim).
IMAGE_ENV = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux"}


def parse_lock(text: str) -> dict[str, dict]:
    """``{name: {"version", "marker", "hashes", "via"}}`` of a pip-compile lock with hashes."""
    entries: dict[str, dict] = {}
    current: dict | None = None
    via_block = False
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            req = Requirement(line.rstrip(" \\"))
            spec = str(req.specifier)
            assert spec.startswith("==") and "," not in spec, f"not an exact pin: {line}"
            current = {"version": spec[2:], "marker": req.marker, "hashes": [], "via": set()}
            entries[canonicalize_name(req.name)] = current
            via_block = False
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current["hashes"].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif current is not None and (m := re.match(r"\s+# via (.+)$", line)):
            current["via"].add(m.group(1).strip())
        elif current is not None and line.strip() == "# via":
            via_block = True
        elif current is not None and via_block and (m := re.match(r"\s+#\s+(.+)$", line)):
            current["via"].add(m.group(1).strip())
        else:
            via_block = False
    return entries


def _check_lock(lock_name: str, input_name: str, requirements: list[str]) -> None:
    lock = parse_lock((ROOT / "docker" / lock_name).read_text())
    assert lock, f"{lock_name} is empty"
    direct = {name for name, entry in lock.items() if f"-r {input_name}" in entry["via"]}
    wanted = {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}
    assert direct == set(wanted), (
        f"{lock_name} was compiled from other requirements than pyproject.toml's: "
        f"missing {sorted(set(wanted) - direct)}, extra {sorted(direct - set(wanted))}; "
        "run python scripts/lock_serve.py"
    )
    for name, req in wanted.items():
        entry = lock[name]
        assert req.specifier.contains(entry["version"], prereleases=True), (
            f"{lock_name} pins {name}=={entry['version']}, outside pyproject.toml's {req}"
        )
        assert (req.marker is None) == (entry["marker"] is None), f"{name}: markers differ"
    for name, entry in lock.items():
        assert entry["hashes"], f"{lock_name}: {name} has no hash (pip --require-hashes would refuse it)"
        if entry["marker"] is not None:
            assert entry["marker"].evaluate(IMAGE_ENV), f"{name} is locked but not installed in the image"


def test_serve_lock_matches_the_serve_extra():
    _check_lock(
        "requirements-serve.lock", "serve-extra.in", PYPROJECT["project"]["optional-dependencies"]["serve"]
    )


def test_build_lock_matches_build_system_requires():
    _check_lock("requirements-build.lock", "build-system.in", PYPROJECT["build-system"]["requires"])


def test_gpu_lock_is_the_serve_lock_with_onnxruntime_gpu():
    serve = PYPROJECT["project"]["optional-dependencies"]["serve"]
    gpu_extra = [
        r.replace("onnxruntime", "onnxruntime-gpu", 1) if r.startswith("onnxruntime") else r for r in serve
    ]
    _check_lock("requirements-gpu.lock", "serve-extra-gpu.in", gpu_extra)
    cpu = {
        n: e["version"]
        for n, e in parse_lock((ROOT / "docker" / "requirements-serve.lock").read_text()).items()
    }
    gpu = {
        n: e["version"]
        for n, e in parse_lock((ROOT / "docker" / "requirements-gpu.lock").read_text()).items()
    }
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" not in cpu
    cpu.pop("onnxruntime"), gpu.pop("onnxruntime-gpu")
    assert gpu == cpu, (
        "the GPU lock's other pins differ from the serve lock's: run python scripts/lock_serve.py"
    )


def test_lock_check_catches_a_drifted_extra():
    requirements = PYPROJECT["project"]["optional-dependencies"]["serve"]
    with pytest.raises(AssertionError, match="missing"):
        _check_lock("requirements-serve.lock", "serve-extra.in", [*requirements, "requests>=2"])
    raised = [r.replace(">=0.110", ">=999") if r.startswith("fastapi") else r for r in requirements]
    with pytest.raises(AssertionError, match="outside pyproject"):
        _check_lock("requirements-serve.lock", "serve-extra.in", raised)


def test_serve_extra_and_locks_carry_no_torch():
    extras = PYPROJECT["project"]["optional-dependencies"]
    heavy = {"torch", "torchvision", "timm"}
    assert not heavy & {canonicalize_name(Requirement(r).name) for r in extras["serve"]}
    for lock in ("requirements-serve.lock", "requirements-gpu.lock"):
        assert not heavy & set(parse_lock((ROOT / "docker" / lock).read_text())), lock


def test_images_install_the_locks():
    for dockerfile, lock in (
        ("Dockerfile", "requirements-serve.lock"),
        ("Dockerfile.gpu", "requirements-gpu.lock"),
    ):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert "--require-hashes" in text and f"/{lock}" in text, dockerfile
        assert "requirements-build.lock" in text and "--no-build-isolation" in text, dockerfile
        assert f"!docker/{lock}" in (ROOT / ".dockerignore").read_text()
