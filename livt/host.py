"""The host: the CPU's model name and the ISA flags that decide which engine and precision is
fastest there (AMX, AVX-512 BF16/VNNI, AVX2...).

Every benchmark records ``host_info()`` beside its figures, and ``--backend auto`` trusts a
``livt-export benchmark`` record only where ``host_fingerprint()`` matches this machine's. Standard
library only, so the serving side and every script can use it. Linux reads ``/proc/cpuinfo``; elsewhere the model name is ``platform.processor()``
and the flags are unknown (an empty list, not a guess).
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
# The flags that change which kernels the engines pick, most capable first; /proc/cpuinfo's names.
ISA_FLAGS = (
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "avx512_fp16",
    "avx512_bf16",
    "avx512_vnni",
    "avx512bw",
    "avx512f",
    "avx_vnni",
    "avx2",
    "fma",
    "f16c",
    "sse4_2",
    # Arm (aarch64 calls its flag line "Features"): bf16, int8 dot products, SVE
    "bf16",
    "i8mm",
    "sve",
    "asimddp",
    "asimd",
)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's model name and which of :data:`ISA_FLAGS` it has (in that order)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:  # the first processor's block is enough: the cores of one host agree
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or ""
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def host_info(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """CPU model, ISA flags, logical CPUs usable by this process, OS and Python: JSON-ready."""
    try:
        cpu = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        cpu = {"model": "", "isa": []}
    try:
        usable = len(os.sched_getaffinity(0))  # what a container or taskset leaves, not the host's total
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu["model"] or platform.processor() or platform.machine(),
        "isa": cpu["isa"],
        "logical_cpus": usable,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


@cache
def host_fingerprint() -> dict[str, Any]:
    """What decides whether figures measured elsewhere hold here: ``{"cpu": model, "flags": ISA flags}``."""
    info = host_info()
    return {"cpu": info["cpu"], "flags": info["isa"]}


if __name__ == "__main__":
    import json

    print(json.dumps(host_info(), indent=2))
