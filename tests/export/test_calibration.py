"""Calibrators fitted on balanced logits: they recover known parameters and match abstention's fits."""

import numpy as np
import pytest

from livt.export.calibration import CALIBRATORS, Calibration, fit_calibration, select_calibration


def _draw(rng, z, scale, bias):
    """Labels drawn from softmax(scale * z + bias), so the generating calibrator is known."""
    c = z * scale + bias
    p = np.exp(c - c.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)


@pytest.fixture(scope="module")
def biased():
    """Logits whose labels follow softmax(z / 2.5 + b): over-confident and per-class biased."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, size=(6000, 5))
    bias = np.array([0.8, 0.3, 0.0, -0.4, -0.7])
    return z, _draw(rng, z, 1 / 2.5, bias), bias


def test_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(4000, 6))
    y = _draw(rng, z, 1 / 2.5, 0.0)
    cal = fit_calibration(z, y, "temperature")
    assert cal.temperature == pytest.approx(2.5, rel=0.08)
    assert not cal.bias.any()


def test_bcts_recovers_temperature_and_centred_biases(biased):
    z, y, bias = biased
    cal = fit_calibration(z, y, "bcts")
    assert cal.temperature == pytest.approx(2.5, rel=0.08)
    np.testing.assert_allclose(cal.bias, bias - bias.mean(), atol=0.12)


def test_vector_scaling_has_one_positive_scale_per_class(biased):
    z, y, _ = biased
    cal = fit_calibration(z, y, "vector")
    assert cal.temperature is None and (cal.scale > 0).all() and len(set(cal.scale.round(6))) == 5


def test_selection_prefers_bcts_on_biased_logits_and_refits_on_all(biased):
    z, y, _ = biased
    choice = select_calibration(z, y)
    assert set(choice.scores) == {"none", *CALIBRATORS}
    assert choice.scores["none"]["nll"] > choice.scores["temperature"]["nll"] > choice.scores["bcts"]["nll"]
    assert choice.calibration.method in ("bcts", "vector")
    refit = fit_calibration(z, y, choice.calibration.method)
    np.testing.assert_allclose(choice.calibration.scale, refit.scale)


def test_selection_keeps_no_calibration_when_the_logits_are_calibrated():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, size=(3000, 4))
    choice = select_calibration(z, _draw(rng, z, 1.0, 0.0), ("temperature",))
    # A calibrated model: the fitted temperature is near 1 and held-out NLL barely moves.
    assert abs(choice.scores["temperature"]["nll"] - choice.scores["none"]["nll"]) < 0.01
    assert choice.candidates["temperature"].temperature == pytest.approx(1.0, abs=0.1)


def test_identity_and_apply():
    cal = Calibration.identity(3)
    z = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(cal.apply(z), z)
    assert cal.to_dict() == {"method": "none", "temperature": 1.0, "scale": [1.0] * 3, "bias": [0.0] * 3}


@pytest.mark.parametrize("bad", ["platt", ""])
def test_unknown_method_is_refused(bad):
    with pytest.raises(ValueError, match="calibration must be one of"):
        fit_calibration(np.zeros((4, 2)), np.array([0, 1, 0, 1]), bad)


def test_mismatched_shapes_and_non_finite_logits_are_refused():
    with pytest.raises(ValueError, match="logits"):
        fit_calibration(np.zeros((3, 2)), np.zeros(4, dtype=int), "temperature")
    with pytest.raises(ValueError, match="finite"):
        fit_calibration(np.full((2, 2), np.inf), np.array([0, 1]), "temperature")


def test_bcts_and_vector_scaling_match_abstention(biased):
    """The reference implementation of Alexandari et al. (2020), through QuaPy's dependency."""
    calibration = pytest.importorskip("abstention.calibration")
    z, y, _ = biased
    onehot = np.eye(5)[y]
    for method, theirs in (
        ("bcts", calibration.TempScaling(bias_positions="all", verbose=False)),
        ("vector", calibration.VectorScaling(verbose=False)),
    ):
        fn = theirs(valid_preacts=z, valid_labels=onehot)
        mine = fit_calibration(z, y, method).apply(z)
        p_mine = np.exp(mine - mine.max(1, keepdims=True))
        p_mine /= p_mine.sum(1, keepdims=True)
        np.testing.assert_allclose(p_mine, fn(z), atol=2e-3)


def test_a_separable_split_gives_a_finite_fit_and_selection_avoids_it():
    """Twelve images that per-class biases separate: the plain NLL has no finite minimum."""
    z = np.tile(np.eye(3) * 0.1, (4, 1))
    y = np.tile(np.arange(3), 4)
    cal = fit_calibration(z, y, "bcts")
    assert np.isfinite(cal.bias).all() and np.abs(cal.bias).max() < 10 and cal.scale[0] < 20
