import numpy as np
import pytest

from livt.data.longtail import (
    holdout_split,
    longtail_counts,
    longtail_indices,
    longtail_subset,
)


def test_exp_counts_fashion_mnist_if100():
    counts = longtail_counts(6000, 10, 100)
    assert counts == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert sum(counts) == 14_886


@pytest.mark.parametrize(
    ("n_max", "num_classes", "imbalance_factor", "total"),
    [
        # The published CIFAR-10-LT / CIFAR-100-LT training set sizes.
        (5000, 10, 10, 20_431),
        (5000, 10, 50, 13_996),
        (5000, 10, 100, 12_406),
        (500, 100, 10, 19_573),
        (500, 100, 50, 12_608),
        (500, 100, 100, 10_847),
    ],
)
def test_exp_counts_match_published_cifar_lt_sizes(n_max, num_classes, imbalance_factor, total):
    assert sum(longtail_counts(n_max, num_classes, imbalance_factor)) == total


def test_exp_counts_tail_is_exactly_n_max_over_if():
    # floor(n_max / IF) without a float64 rounding-down at the tail class
    for imbalance_factor in (2, 10, 50, 100, 200):
        for n_max in range(1, 3000, 7):
            counts = longtail_counts(n_max, 10, imbalance_factor)
            assert counts[0] == n_max
            assert counts[-1] == n_max // imbalance_factor


def test_counts_without_imbalance_and_single_class():
    assert longtail_counts(50, 4, 1) == [50] * 4
    assert longtail_counts(50, 1, 10) == [50]


def test_step_profile():
    assert longtail_counts(100, 10, 10, "step") == [100] * 5 + [10] * 5
    assert longtail_counts(100, 5, 4, "step") == [100, 100, 25, 25, 25]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"imbalance_factor": 0.5}, "imbalance_factor must be >= 1"),
        ({"profile": "linear"}, "valid profiles: exp, step"),
        ({"n_max": 0}, "n_max"),
    ],
)
def test_counts_reject_bad_arguments(kwargs, message):
    args = {"n_max": 100, "num_classes": 10, "imbalance_factor": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        longtail_counts(**args)


def _balanced_targets(num_classes=5, per_class=40):
    return np.random.RandomState(123).permutation(np.repeat(np.arange(num_classes), per_class))


def test_indices_follow_the_contract_rule():
    targets = _balanced_targets()
    counts = [40, 20, 10, 5, 2]
    kept = longtail_indices(targets, counts, seed=7)
    rng = np.random.RandomState(7)
    expected = np.concatenate(
        [rng.permutation(np.flatnonzero(targets == c))[:n] for c, n in enumerate(counts)]
    )
    assert np.array_equal(kept, np.sort(expected))
    assert np.bincount(targets[kept], minlength=5).tolist() == counts


def test_indices_deterministic_per_seed_and_differ_across_seeds():
    targets = _balanced_targets()
    counts = [30, 20, 10, 5, 2]
    a, b = longtail_indices(targets, counts, 0), longtail_indices(targets, counts, 0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, longtail_indices(targets, counts, 1))


def test_indices_reject_impossible_counts():
    with pytest.raises(ValueError, match="class 1 has 40 images, cannot keep 41"):
        longtail_indices(_balanced_targets(), [1, 41, 1, 1, 1], 0)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\)"):
        longtail_indices([0, 1, 2], [1, 1], 0)


def test_subset_keeps_all_of_a_class_smaller_than_its_profile_count():
    targets = np.array([0] * 10 + [1] * 3 + [2] * 10)
    kept = longtail_subset(targets, 3, imbalance_factor=2, seed=0)
    # profile for n_max=10, IF=2: [10, 7, 5]; class 1 has only 3
    assert np.bincount(targets[kept]).tolist() == [10, 3, 5]


def test_holdout_is_balanced_disjoint_and_tops_up_exhausted_classes_from_train():
    targets = _balanced_targets()
    keep = longtail_subset(targets, 5, imbalance_factor=10, seed=0)  # keeps all 40 of class 0
    before = np.bincount(targets[keep], minlength=5)
    train, val = holdout_split(targets, 5, keep, per_class=6, seed=0)
    assert not set(val) & set(train)
    assert set(train) <= set(keep)
    assert np.bincount(targets[val], minlength=5).tolist() == [6] * 5
    # only the exhausted head class gives images; the tail is untouched
    assert (before - np.bincount(targets[train], minlength=5)).tolist() == [6, 0, 0, 0, 0]
    again = holdout_split(targets, 5, keep, per_class=6, seed=0)
    assert np.array_equal(val, again[1]) and np.array_equal(train, again[0])
    assert not np.array_equal(val, holdout_split(targets, 5, keep, per_class=6, seed=1)[1])


def test_holdout_refuses_to_empty_a_class():
    targets = np.array([0] * 3 + [1] * 10)
    with pytest.raises(ValueError, match="class 0 has 3 training images"):
        holdout_split(targets, 2, np.arange(13), per_class=3)
