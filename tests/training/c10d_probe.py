"""``livt-train`` under torchrun, recording what each rank holds: the worker of the two-node test.

Rank 1 writes nothing of its own (rank 0 alone writes the run folder), so whether the two
"machines" really trained one model together cannot be read from the run folder alone. This
wraps ``Run.save_last`` (``livt.training.stage``: a collective every rank calls at the end of each epoch) to write, per rank,
where the rendezvous put it and a digest of the weights it holds right after the save, to
``$LIVT_PROBE_DIR/rank<RANK>.json``. Then it runs the real CLI.

    torchrun ... tests/training/c10d_probe.py finetune --recipe synthetic-tiny ...
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from livt.training.cli import main
from livt.training.stage import Run


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and exact bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _recording(save_last):
    def wrapped(run: Run, meta: dict, epoch: int) -> None:
        save_last(run, meta, epoch)
        record = {
            "rank": run.env.rank,
            "world_size": run.env.world_size,
            "epoch": epoch,
            "digest": weights_digest(run.model.state_dict()),
            # Set by the torchrun agent from the rendezvous: which node this is and which run it joined.
            "group_rank": int(os.environ["GROUP_RANK"]),
            "run_id": os.environ["TORCHELASTIC_RUN_ID"],
            "agent_pid": os.getppid(),  # the torchrun that started this worker: which launch
        }
        path = Path(os.environ["LIVT_PROBE_DIR"]) / f"rank{run.env.rank}.json"
        path.write_text(json.dumps(record))

    return wrapped


if __name__ == "__main__":
    Run.save_last = _recording(Run.save_last)
    sys.exit(main(sys.argv[1:]))
