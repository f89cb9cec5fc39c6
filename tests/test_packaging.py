"""The serving image installs ``docker/requirements-serve.txt`` (the ``serve`` extra without the
core's torch): the two lists must not drift apart."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirements(lines: list[str]) -> set[str]:
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def test_docker_serve_requirements_equal_the_serve_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    docker = (ROOT / "docker" / "requirements-serve.txt").read_text().splitlines()
    assert _requirements(docker) == set(extras["serve"])


def test_serve_extra_carries_no_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(
        req.split(">")[0].split("=")[0] in {"torch", "torchvision", "timm"} for req in extras["serve"]
    )
