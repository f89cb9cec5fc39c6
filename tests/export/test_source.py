import json

import numpy as np
import pytest

from livt.export.errors import ExportError
from livt.export.source import iter_batches, load_source, load_subset, open_split


def test_load_source_gives_an_eval_model_and_the_weights_hash(run_dir):
    source = load_source(run_dir)
    assert not source.model.training
    assert source.ckpt_dir.name == "best" and len(source.weights_sha256) == 64
    assert source.input_shape == (3, 32, 32) and source.num_classes == 10
    assert "balanced_acc" in source.run_metrics


def test_load_subset_limit_spreads_over_classes(run_dir):
    val = open_split(load_source(run_dir), "val")
    x, y = load_subset(val, 20)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32
    assert set(y.tolist()) == set(range(10))  # class-sorted split, evenly spaced picks


def test_iter_batches_streams_the_split_in_order(run_dir):
    val = open_split(load_source(run_dir), "val")
    batches = list(iter_batches(val, batch_size=64))
    assert all(len(x) <= 64 and x.dtype == np.float32 for x, _ in batches)
    assert np.concatenate([y for _, y in batches]).tolist() == val.targets
    x0, _ = val[0]
    np.testing.assert_array_equal(batches[0][0][0], x0.numpy())


def test_incomplete_meta_is_refused(run_dir, tmp_path):
    import shutil

    shutil.copytree(run_dir / "checkpoints", tmp_path / "checkpoints")
    meta_path = tmp_path / "checkpoints" / "best" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["preprocess"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="lacks"):
        load_source(tmp_path)


def test_unreadable_data_is_an_export_error(run_dir):
    source = load_source(run_dir)
    source.meta = {**source.meta, "dataset": {"name": "synthetic", "options": {"channels": 2}}}
    with pytest.raises(ExportError, match="cannot read"):
        open_split(source, "val")


def _copied_run(run_dir, tmp_path):
    import shutil

    shutil.copytree(run_dir / "checkpoints", tmp_path / "checkpoints")
    shutil.copy(run_dir / "metrics.json", tmp_path / "metrics.json")
    return tmp_path


@pytest.mark.parametrize("broken", ["model-config", "weights", "metrics-json"])
def test_unloadable_run_files_are_export_errors(run_dir, tmp_path, broken):
    run = _copied_run(run_dir, tmp_path)
    best = run / "checkpoints" / "best"
    if broken == "model-config":
        meta = json.loads((best / "meta.json").read_text())
        meta["model"]["depht"] = 3  # a typo'd key
        (best / "meta.json").write_text(json.dumps(meta))
        needle = "invalid model config"
    elif broken == "weights":
        (best / "model.safetensors").write_bytes(b"not safetensors at all")
        needle = "model.safetensors has 22 bytes"
    else:
        (run / "metrics.json").write_text('{"top1": 0.5,')
        needle = "not readable JSON"
    with pytest.raises(ExportError, match=needle):
        load_source(run)


def test_damaged_weights_are_refused_naming_the_file_and_the_other_checkpoint(run_dir, tmp_path):
    run = _copied_run(run_dir, tmp_path)
    weights = run / "checkpoints" / "best" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))  # still loads
    with pytest.raises(ExportError) as info:
        load_source(run)
    message = str(info.value)
    assert "\n" not in message and str(weights) in message and "sha256" in message
    assert "checkpoints/last (epoch" in message and "--checkpoint last" in message
    assert load_source(run, "last").ckpt_dir.name == "last"


def test_the_source_hash_is_the_one_the_checkpoint_records(run_dir):
    source = load_source(run_dir)
    assert source.weights_sha256 == source.meta["files"]["model.safetensors"]["sha256"]
