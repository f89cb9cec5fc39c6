import math

import numpy as np
import pytest
import torch

from livt.metrics import (
    class_groups,
    compute_metrics,
    expected_calibration_error,
    reliability_bins,
    tail_accuracy,
)

# Six samples, three classes. Probabilities are chosen so that no confidence lies on a bin edge
# for 5 or 15 bins; logits are their logs shifted by a per-row constant (softmax ignores it).
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # y=0, correct, conf 0.90
        [0.62, 0.28, 0.10],  # y=0, correct, conf 0.62
        [0.20, 0.70, 0.10],  # y=0, wrong (1), conf 0.70
        [0.15, 0.75, 0.10],  # y=1, correct, conf 0.75
        [0.50, 0.30, 0.20],  # y=2, wrong (0), conf 0.50
        [0.25, 0.30, 0.45],  # y=2, correct, conf 0.45
    ]
)
TARGETS = np.array([0, 0, 0, 1, 2, 2])
LOGITS = np.log(PROBS) + np.arange(6)[:, None]
TRAIN_COUNTS = [200, 50, 5]  # many, medium, few


def test_hand_made_three_class_case():
    m = compute_metrics(LOGITS, TARGETS, TRAIN_COUNTS)
    assert m["num_samples"] == 6
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["per_class"] == pytest.approx([2 / 3, 1.0, 0.5])
    assert m["balanced_acc"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert (m["many"], m["medium"], m["few"]) == pytest.approx((2 / 3, 1.0, 0.5))
    assert m["top5"] == 1.0  # top-min(5, 3): every target is in the top 3
    assert m["confusion"] == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    nll = -np.mean([math.log(p) for p in (0.9, 0.62, 0.2, 0.75, 0.2, 0.45)])
    assert m["nll"] == pytest.approx(nll)
    # with 15 bins every sample has a bin of its own: ECE is the mean |correct - confidence|
    gaps = [0.1, 0.38, 0.7, 0.25, 0.5, 0.55]
    assert m["ece"] == pytest.approx(sum(gaps) / 6)
    assert m["mce"] == pytest.approx(0.7)


def test_ece_and_mce_with_shared_bins():
    ece, mce = expected_calibration_error(PROBS, TARGETS, n_bins=5)
    # bins of width 0.2:
    # (0.4, 0.6]: 0.50 wrong, 0.45 right -> acc 0.5, conf 0.475
    # (0.6, 0.8]: 0.62 right, 0.70 wrong, 0.75 right -> acc 2/3, conf 0.69
    # (0.8, 1.0]: 0.90 right -> acc 1, conf 0.9
    gaps = [abs(0.5 - 0.475), abs(2 / 3 - 0.69), abs(1 - 0.9)]
    assert ece == pytest.approx((2 * gaps[0] + 3 * gaps[1] + 1 * gaps[2]) / 6)
    assert mce == pytest.approx(max(gaps))


def test_reliability_bins_edges_belong_to_the_lower_bin():
    probs = np.array([[0.0, 0.0], [0.2, 0.1], [0.4, 0.3], [0.6, 0.4], [1.0, 0.0], [0.3, 0.1]])
    targets = np.array([0, 0, 1, 0, 0, 0])
    bins = reliability_bins(probs, targets, n_bins=5)
    np.testing.assert_allclose(bins.edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # 0 and 0.2 -> first bin, 0.3 and 0.4 -> (0.2, 0.4], 0.6 -> (0.4, 0.6], 1.0 -> last
    assert bins.count.tolist() == [2, 2, 1, 0, 1]
    np.testing.assert_allclose(bins.confidence[[0, 1, 2, 4]], [0.1, 0.35, 0.6, 1.0])
    np.testing.assert_allclose(bins.accuracy[[0, 1, 2, 4]], [1.0, 0.5, 1.0, 1.0])
    assert np.isnan(bins.confidence[3]) and np.isnan(bins.accuracy[3])


def test_torch_inputs_match_numpy():
    from_torch = compute_metrics(torch.tensor(LOGITS), torch.tensor(TARGETS), TRAIN_COUNTS)
    from_bf16 = compute_metrics(torch.tensor(LOGITS).bfloat16(), torch.tensor(TARGETS), TRAIN_COUNTS)
    reference = compute_metrics(LOGITS, TARGETS, TRAIN_COUNTS)
    assert from_torch == reference
    assert from_bf16["top1"] == reference["top1"]


def test_top5_counts_rank_five_but_not_six():
    # seven classes; the target is ranked 5th in row 0 and 6th in row 1
    logits = np.array([[7, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1]], dtype=float)
    m = compute_metrics(logits, np.array([4, 5]), [1] * 7)
    assert m["top5"] == 0.5
    assert m["top1"] == 0.0


def test_class_without_test_samples_is_none_and_left_out():
    m = compute_metrics(LOGITS[:4], TARGETS[:4], TRAIN_COUNTS)
    assert m["per_class"][2] is None
    assert m["balanced_acc"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["few"] is None  # its only class has no test sample
    assert m["confusion"][2] == [0, 0, 0]


def test_groups_use_train_counts_with_inclusive_medium():
    # accuracies 1, 0, 1, 0 on classes with 101, 100, 20, 19 training images
    logits = np.eye(4)[[0, 0, 2, 0]] * 5
    m = compute_metrics(logits, np.arange(4), [101, 100, 20, 19])
    assert m["per_class"] == [1.0, 0.0, 1.0, 0.0]
    assert (m["many"], m["medium"], m["few"]) == (1.0, 0.5, 0.0)
    custom = compute_metrics(logits, np.arange(4), [101, 100, 20, 19], many=20, few=20)
    assert (custom["many"], custom["medium"], custom["few"]) == (0.5, 1.0, 0.0)


def test_empty_group_is_none():
    m = compute_metrics(LOGITS, TARGETS, [500, 400, 300])
    assert m["many"] == pytest.approx(m["balanced_acc"])
    assert m["medium"] is None and m["few"] is None


def test_tail_accuracy_takes_the_rarest_classes():
    per_class = [0.9, 0.8, 0.1, 0.2, 0.3]
    counts = [100, 50, 5, 10, 8]
    assert tail_accuracy(per_class, counts) == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    assert tail_accuracy(per_class, counts, k=1) == pytest.approx(0.1)
    assert tail_accuracy([0.9, 0.8, None, 0.2, 0.3], counts) == pytest.approx(0.25)
    assert tail_accuracy([0.9, None], [5, 1], k=1) is None
    with pytest.raises(ValueError, match="k must be between 1"):
        tail_accuracy(per_class, counts, k=6)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="train_counts has 2 entries for 3 classes"):
        compute_metrics(LOGITS, TARGETS, [1, 2])
    with pytest.raises(ValueError, match="expected 6 targets"):
        compute_metrics(LOGITS, TARGETS[:5], TRAIN_COUNTS)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        compute_metrics(LOGITS, TARGETS + 1, TRAIN_COUNTS)
    with pytest.raises(ValueError, match="integer class indices"):
        compute_metrics(LOGITS, TARGETS.astype(float), TRAIN_COUNTS)
    with pytest.raises(ValueError, match=r"few threshold \(20\) must not exceed many threshold \(10\)"):
        compute_metrics(LOGITS, TARGETS, TRAIN_COUNTS, many=10, few=20)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        reliability_bins(PROBS, TARGETS, n_bins=0)


def test_class_scores_are_classification_reports():
    from sklearn.metrics import precision_recall_fscore_support

    from livt.metrics import class_scores

    m = compute_metrics(LOGITS, TARGETS, TRAIN_COUNTS)
    scores = class_scores(m["confusion"])
    ref = precision_recall_fscore_support(TARGETS, LOGITS.argmax(axis=1), zero_division=0)
    for got, want in zip(
        (scores["precision"], scores["recall"], scores["f1"], scores["support"]), ref, strict=True
    ):
        assert got == pytest.approx(list(want))
    # a class never predicted has no precision, one without images no recall: None, not 0
    unseen = class_scores([[2, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert unseen["precision"][1] is None and unseen["recall"][2] is None and unseen["f1"][1] is None
    assert unseen["f1"][0] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_scalar_metrics_are_what_compute_metrics_returns_and_import_without_torch():
    import subprocess
    import sys

    from livt.metrics import SCALAR_METRICS

    assert set(SCALAR_METRICS) <= set(compute_metrics(LOGITS, TARGETS, TRAIN_COUNTS))
    code = "import sys; sys.modules['torch'] = None; import livt.metrics, livt.export.metadata; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_class_groups_thresholds():
    counts = [101, 100, 20, 19, 0]
    assert class_groups(counts) == {"many": [0], "medium": [1, 2], "few": [3, 4]}
    assert class_groups(counts, many=19, few=1) == {"many": [0, 1, 2], "medium": [3], "few": [4]}
    with pytest.raises(ValueError, match="few threshold"):
        class_groups(counts, many=10, few=20)
