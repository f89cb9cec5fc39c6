"""EM label-shift estimation: recovers known priors, matches reference implementations, torch-free."""

import subprocess
import sys

import numpy as np
import pytest

from livt.label_shift import bbse_prior, em_prior, estimate_prior, total_variation

K = 6


def _posteriors(rng, pi, n):
    """Balanced posteriors of n images whose labels follow ``pi``: the exact Bayes posterior of a
    Gaussian mixture with equal class priors, so EM's model holds."""
    means = np.eye(K) * 2.5
    y = rng.choice(K, size=n, p=pi)
    x = means[y] + rng.normal(size=(n, K))
    logits = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    q = np.exp(logits - logits.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True), y


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import livt.label_shift; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("pi", [np.full(K, 1 / K), np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])])
def test_em_recovers_a_known_prior(pi):
    q, _ = _posteriors(np.random.default_rng(0), pi, 20_000)
    estimate, iterations, converged = em_prior(q)
    assert converged and iterations > 1
    assert total_variation(estimate, pi) < 0.02


def test_estimate_has_a_spread_that_shrinks_with_more_images():
    pi = np.array([0.4, 0.3, 0.1, 0.1, 0.05, 0.05])
    rng = np.random.default_rng(1)
    small = estimate_prior(_posteriors(rng, pi, 300)[0], bootstrap=30)
    large = estimate_prior(_posteriors(rng, pi, 5000)[0], bootstrap=30)
    assert small.images == 300 and large.images == 5000
    assert (large.std < small.std).all()
    assert np.isclose(large.pi.sum(), 1.0) and total_variation(large.pi, pi) < 0.04


def test_no_spread_is_reported_where_none_can_be_measured():
    q, _ = _posteriors(np.random.default_rng(3), np.full(K, 1.0 / K), 40)
    # Every resample of one image is that image: a spread of 0 would read as certainty.
    assert estimate_prior(q[:1], bootstrap=20).std is None
    assert estimate_prior(q, bootstrap=0).std is None
    assert estimate_prior(q, bootstrap=1).std is None
    assert (estimate_prior(q[:2], bootstrap=20).std >= 0).all()


def test_warm_start_converges_to_the_same_prior_faster():
    q, _ = _posteriors(np.random.default_rng(2), np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1]), 4000)
    cold, cold_steps, _ = em_prior(q)
    warm, warm_steps, _ = em_prior(q, init=cold)
    np.testing.assert_allclose(warm, cold, atol=1e-5)
    assert warm_steps < cold_steps


def test_bbse_recovers_a_known_prior():
    rng = np.random.default_rng(3)
    source, source_y = _posteriors(rng, np.full(K, 1 / K), 20_000)
    pi = np.array([0.05, 0.05, 0.1, 0.2, 0.25, 0.35])
    target, _ = _posteriors(rng, pi, 20_000)
    assert total_variation(bbse_prior(source, source_y, target), pi) < 0.03


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.array([[0.5, 0.6]]), np.array([[np.nan, 1.0]])])
def test_bad_posteriors_are_refused(bad):
    with pytest.raises(ValueError, match="posteriors"):
        em_prior(bad)


def test_em_matches_quapy_and_abstention():
    """QuaPy's EMQ and abstention's EM adapter (the Alexandari et al. 2020 reference) on the same data."""
    label_shift = pytest.importorskip("abstention.label_shift")
    aggregative = pytest.importorskip("quapy.method.aggregative")
    pi = np.array([0.45, 0.25, 0.1, 0.1, 0.05, 0.05])
    q, _ = _posteriors(np.random.default_rng(4), pi, 5000)
    mine = em_prior(q, pseudo_count=0, tol=1e-10)[0]
    uniform = np.full(K, 1 / K)
    theirs = aggregative.EMQ.EM(uniform, q, epsilon=1e-10)[0]
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    # abstention takes the source prior from labels (here: a balanced one-hot set) and returns the
    # re-weighted posteriors, whose mean is the estimated prior at EM's fixed point.
    balanced = np.eye(K)[np.arange(60) % K]
    adapter = label_shift.EMImbalanceAdapter(
        estimate_priors_from_valid_labels=True, tolerance=1e-10, max_iterations=100_000
    )
    shifted = adapter(tofit_initial_posterior_probs=q, valid_posterior_probs=balanced, valid_labels=balanced)
    np.testing.assert_allclose(shifted(q).mean(0), mine, atol=1e-5)


def test_pseudo_counts_keep_every_class_possible():
    """A class EM cannot tell from another must not get a prior of exactly zero."""
    # Class 0's images look like class 1's a little, never the other way round: plain EM gives
    # class 1 everything (the likelihood keeps rising as pi_0 falls to zero).
    q = np.array([[0.6, 0.4, 0.0]] * 50 + [[0.0, 1.0, 0.0]] * 50 + [[0.0, 0.0, 1.0]] * 50)
    assert em_prior(q, pseudo_count=0)[0][0] < 1e-3
    smoothed = em_prior(q)[0]
    assert smoothed.min() >= 1.0 / (150 + 3)
    with pytest.raises(ValueError, match="pseudo_count"):
        em_prior(q, pseudo_count=-1)
