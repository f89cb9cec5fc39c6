"""The inference layer stands alone: no torch, no FastAPI, nothing from livt.serving or livt.export."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_predictor_runs_every_engine_without_torch_fastapi_or_serving(artifact: Path):
    script = textwrap.dedent(
        f"""
        import sys

        BLOCKED = ("torch", "torchvision", "timm", "fastapi", "starlette", "uvicorn", "livt.serving", "livt.export")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.startswith(BLOCKED):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        from livt import Predictor

        images = [np.full((20, 20, 3), 100 + i, dtype=np.uint8) for i in range(3)]
        for backend in ("auto", "ort", "openvino"):
            assert len(Predictor({str(artifact)!r}, backend=backend).predict(images)) == 3
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
