"""DDP on CPU (gloo) with torchrun: 2 processes (one launch, or two "nodes" through c10d), synthetic-tiny."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

from livt.training.checkpoint import load_model_weights
from livt.training.distributed import DistEnv, all_gather_cat, shard_range

from .c10d_probe import weights_digest
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a node's whole process tree (its agent and its worker), if it is still running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_two_nodes_through_the_c10d_rendezvous(tmp_path: Path):
    """Two ``torchrun --nnodes 2`` launches, as two machines would start them (README "Train").

    Not ``--standalone``: each "node" is its own process tree (its own session) with its own
    agent, and they meet only through the c10d rendezvous on a loopback port, which the agent that
    binds it first hosts, as the head node does on a cluster.
    """
    run, probes = tmp_path / "run", tmp_path / "probes"
    probes.mkdir()
    endpoint, run_id = f"127.0.0.1:{_free_port()}", f"livt-test-{os.getpid()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIVT_PROBE_DIR": str(probes)}
    probe = Path(__file__).with_name("c10d_probe.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id, "--max-restarts", "0",
           str(probe), "finetune", *TINY, "--from-scratch", "--epochs", "1", "--batch-size", "16",
           "--out", str(run)]  # fmt: skip
    logs = [tmp_path / f"node{node}.log" for node in range(2)]
    nodes = []
    try:
        for log in logs:
            with log.open("w") as out:
                nodes.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        codes = [proc.wait(timeout=240) for proc in nodes]
    finally:
        for proc in nodes:
            _stop(proc)
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]

    records = [json.loads((probes / f"rank{r}.json").read_text()) for r in range(2)]
    assert {rec["world_size"] for rec in records} == {2}
    assert sorted(rec["group_rank"] for rec in records) == [0, 1]  # one worker on each node
    assert {rec["run_id"] for rec in records} == {run_id}
    assert {rec["agent_pid"] for rec in records} == {proc.pid for proc in nodes}  # a rank from each launch
    # After the epoch both nodes hold the same weights, and they are the ones saved.
    assert records[0]["digest"] == records[1]["digest"]
    assert records[0]["digest"] == weights_digest(load_model_weights(run / "checkpoints" / "last"))

    for name in ("config.yaml", "train.log", "metrics.jsonl", "metrics.json", "plots/curves.png"):
        assert (run / name).is_file(), name
    for ckpt in ("best", "last"):
        assert (run / "checkpoints" / ckpt / "meta.json").is_file(), ckpt
    log = (run / "train.log").read_text()
    assert "effective batch 32" in log  # 16 a process on 2 processes
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes
    assert json.loads((run / "metrics.json").read_text())["num_samples"] == 200  # the whole test split
