import json
import random

import numpy as np
import pytest
import torch

from livt.artifact import sha256_file
from livt.files import atomic_write
from livt.training.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    capture_rng_state,
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
    load_training_state,
    recorded_sha256,
    restore_rng_state,
    save_checkpoint,
)

from .conftest import damage


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
    assert ckpt.name == "last" and load_checkpoint_meta(ckpt)["stage"] == "finetune"
    assert torch.load(ckpt / "state.pt", weights_only=True) == {"epoch": 1}
    with pytest.raises(CheckpointError, match="no 'best' checkpoint"):
        find_checkpoint(tmp_path / "checkpoints", "best")


def test_checkpoint_is_replaced_as_a_whole(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last"
    save_checkpoint(ckpt, torch.nn.Linear(3, 2), {"step": 1}, {"step": 1})
    save_checkpoint(ckpt, torch.nn.Linear(3, 2), {"step": 2}, {"step": 2})
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last"]  # no staging folder left
    assert load_checkpoint_meta(ckpt)["step"] == 2
    assert torch.load(ckpt / "state.pt", weights_only=True) == {"step": 2}


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
    assert found == ckpt and load_checkpoint_meta(found)["step"] == expected
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


def _run_checkpoints(run):
    """A run folder's ``checkpoints/best`` (epoch 0, weights only) and ``checkpoints/last`` (epoch 1)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)  # big enough that zeroing half the weights file spares its header
    save_checkpoint(run / "checkpoints" / "best", model, {"epoch": 0})
    save_checkpoint(run / "checkpoints" / "last", model, {"epoch": 1}, {"epoch": 1, "step": 9})
    return model, run / "checkpoints" / "best", run / "checkpoints" / "last"


def test_meta_records_the_sha256_and_size_of_each_file(tmp_path):
    _model, best, last = _run_checkpoints(tmp_path)
    for ckpt, names in ((best, [WEIGHTS_FILE]), (last, [WEIGHTS_FILE, STATE_FILE])):
        assert load_checkpoint_meta(ckpt)["files"] == {
            name: {"sha256": sha256_file(ckpt / name), "size": (ckpt / name).stat().st_size} for name in names
        }


def test_verified_checkpoint_loads(tmp_path):
    model, best, last = _run_checkpoints(tmp_path)
    assert torch.equal(load_model_weights(best)["weight"], model.weight)
    assert load_training_state(last) == {"epoch": 1, "step": 9}


@pytest.mark.parametrize("how", ["zeroed", "truncated"])
@pytest.mark.parametrize("name", [WEIGHTS_FILE, STATE_FILE])
def test_a_damaged_file_is_refused_in_one_line_that_names_it(tmp_path, name, how):
    _model, _best, last = _run_checkpoints(tmp_path)
    damage(last / name, how)
    load = load_model_weights if name == WEIGHTS_FILE else load_training_state
    with pytest.raises(CheckpointError) as info:
        load(last)
    message = str(info.value)
    assert "\n" not in message and str(last / name) in message
    # best is intact but holds only weights: it can be evaluated or exported, not resumed
    assert "checkpoints/best (epoch 0) is intact but holds no resume state" in message


def test_the_hint_names_an_intact_checkpoint_or_says_there_is_none(tmp_path):
    _model, best, last = _run_checkpoints(tmp_path)
    damage(best / WEIGHTS_FILE, "zeroed")
    with pytest.raises(CheckpointError, match=r"checkpoints/last \(epoch 1\) is intact: use it instead"):
        load_model_weights(best)
    damage(last / WEIGHTS_FILE, "truncated")
    with pytest.raises(CheckpointError, match="no other checkpoint of this run is intact"):
        load_model_weights(best)


def test_a_file_the_meta_does_not_record_is_refused(tmp_path):
    _model, best, _last = _run_checkpoints(tmp_path)
    torch.save({"epoch": 0}, best / STATE_FILE)
    with pytest.raises(CheckpointError, match="not part of this checkpoint"):
        load_training_state(best)


def _drop_checksums(ckpt):
    meta = load_checkpoint_meta(ckpt)
    del meta["files"]
    (ckpt / "meta.json").write_text(json.dumps(meta))


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(tmp_path, caplog):
    model, _best, last = _run_checkpoints(tmp_path)
    _drop_checksums(last)
    assert torch.equal(load_model_weights(last)["weight"], model.weight)
    assert load_training_state(last)["step"] == 9
    assert f"{last} records no checksums" in caplog.text and "unverified" in caplog.text
    assert recorded_sha256(last) == sha256_file(last / WEIGHTS_FILE)  # export's source hash: computed


@pytest.mark.parametrize("name", [WEIGHTS_FILE, STATE_FILE])
def test_an_unreadable_file_of_an_old_checkpoint_is_one_line_too(tmp_path, name):
    _model, _best, last = _run_checkpoints(tmp_path)
    _drop_checksums(last)
    damage(last / name, "truncated")
    load = load_model_weights if name == WEIGHTS_FILE else load_training_state
    with pytest.raises(CheckpointError, match="cannot be read") as info:
        load(last)
    assert "\n" not in str(info.value) and str(last / name) in str(info.value)


@pytest.mark.parametrize("content", [b"\xff\xfe not text", b"[1, 2]"])
def test_an_unreadable_meta_is_a_checkpoint_error(tmp_path, content):
    _model, best, _last = _run_checkpoints(tmp_path)
    (best / "meta.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"meta\.json"):
        load_checkpoint_meta(best)


def test_outputs_are_readable_by_the_group(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    save_checkpoint(tmp_path / "ckpt", torch.nn.Linear(3, 2), {"stage": "finetune"}, {"epoch": 0})
    for name in ("meta.json", WEIGHTS_FILE, STATE_FILE):
        assert (tmp_path / "ckpt" / name).stat().st_mode & 0o777 == 0o666 & ~umask  # 0644, not mkstemp's 0600


def test_load_classifier_is_the_one_way_to_a_trained_model(finetune_run, pretrain_run, tmp_path, caplog):
    import shutil

    from livt.training.checkpoint import load_classifier, recorded_thresholds

    model, ckpt, meta = load_classifier(finetune_run)
    assert not model.training and ckpt.name == "best" and meta["stage"] == "finetune"
    assert recorded_thresholds(meta) == (60, 20)  # synthetic-tiny's groups, in meta.json
    assert load_classifier(finetune_run, "last").ckpt_dir.name == "last"
    with pytest.raises(CheckpointError, match="'pretrain' checkpoint, not a fine-tuned classifier"):
        load_classifier(pretrain_run)
    run = tmp_path / "run"
    shutil.copytree(finetune_run / "checkpoints", run / "checkpoints")
    meta_path = run / "checkpoints" / "best" / "meta.json"
    meta["model"]["embed_dim"] = 64  # weights of another model than meta.json says
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot load the weights"):
        load_classifier(run)
    old = {k: v for k, v in meta.items() if k not in ("many_threshold", "few_threshold")}
    with caplog.at_level("WARNING"):
        assert recorded_thresholds(old) == (100, 20)
    assert "records no Many/Few thresholds" in caplog.text
