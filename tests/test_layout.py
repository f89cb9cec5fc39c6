"""The shape of the code: short functions and modules, and imports that only run down the layers.

The limits are the project's style (docs/architecture.md): no function over 80 lines, no module over
420, in ``livt/``, ``benchmarks/`` and ``scripts/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("livt", "benchmarks", "scripts")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 420

# The layers of livt, bottom up: a module may import its own unit and the layers below, never a unit
# of its own layer or of one above. A unit is the longest key that prefixes the module's name.
LAYERS: list[set[str]] = [
    # the ground floor: numpy / Pillow only, shared by training, export and serving
    {
        "livt",
        "livt.prior",
        "livt.label_shift",
        "livt.artifact",
        "livt.images",
        "livt.flags",
        "livt.metrics",
    },
    {"livt.data", "livt.models", "livt.inference"},
    {"livt.serving", "livt.training", "livt.predict"},
    {"livt.export"},
    {"livt.entrypoints"},
]
# (importer, imported): the upward imports that stand on purpose.
UPWARD_ALLOWED = {
    # ``livt.Predictor`` resolves on first use (module __getattr__), so ``import livt`` stays light.
    ("livt", "livt.predict"),
}


def _sources() -> Iterator[Path]:
    for folder in CHECKED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its end) of every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _long_functions() -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        long = {name: n for name, n in _functions(tree) if n > MAX_FUNCTION_LINES}
        if long:
            found[path.relative_to(ROOT).as_posix()] = long
    return found


def test_no_function_is_over_80_lines():
    long = {
        f"{path}: {name} ({n} lines)"
        for path, names in _long_functions().items()
        for name, n in names.items()
    }
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines: split them along their steps: {sorted(long)}"
    )


def test_no_module_is_over_420_lines():
    long = {
        f"{path.relative_to(ROOT).as_posix()} ({n} lines)"
        for path in _sources()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {sorted(long)}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, is_package: bool) -> Iterator[str]:
    """The livt modules that ``module``'s ``source`` imports, at its top or inside a function."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "livt")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "livt":
                yield node.module


def _unit(module: str) -> tuple[int, str]:
    """(layer, unit) of ``module``: the longest unit of ``LAYERS`` that it is or lies under."""
    matches = [
        (len(unit), layer, unit)
        for layer, units in enumerate(LAYERS)
        for unit in units
        if module == unit or module.startswith(unit + ".")
    ]
    if not matches:
        pytest.fail(f"{module} is on no layer: add its unit to LAYERS in tests/test_layout.py")
    _, layer, unit = max(matches)
    return layer, unit


def _upward(module: str, targets: Iterator[str]) -> set[str]:
    """The imports of ``targets`` that run up from ``module``, or across to another unit of its layer
    (the ground floor's modules may use each other)."""
    layer, unit = _unit(module)
    found = set()
    for target in targets:
        target_layer, target_unit = _unit(target)
        if target_unit == unit or (unit, target_unit) in UPWARD_ALLOWED:
            continue
        if target_layer > layer or (target_layer == layer > 0):
            found.add(f"{module} -> {target} (layer {layer} -> {target_layer})")
    return found


def test_no_livt_module_imports_from_a_layer_above_its_own():
    upward = set()
    for path in sorted((ROOT / "livt").rglob("*.py")):
        module = _module_name(path)
        source = path.read_text(encoding="utf-8")
        upward |= _upward(module, _imports(source, module, path.name == "__init__.py"))
    assert not upward, f"imports that run up or across a layer: {sorted(upward)}"


def test_the_layer_check_sees_upward_and_sideways_imports():
    relative = "from ..training import config\n\ndef f():\n    from livt.export import cli\n"
    targets = list(_imports(relative, "livt.serving.app", is_package=False))
    assert targets == ["livt.training", "livt.export"]
    assert len(_upward("livt.serving.app", iter(targets))) == 2
    assert _upward("livt.data.datasets", iter(["livt.serving.app"]))  # across layer 1
    assert not _upward(
        "livt.export.fold", iter(["livt.training.checkpoint", "livt.prior", "livt.export.onnx"])
    )
    assert _upward("livt.metrics", iter(["livt.data.longtail"]))  # the ground floor stands on nothing
