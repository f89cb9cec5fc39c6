"""deploy/slurm/train-multinode.sbatch run as SLURM would run it on the first node, with stand-ins
for ``scontrol`` and ``srun``: the command it starts on every node is torchrun's, with the c10d
rendezvous on the allocation's first node, and both torchrun and livt-train accept its flags.

The training itself through that rendezvous is tests/training/test_distributed.py's two-node test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "train-multinode.sbatch"

# srun's stand-in writes what it was asked to run, and the environment it would run it in.
SRUN = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["SRUN_RECORD"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, f)
"""
SCONTROL = """#!/bin/sh
[ "$1 $2 $3" = "show hostnames gpu-[017-018]" ] || exit 1
printf 'gpu-017\\ngpu-018\\n'
"""


def _submit(tmp_path: Path, *args: str, **env: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "srun.json"
    slurm = {"SLURM_JOB_NODELIST": "gpu-[017-018]", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "4242",
             "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "64"}  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "OMP_NUM_THREADS"}
    full = {**base, **slurm, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_RECORD": str(record)}
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, env=full)
    assert done.returncode == 0, done.stderr
    return json.loads(record.read_text())


def test_the_job_starts_torchrun_on_every_node_through_c10d(tmp_path: Path):
    from torch.distributed.run import get_args_parser

    from livt.training.cli import build_parser

    livt_args = ["finetune", "--recipe", "synthetic-tiny", "--out", "runs/x", "--batch-size", "64"]
    started = _submit(tmp_path, *livt_args)
    argv = started["argv"]
    assert argv[0] == "--kill-on-bad-exit=1"
    assert argv[1:4] == ["python", "-m", "torch.distributed.run"]
    run = get_args_parser().parse_args(argv[4:])  # torchrun's own parser: a misspelt flag fails here
    assert (run.nnodes, run.nproc_per_node) == ("2", "8")
    assert run.rdzv_backend == "c10d" and not run.standalone
    assert run.rdzv_endpoint == f"gpu-017:{20000 + 4242 % 20000}"  # the first node, a port per job
    assert run.rdzv_id == "4242" and run.max_restarts == 0
    assert run.module and run.training_script == "livt.training.cli"
    assert run.training_script_args == livt_args  # passed on untouched
    build_parser().parse_args(run.training_script_args)
    assert started["env"]["OMP_NUM_THREADS"] == "8"  # 64 CPUs of the task over 8 processes


def test_port_and_threads_can_be_chosen(tmp_path: Path):
    started = _submit(
        tmp_path, "pretrain", LIVT_RDZV_PORT="29400", OMP_NUM_THREADS="3", SLURM_GPUS_ON_NODE="1"
    )
    argv = started["argv"]
    assert argv[argv.index("--rdzv-endpoint") + 1] == "gpu-017:29400"
    assert argv[argv.index("--nproc-per-node") + 1] == "1"
    assert started["env"]["OMP_NUM_THREADS"] == "3"


def test_the_job_header_asks_one_task_per_node():
    """One torchrun agent per node: it starts the node's processes itself."""
    header = [
        line.split(None, 1)[1] for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")
    ]
    assert "--ntasks-per-node=1" in header
    assert any(option.startswith("--nodes=") for option in header)
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
