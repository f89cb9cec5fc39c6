import json

import numpy as np
import pytest

from livt.export.errors import ExportError
from livt.export.source import load_source, load_split


def test_load_source_gives_an_eval_model_and_the_weights_hash(run_dir):
    source = load_source(run_dir)
    assert not source.model.training
    assert source.ckpt_dir.name == "best" and len(source.weights_sha256) == 64
    assert source.input_shape == (3, 32, 32) and source.num_classes == 10
    assert "balanced_acc" in source.run_metrics


def test_load_split_limit_spreads_over_classes(run_dir):
    source = load_source(run_dir)
    x, y = load_split(source, "val", limit=20)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32
    assert set(y.tolist()) == set(range(10))  # class-sorted split, evenly spaced picks


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
        load_split(source, "val")
