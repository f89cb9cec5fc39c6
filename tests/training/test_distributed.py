"""DDP on CPU (gloo) with torchrun: 2 processes, synthetic-tiny, gathered metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from livt.training.distributed import DistEnv, all_gather_cat, shard_range

from .conftest import TINY


def test_shards_cover_the_data_in_order():
    ranks = [DistEnv(rank=r, world_size=3, local_rank=r, device=torch.device("cpu")) for r in range(3)]
    assert [i for env in ranks for i in shard_range(10, env)] == list(range(10))
    assert [len(shard_range(2, env)) for env in ranks] == [1, 1, 0]
    single = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    x = torch.arange(6).view(3, 2)
    assert all_gather_cat(x, single) is x


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "livt.training.cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def test_torchrun_two_processes_on_cpu(tmp_path: Path, finetune_run: Path):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    result = _torchrun("pretrain", *TINY, "--epochs", "1", "--batch-size", "16", "--out", str(pre))
    assert result.returncode == 0, result.stderr[-3000:]
    log = (pre / "train.log").read_text()
    assert "effective batch 32" in log and log.count("epoch 1/1") == 1  # rank 0 alone writes

    result = _torchrun(
        "finetune", *TINY, "--epochs", "2", "--batch-size", "16", "--init", str(pre), "--out", str(ft)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((ft / "metrics.json").read_text())
    assert metrics["num_samples"] == 200  # the whole test split once: shards gathered, no padding
    assert metrics["val"]["balanced_acc"] is not None

    # evaluation gathered over 2 ranks equals the 1-process evaluation, image by image
    result = _torchrun(
        "evaluate", "--run-dir", str(finetune_run), "--out", str(tmp_path / "ev"), "--workers", "0", "--quiet"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = finetune_run.parent / "single-eval"
    subprocess.run([sys.executable, "-m", "livt.training.cli", "evaluate", "--run", str(finetune_run), "--out",
                    str(single), "--workers", "0", "--quiet"], check=True, capture_output=True, timeout=120)  # fmt: skip
    two = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    one = [json.loads(line) for line in (single / "predictions.jsonl").read_text().splitlines()]
    assert [p["target"] for p in two] == [p["target"] for p in one]
    assert [p["pred"] for p in two] == [p["pred"] for p in one]
