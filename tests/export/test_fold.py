import json

import numpy as np
import pytest
import torch

from livt.export.fold import FoldedClassifier, fit_temperature, prior_weights, resolve_prior_fold
from livt.export.source import load_source
from livt.prior import PriorError, prior_offset


@pytest.fixture(scope="module")
def source(run_dir):
    return load_source(run_dir)


@pytest.fixture(scope="module")
def model(source):
    return source.model


def test_folded_head_gives_offset_logits_over_temperature(source, model):
    offset = np.linspace(-2, 2, source.num_classes, dtype=np.float32)
    x = torch.randn(4, *source.input_shape)
    with torch.no_grad():
        z = model(x)
        logits, probs = FoldedClassifier(model, offset, temperature=1.7)(x)
    expected = (z + torch.from_numpy(offset)) / 1.7
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, expected.softmax(-1))


def test_folding_leaves_the_source_model_untouched(source, model):
    before = model.head.weight.clone()
    FoldedClassifier(model, np.ones(source.num_classes, dtype=np.float32), temperature=3.0)
    torch.testing.assert_close(model.head.weight, before)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_bad_temperature_is_rejected(source, model, temperature):
    with pytest.raises(ValueError, match="temperature"):
        FoldedClassifier(model, np.zeros(source.num_classes, dtype=np.float32), temperature)


def test_offset_of_wrong_length_is_rejected(model):
    with pytest.raises(ValueError, match="offset has shape"):
        FoldedClassifier(model, np.zeros(3, dtype=np.float32))


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(4000, 6))
    true_t = 2.5
    p = np.exp(z / true_t)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(6, p=row) for row in p])
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.1)


def test_fit_temperature_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))


def test_prior_weights_reweight_a_balanced_split_to_the_prior():
    y = np.repeat(np.arange(3), 4)
    assert prior_weights(y, None, 3) is None
    w = prior_weights(y, np.array([0.5, 0.25, 0.25]), 3)
    np.testing.assert_allclose(w[y == 0] / w[y == 1], 2.0)


def test_resolve_prior_fold_modes(tmp_path):
    counts, classes = [60, 30, 10], ["a", "b", "c"]
    balanced = resolve_prior_fold("balanced", counts, classes, "bal-bce", 1.0)
    assert balanced.mode == "balanced" and balanced.pi is None and not balanced.offset.any()
    train = resolve_prior_fold("train", counts, classes, "bal-bce", 1.0)
    np.testing.assert_allclose(
        train.offset, prior_offset(np.array([0.6, 0.3, 0.1]), "bal-bce", 1.0, 3), rtol=1e-6
    )
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"a": 1, "b": 1, "c": 2}))
    from_file = resolve_prior_fold(str(path), counts, classes, "bal-ce", 1.0)
    assert from_file.mode == "file" and from_file.source == str(path.resolve())
    np.testing.assert_allclose(from_file.offset, np.log([0.25, 0.25, 0.5]), rtol=1e-6)
    assert json.loads(json.dumps(from_file.to_dict()))["pi"] == [0.25, 0.25, 0.5]
    with pytest.raises(PriorError):
        resolve_prior_fold("nope.json", counts, classes, "bal-bce", 1.0)
