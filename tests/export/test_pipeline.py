import pytest

from livt.export.errors import ExportError
from livt.export.options import ExportOptions
from livt.export.report import calibration_table, evaluation_table


def _opts(**kw):
    return ExportOptions(run_dir="run", out=kw.pop("out", "m.onnx"), **kw)


def test_int8_mode_defaults_follow_the_format():
    assert _opts(int8=True).resolved_int8_mode == "dynamic"
    assert _opts(int8=True, format="tensorrt", out="m.plan").resolved_int8_mode == "static"
    assert _opts().resolved_int8_mode is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"format": "coreml"}, "--format"),
        ({"out": "m.plan"}, "must end in .onnx"),
        ({"format": "tensorrt"}, "must end in .plan"),
        ({"eval_split": "train"}, "--eval-split"),
        ({"atol": -1.0}, "--atol"),
        ({"many": 10, "few": 20}, "--few"),
        ({"verify_samples": 0}, "--verify-samples"),
    ],
)
def test_validate_names_the_problem(kw, message):
    with pytest.raises(ExportError, match=message):
        _opts(**kw).validate()


def test_fp16_is_fine_for_an_engine_inside_triton():
    _opts(format="triton", out="repo", triton_platform="tensorrt_plan", fp16=True).validate()


def test_evaluation_table_marks_empty_groups():
    report = {
        "parity": {"onnx-fp32": {"top1_agreement": 1.0}},
        "evaluation": {
            "split": "test",
            "samples": 4,
            "prior": "train",
            "split_labels": "balanced",
            "variants": {"onnx-fp32": {"top1": 0.5, "balanced_acc": 0.5, "many": None, "medium": 1.0,
                                       "few": 0.0, "ece": 0.1, "nll": 1.0}},
        },
    }  # fmt: skip
    lines = evaluation_table(report).splitlines()
    assert lines[0] == "test split, 4 images (balanced labels), scored under the folded prior 'train'"
    assert lines[2].split() == ["onnx-fp32", "50.00", "50.00", "-", "100.00", "0.00", "10.00", "100.00"]
    assert evaluation_table({"evaluation": None}) == ""


def test_calibration_table_says_what_was_minimised_and_scores_every_candidate():
    candidates = {m: {"val_cv": {"nll": n, "ece": 0.05}, "test": {"nll": n + 0.1, "ece": 0.04}}
                  for m, n in (("none", 0.5), ("temperature", 0.45), ("bcts", 0.4))}  # fmt: skip
    report = {
        "calibration": {
            "method": "bcts", "selection": "auto", "images": 3000, "candidates": candidates,
            "criterion": "5-fold cross-validated NLL, balanced val split, unweighted",
            "params": {"method": "bcts", "temperature": 1.25, "scale": [0.8], "bias": [0.0]},
        }
    }  # fmt: skip
    lines = calibration_table(report).splitlines()
    assert lines[0] == (
        "calibration: bcts, T = 1.2500 (auto; 5-fold cross-validated NLL, balanced val split, unweighted, "
        "3000 images)"
    )
    assert lines[4].split() == ["bcts", "0.4000", "5.00%", "0.5000", "4.00%"]
    assert calibration_table({"calibration": None}) == ""


def test_group_thresholds_come_from_meta_json_unless_given():
    from livt.export.pipeline import group_thresholds

    meta = {"many_threshold": 60, "few_threshold": 10}
    assert (group_thresholds(_opts(), meta).many, group_thresholds(_opts(), meta).few) == (60, 10)
    assert group_thresholds(_opts(many=80), meta).many == 80
    assert (group_thresholds(_opts(), {}).many, group_thresholds(_opts(), {}).few) == (100, 20)
    with pytest.raises(ExportError, match=r"few \(70\) <= many \(60\).*meta.json"):
        group_thresholds(_opts(few=70), meta)
