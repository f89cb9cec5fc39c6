import pytest

from livt.export.errors import ExportError
from livt.export.pipeline import ExportOptions, evaluation_table


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
        (
            {"format": "triton", "triton_platform": "tensorrt_plan", "out": "repo", "optimize": True},
            "--optimize",
        ),
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
            "variants": {"onnx-fp32": {"top1": 0.5, "balanced_acc": 0.5, "many": None, "medium": 1.0,
                                       "few": 0.0, "ece": 0.1, "nll": 1.0}},
        },
    }  # fmt: skip
    lines = evaluation_table(report).splitlines()
    assert lines[0] == "test split, 4 images"
    assert lines[2].split() == ["onnx-fp32", "50.00", "50.00", "-", "100.00", "0.00", "10.00", "100.00"]
    assert evaluation_table({"evaluation": None}) == ""
