"""Loading a benchmark script (``benchmarks/`` is a folder of scripts, not a package) as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(path: Path) -> ModuleType:
    """Import ``path`` under a name of its own (the scripts import each other: pytest's ``pythonpath``
    puts their folder on the path)."""
    spec = importlib.util.spec_from_file_location(f"livt_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
