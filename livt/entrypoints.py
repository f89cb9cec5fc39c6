"""The console scripts. Each imports its command only when run, so a missing dependency is one line.

The serving image installs livt without torch (``livt-serve`` and ``livt-predict`` need none), yet
the package's scripts are all there: ``livt-train`` in it, or in any environment short of a
dependency, names what is missing and how to install it rather than ending in a ModuleNotFoundError
traceback.
"""

from __future__ import annotations

import importlib
import sys

EXIT_MISSING = 2

_INSTALL = {
    "livt-train": "pip install torch torchvision && pip install livt",
    "livt-export": "pip install torch torchvision && pip install 'livt[export]'",
    "livt-serve": "pip install 'livt[serve]'",
    "livt-predict": "pip install 'livt[serve]'",
}


def _run(prog: str, module: str) -> int:
    # Some commands import their heavy parts only once the flags are read (export's --help is quick).
    try:
        return importlib.import_module(module).main()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "livt":  # livt's own import broke: a bug, keep the traceback
            raise
        print(f"{prog}: needs the package {missing!r}, which is not installed here ({_INSTALL[prog]})", file=sys.stderr)  # fmt: skip
        return EXIT_MISSING


def train() -> int:
    return _run("livt-train", "livt.training.cli")


def export() -> int:
    return _run("livt-export", "livt.export.cli")


def serve() -> int:
    return _run("livt-serve", "livt.serving.cli")


def predict() -> int:
    return _run("livt-predict", "livt.predict.cli")
