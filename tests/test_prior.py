import json
import math
import subprocess
import sys

import numpy as np
import pytest

from livt.prior import BCE_FAMILY, PriorError, prior_offset, resolve_prior

COUNTS = [60, 30, 10]
CLASSES = ["cat", "dog", "eel"]


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import livt.prior; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("spec", [None, "balanced"])
def test_balanced_prior_is_none_and_offset_zero(spec):
    assert resolve_prior(spec, COUNTS) == ("balanced", None)
    offset = prior_offset(None, "bal-bce", 1.0, 3)
    assert offset.dtype == np.float32
    assert offset.tolist() == [0.0, 0.0, 0.0]


def test_train_prior_normalises_the_counts():
    mode, pi = resolve_prior("train", COUNTS)
    assert mode == "train"
    np.testing.assert_allclose(pi, [0.6, 0.3, 0.1])


def test_sequence_prior_is_custom():
    mode, pi = resolve_prior([1, 1, 2], COUNTS)
    assert mode == "custom"
    np.testing.assert_allclose(pi, [0.25, 0.25, 0.5])


def test_json_list_and_mapping_files(tmp_path):
    listed = tmp_path / "prior.json"
    listed.write_text(json.dumps([2, 1, 1]))
    assert resolve_prior(listed, COUNTS)[0] == "file"
    np.testing.assert_allclose(resolve_prior(str(listed), COUNTS)[1], [0.5, 0.25, 0.25])
    mapped = tmp_path / "named.json"
    mapped.write_text(json.dumps({"eel": 0.5, "cat": 0.25, "dog": 0.25}))
    np.testing.assert_allclose(resolve_prior(mapped, COUNTS, CLASSES)[1], [0.25, 0.25, 0.5])


def test_csv_files_with_and_without_header(tmp_path):
    single = tmp_path / "prior.csv"
    single.write_text("value\n1\n3\n4\n")
    np.testing.assert_allclose(resolve_prior(single, COUNTS)[1], [0.125, 0.375, 0.5])
    named = tmp_path / "named.csv"
    named.write_text("class,value\ndog,2\neel,1\ncat,1\n")
    np.testing.assert_allclose(resolve_prior(named, COUNTS, CLASSES)[1], [0.25, 0.5, 0.25])
    headless = tmp_path / "headless.csv"
    headless.write_text("cat,1\ndog,1\neel,2\n")
    np.testing.assert_allclose(resolve_prior(headless, COUNTS, CLASSES)[1], [0.25, 0.25, 0.5])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "expected 3 values"),
        ([1, -1, 2], "non-negative"),
        ([0, 0, 0], "not all be zero"),
        ([1, float("inf"), 2], "finite"),
        (["a", "b", "c"], "expected numbers"),
        ("nonexistent.json", "not 'balanced', 'train' or an existing"),
    ],
)
def test_bad_priors_raise(spec, message):
    with pytest.raises(PriorError, match=message):
        resolve_prior(spec, COUNTS)


@pytest.mark.parametrize(
    ("name", "text", "classes", "message"),
    [
        ("bad.json", "{not json", None, "not valid JSON"),
        ("scalar.json", "3", None, "expected a JSON list"),
        ("named.json", '{"cat": 1, "dog": 1, "eel": 1}', None, "needs the model's class names"),
        ("unknown.json", '{"cat": 1, "dog": 1, "eel": 1, "fox": 1}', CLASSES, "unknown class names"),
        ("missing.json", '{"cat": 1, "dog": 1}', CLASSES, r"no value for classes \['eel'\]"),
        ("short_row.csv", "class,value\ncat,1\ndog\neel,1\n", CLASSES, "'class,value' on every row"),
        ("wide_row.csv", "1\n2,3\n4\n", None, "one number per line"),
        ("words.csv", "value\nmany\nfew\nfew\n", None, "one number per line"),
    ],
)
def test_bad_prior_files_raise(tmp_path, name, text, classes, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PriorError, match=message):
        resolve_prior(path, COUNTS, classes)


def test_bayes_rule_is_log_pi_whatever_the_loss_and_tau():
    pi = np.array([0.6, 0.3, 0.1])
    for loss, tau in (("bal-bce", 1.0), ("bal-bce", 0.5), ("bal-ce", 2.0)):
        np.testing.assert_allclose(prior_offset(pi, loss, tau, 3), np.log(pi), rtol=1e-6)
        np.testing.assert_allclose(prior_offset(pi, loss, tau, 3, "bayes"), np.log(pi), rtol=1e-6)


def test_loss_rule_is_log_odds_for_bce_family_and_log_for_softmax():
    pi = np.array([0.6, 0.3, 0.1])
    assert {"bce", "bal-bce"} == BCE_FAMILY
    for loss in ("bce", "bal-bce"):
        expected = [2.0 * math.log(p / (1 - p)) for p in pi]
        np.testing.assert_allclose(prior_offset(pi, loss, 2.0, 3, "loss"), expected, rtol=1e-6)
    for loss in ("ce", "bal-ce", "focal"):
        np.testing.assert_allclose(prior_offset(pi, loss, 0.5, 3, "loss"), 0.5 * np.log(pi), rtol=1e-6)
    with pytest.raises(PriorError, match="prior rule must be one of"):
        prior_offset(pi, "bal-bce", 1.0, 3, "odds")


def test_offset_stays_finite_for_zero_and_one():
    for rule in ("bayes", "loss"):
        offset = prior_offset(np.array([1.0, 0.0]), "bal-bce", 1.0, 2, rule)
        assert np.all(np.isfinite(offset))
        assert offset[0] - offset[1] > 20
        assert np.all(np.isfinite(prior_offset(np.array([1.0, 0.0]), "bal-ce", 1.0, 2, rule)))


def test_offset_rejects_a_prior_of_the_wrong_length():
    with pytest.raises(PriorError, match="expected 3 values"):
        prior_offset(np.array([0.5, 0.5]), "bal-bce", 1.0, 3)


def test_a_model_without_a_prior_term_refuses_a_target_prior():
    with pytest.raises(PriorError, match="has no balanced logits"):
        prior_offset(np.array([0.5, 0.5]), "ce", 0.0, 2)
    assert prior_offset(None, "ce", 0.0, 2).tolist() == [0.0, 0.0]


def test_values_whose_sum_overflows_are_normalised():
    """Issue 10: [1e308, 1e308, 1, 1] summed to inf and became a flat prior."""
    mode, pi = resolve_prior([1e308, 1e308, 1, 1], [1, 1, 1, 1])
    assert mode == "custom" and np.isfinite(pi).all()
    np.testing.assert_allclose(pi[:2], [0.5, 0.5])
    assert 0 < pi[2] < 1e-300


def test_balanced_logits_depend_on_tau_alone():
    from livt.prior import has_balanced_logits

    assert has_balanced_logits(1.0) and has_balanced_logits(0.5)
    assert not has_balanced_logits(0.0)
