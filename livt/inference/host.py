"""The CPU an engine runs on: its model name and the ISA flags that decide which engine is fastest.

Benchmarks record it beside their figures, and ``auto`` trusts a benchmark record only when it was
measured on the same CPU.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# The instruction-set extensions that change which engine / precision wins (bf16, int8, matmul tiles).
_FLAG_PREFIXES = ("avx512", "amx", "avx_vnni", "avx2", "fma", "avx_ne_convert", "sve", "asimd")


@cache
def host_fingerprint() -> dict[str, object]:
    """``{"cpu": model name, "flags": [the relevant ISA flags, sorted]}`` of this machine."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = {f for f in value.split() if f.startswith(_FLAG_PREFIXES)}
    return {"cpu": name, "flags": sorted(flags)}
