"""A benchmark's JSON report: the text it prints, also written (atomically) where ``--json`` says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from livt.files import atomic_write_text


def write_json(report: Any, path: Path | None) -> str:
    """``report`` as indented JSON, written to ``path`` too (its folder made) when one is given."""
    text = json.dumps(report, indent=2)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return text
