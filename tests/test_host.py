"""livt.host: the CPU model and ISA flags every benchmark's JSON records and engine records are matched on."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from livt import host

from .benchmarks.scripts import BENCHMARKS

# Two real /proc/cpuinfo first blocks (trimmed flag lines): a Sapphire Rapids Xeon and a Graviton3.
XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Some Other CPU
flags\t\t: fpu
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""
# Scripts that write JSON but belong to other work streams (not edited here).
NOT_COVERED = {"study.py", "study_grid.py", "study_report.py"}


def test_parses_an_intel_block_most_capable_flag_first():
    cpu = host.parse_cpuinfo(XEON)
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert cpu["isa"] == [
        "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16", "avx512_bf16", "avx512_vnni",
        "avx512bw", "avx512f", "avx2", "fma", "f16c", "sse4_2",
    ]  # fmt: skip


def test_parses_an_arm_features_line():
    cpu = host.parse_cpuinfo(GRAVITON)
    assert cpu["model"] == ""  # aarch64 has no model name line: host_info falls back
    assert cpu["isa"] == ["bf16", "i8mm", "sve", "asimddp", "asimd"]


def test_this_host_matches_its_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    text = cpuinfo.read_text()
    model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    info = host.host_info()
    assert info["cpu"] == model
    assert set(info["isa"]) == flags & set(host.ISA_FLAGS)
    assert 1 <= info["logical_cpus"] <= (len([ln for ln in text.splitlines() if ln.startswith("processor")]))
    json.dumps(info)


def test_unreadable_cpuinfo_gives_no_flags_not_a_guess(tmp_path: Path):
    info = host.host_info(tmp_path / "missing")
    assert info["isa"] == [] and info["cpu"]  # platform's name (or the machine) stands in


def test_runs_as_a_script():
    out = subprocess.run([sys.executable, "-m", "livt.host"], capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) >= {"cpu", "isa", "logical_cpus"}


def _writes_json(tree: ast.Module) -> bool:
    return any(
        (
            isinstance(node, ast.Attribute)
            and node.attr in ("dumps", "dump")
            and getattr(node.value, "id", "") == "json"
        )
        or (isinstance(node, ast.Name) and node.id == "write_json")
        for node in ast.walk(tree)
    )


def _calls_host_info(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Call) and getattr(node.func, "id", "") == "host_info" for node in ast.walk(tree)
    )


def test_every_benchmark_writing_json_records_the_host():
    # The runnable scripts: a helper module builds request bodies with json, it reports nothing.
    scripts = [
        p
        for p in sorted(BENCHMARKS.glob("*.py"))
        if p.name not in NOT_COVERED and '__name__ == "__main__"' in p.read_text(encoding="utf-8")
    ]
    writing = [p for p in scripts if _writes_json(ast.parse(p.read_text(encoding="utf-8")))]
    assert len(writing) >= 9, writing
    missing = [p.name for p in writing if not _calls_host_info(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"these benchmarks write JSON without host_info(): {missing}"


def test_the_fingerprint_engine_records_are_matched_on_is_the_cpu_and_its_flags():
    info = host.host_info()
    assert host.host_fingerprint() == {"cpu": info["cpu"], "flags": info["isa"]}
