"""The request-time prior: recover the raw logits, apply another prior, and top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livt.inference.artifact import ArtifactError
from livt.inference.model import RequestPrior, ServedModel, top_k
from livt.prior import PriorError, prior_offset, resolve_prior, softmax
from livt.serving.settings import ServeSettings
from livt.serving.state import load_model

from .conftest import CLASS_COUNTS, LOSS, TAU, TEMPERATURE


@pytest.fixture(scope="module")
def model(artifact: Path) -> ServedModel:
    return load_model(ServeSettings(model=artifact))


def _mode_offset(prior: RequestPrior) -> tuple[str, np.ndarray | None]:
    return prior.mode, prior.offset


def test_model_prior_leaves_outputs_untouched(model: ServedModel):
    logits = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    probs = softmax(logits)
    mode, offset = _mode_offset(model.resolve_prior("model"))
    assert mode == "train" and offset is None
    out = model.apply_prior(logits, probs, offset)
    assert out.logits is logits and out.probabilities is probs


def test_other_priors_follow_the_contract(model: ServedModel):
    """Artifact logits are ``c + log pi_train``; another prior replaces the offset, with no T on it."""
    calibrated = np.array([[0.5, -1.0, 2.0, 0.0]], dtype=np.float32) / TEMPERATURE
    _, train_pi = resolve_prior("train", CLASS_COUNTS)
    exported = calibrated + np.log(train_pi).astype(np.float32)
    np.testing.assert_allclose(model.balanced_logits(exported), calibrated, atol=1e-6)
    _, balanced = _mode_offset(model.resolve_prior("balanced"))
    out = model.apply_prior(exported, softmax(exported), balanced)
    np.testing.assert_allclose(out.logits, calibrated, atol=1e-5)
    np.testing.assert_allclose(out.probabilities, softmax(calibrated), atol=1e-6)
    mode, train = _mode_offset(model.resolve_prior("train"))
    np.testing.assert_allclose(
        model.apply_prior(exported, softmax(exported), train).logits, exported, atol=1e-5
    )
    mode, custom = _mode_offset(model.resolve_prior([1, 1, 1, 5]))
    assert mode == "custom"
    expected = calibrated + np.log([0.125, 0.125, 0.125, 0.625])
    np.testing.assert_allclose(
        model.apply_prior(exported, softmax(exported), custom).logits, expected, atol=1e-5
    )
    # The loss rule of the same prior is another offset, and is not what this artifact uses.
    assert not np.allclose(prior_offset(train_pi, LOSS, TAU, 4, "loss"), model.prior_offset(train_pi))


def test_file_priors_are_not_accepted_from_requests(model: ServedModel, tmp_path: Path):
    prior_file = tmp_path / "p.json"
    prior_file.write_text("[1, 1, 1, 1]")
    with pytest.raises(PriorError, match="'model', 'balanced', 'train'"):
        model.resolve_prior(str(prior_file))


def test_top_k_is_sorted_and_capped():
    assert top_k(np.array([0.1, 0.6, 0.3]), 2) == [(1, 0.6), (2, 0.3)]
    assert len(top_k(np.array([0.5, 0.5]), 10)) == 2


def test_input_shape_must_match_metadata(artifact: Path, tmp_path: Path):
    import json

    import onnx

    proto = onnx.load(str(artifact))
    meta = json.loads(proto.metadata_props[0].value)
    meta["preprocess"]["img_size"] = 32
    proto.metadata_props[0].value = json.dumps(meta)
    other = tmp_path / "m.onnx"
    onnx.save(proto, str(other))
    with pytest.raises(ArtifactError, match="does not match"):
        load_model(ServeSettings(model=other))


@pytest.mark.parametrize("num_classes", [3, 5])
def test_output_width_must_match_metadata(artifact: Path, tmp_path: Path, num_classes: int):
    """Issue 10: metadata naming more or fewer classes than the model has logits is refused at start."""
    import json

    import onnx

    proto = onnx.load(str(artifact))
    meta = json.loads(proto.metadata_props[0].value)
    meta["classes"] = [f"c{i}" for i in range(num_classes)]
    meta["class_counts"] = [10] * num_classes
    meta["prior"] = {
        "mode": "balanced",
        "rule": "bayes",
        "source": None,
        "pi": None,
        "offset": [0.0] * num_classes,
    }
    proto.metadata_props[0].value = json.dumps(meta)
    other = tmp_path / "m.onnx"
    onnx.save(proto, str(other))
    with pytest.raises(ArtifactError, match=rf"4 logits .* {num_classes} classes"):
        load_model(ServeSettings(model=other))
