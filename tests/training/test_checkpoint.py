import random

import numpy as np
import pytest
import torch

from livt.training.checkpoint import (
    CheckpointError,
    atomic_write,
    capture_rng_state,
    find_checkpoint,
    load_checkpoint_meta,
    restore_rng_state,
    save_checkpoint,
)


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.bin"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"old"))

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_checkpoint_round_trip_and_lookup(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "checkpoints" / "last", model, {"stage": "finetune"}, {"epoch": 1})
    ckpt = find_checkpoint(tmp_path, "best")  # falls back to last
    assert ckpt.name == "last" and load_checkpoint_meta(ckpt) == {"stage": "finetune"}
    assert torch.load(ckpt / "state.pt", weights_only=True) == {"epoch": 1}
    with pytest.raises(CheckpointError, match="no 'best' checkpoint"):
        find_checkpoint(tmp_path / "checkpoints", "best")


def test_checkpoint_is_replaced_as_a_whole(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last"
    save_checkpoint(ckpt, torch.nn.Linear(3, 2), {"step": 1}, {"step": 1})
    save_checkpoint(ckpt, torch.nn.Linear(3, 2), {"step": 2}, {"step": 2})
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last"]  # no staging folder left
    assert load_checkpoint_meta(ckpt) == {"step": 2} == torch.load(ckpt / "state.pt", weights_only=True)


@pytest.mark.parametrize("left", ["staged", "retired"])
def test_a_swap_killed_between_renames_is_recovered(tmp_path, left):
    ckpt = tmp_path / "checkpoints" / "last"
    save_checkpoint(ckpt, torch.nn.Linear(3, 2), {"step": 1}, {"step": 1})
    # The state of a run killed after "last" was moved aside, before the new folder took its place.
    if left == "staged":
        save_checkpoint(ckpt, torch.nn.Linear(3, 2), {"step": 2}, {"step": 2})
        ckpt.rename(ckpt.parent / ".last.new")
        expected = 2
    else:
        ckpt.rename(ckpt.parent / ".last.old")
        expected = 1
    found = find_checkpoint(tmp_path, "last")
    assert found == ckpt and load_checkpoint_meta(found) == {"step": expected}
    assert torch.load(found / "state.pt", weights_only=True) == {"step": expected}


def test_rng_state_round_trip_survives_weights_only_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
