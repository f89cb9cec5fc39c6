import json

import numpy as np
import pytest
import torch

from livt.export.calibration import Calibration
from livt.export.fold import FoldedClassifier, resolve_prior_fold
from livt.export.source import load_source
from livt.prior import PriorError, prior_offset


@pytest.fixture(scope="module")
def source(run_dir):
    return load_source(run_dir)


@pytest.fixture(scope="module")
def model(source):
    return source.model


def test_folded_head_gives_calibrated_logits_plus_offset(source, model):
    """``scale * z + bias + offset``: the offset is added after calibration, never divided by T."""
    k = source.num_classes
    offset = np.linspace(-2, 2, k, dtype=np.float32)
    calibration = Calibration("bcts", np.full(k, 1 / 1.7), np.linspace(0.5, -0.5, k))
    x = torch.randn(4, *source.input_shape)
    with torch.no_grad():
        z = model(x)
        logits, probs = FoldedClassifier(model, offset, calibration)(x)
    expected = z / 1.7 + torch.from_numpy(calibration.bias).float() + torch.from_numpy(offset)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, expected.softmax(-1))


def test_folding_leaves_the_source_model_untouched(source, model):
    before = model.head.weight.clone()
    k = source.num_classes
    FoldedClassifier(
        model, np.ones(k, dtype=np.float32), Calibration("temperature", np.full(k, 1 / 3), np.zeros(k))
    )
    torch.testing.assert_close(model.head.weight, before)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_bad_calibration_scale_is_rejected(source, model, scale):
    k = source.num_classes
    with pytest.raises(ValueError, match="scale"):
        FoldedClassifier(
            model, np.zeros(k, dtype=np.float32), Calibration("vector", np.full(k, scale), np.zeros(k))
        )


def test_offset_of_wrong_length_is_rejected(model):
    with pytest.raises(ValueError, match="offset has shape"):
        FoldedClassifier(model, np.zeros(3, dtype=np.float32))


def test_resolve_prior_fold_modes(tmp_path):
    counts, classes = [60, 30, 10], ["a", "b", "c"]
    balanced = resolve_prior_fold("balanced", counts, classes, "bal-bce", 1.0)
    assert balanced.mode == "balanced" and balanced.pi is None and not balanced.offset.any()
    train = resolve_prior_fold("train", counts, classes, "bal-bce", 1.0)
    assert train.rule == "bayes" and train.to_dict()["rule"] == "bayes"
    np.testing.assert_allclose(train.offset, np.log([0.6, 0.3, 0.1]), rtol=1e-6)
    loss_rule = resolve_prior_fold("train", counts, classes, "bal-bce", 0.5, rule="loss")
    np.testing.assert_allclose(
        loss_rule.offset, prior_offset(np.array([0.6, 0.3, 0.1]), "bal-bce", 0.5, 3, "loss"), rtol=1e-6
    )
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"a": 1, "b": 1, "c": 2}))
    from_file = resolve_prior_fold(str(path), counts, classes, "bal-ce", 1.0)
    assert from_file.mode == "file" and from_file.source == str(path.resolve())
    np.testing.assert_allclose(from_file.offset, np.log([0.25, 0.25, 0.5]), rtol=1e-6)
    assert json.loads(json.dumps(from_file.to_dict()))["pi"] == [0.25, 0.25, 0.5]
    with pytest.raises(PriorError):
        resolve_prior_fold("nope.json", counts, classes, "bal-bce", 1.0)
