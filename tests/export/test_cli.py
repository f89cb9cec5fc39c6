"""End-to-end ``livt-export`` runs on the tiny fine-tuned run: parity, metadata, errors."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from livt.data import build_dataset, build_eval_transform
from livt.export.cli import main
from livt.export.metadata import read_onnx_metadata
from livt.export.onnx import make_session, run_onnx
from livt.models import ViTConfig, create_classifier
from livt.prior import prior_offset
from livt.training.checkpoint import load_checkpoint_meta, load_model_weights, save_checkpoint

CONTRACT_KEYS = {
    "format_version", "livt_version", "model_name", "model", "classes", "class_counts", "loss", "tau",
    "input", "outputs", "preprocess", "prior", "calibration", "quantization", "metrics", "source_sha256",
    "versions",
}  # fmt: skip
FILE_PRIOR = [1, 1, 2, 2, 4, 4, 8, 8, 16, 16]


@pytest.fixture(scope="module")
def reference(run_dir):
    """The run's raw model and val images, rebuilt from the run folder without livt.export."""
    ckpt = run_dir / "checkpoints" / "best"
    meta = load_checkpoint_meta(ckpt)
    model = create_classifier(ViTConfig.from_dict(meta["model"]))
    model.load_state_dict(load_model_weights(ckpt))
    val = build_dataset(meta["dataset"]["name"], "val", **meta["dataset"]["options"])
    val.transform = build_eval_transform(val.info, meta["preprocess"]["img_size"])
    x = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        z = model.eval()(x).numpy()
    return meta, x.numpy(), z


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory):
    """One export per prior mode (each calibrated; balanced by default) plus an uncalibrated one."""
    root = tmp_path_factory.mktemp("exports")
    prior_file = root / "prior.json"
    prior_file.write_text(json.dumps(FILE_PRIOR))
    cases = {
        "balanced": ["--prior", "balanced", "--calibrate", "none"],
        "balanced-calibrated": ["--prior", "balanced"],  # calibrated by default: the run has val
        "train-calibrated": ["--prior", "train", "--calibrate"],
        "file-calibrated": ["--prior", str(prior_file), "--calibrate"],
        "train-temperature": ["--prior", "train", "--calibrate", "temperature"],
        "train-loss-rule": ["--prior", "train", "--calibrate", "bcts", "--prior-rule", "loss"],
    }
    out = {}
    for name, extra in cases.items():
        path = root / name / "model.onnx"
        assert main(["--run", str(run_dir), "--out", str(path), *extra]) == 0
        out[name] = path
    return out


def _expected_pi(case, meta):
    if case.startswith("balanced"):
        return None
    counts = np.asarray(meta["class_counts"] if case.startswith("train") else FILE_PRIOR, dtype=float)
    return counts / counts.sum()


CASES = ["balanced", "balanced-calibrated", "train-calibrated", "file-calibrated", "train-temperature",
         "train-loss-rule"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_onnx_equals_calibrated_logits_plus_the_prior_rule(exports, reference, case):
    """The artifact's logits are ``scale * z + bias + rule(pi)``: the prior is never rescaled."""
    meta, x, z = reference
    info = read_onnx_metadata(exports[case])
    cal = info["calibration"]
    assert cal is None if case == "balanced" else cal["split"] == "val"
    scale, bias = (1.0, 0.0) if cal is None else (np.asarray(cal["scale"]), np.asarray(cal["bias"]))
    if case == "train-temperature":
        assert cal["method"] == "temperature" and not bias.any()
        np.testing.assert_allclose(scale, 1 / cal["temperature"])
    rule = "loss" if case.endswith("loss-rule") else "bayes"
    assert info["prior"]["rule"] == rule
    pi = _expected_pi(case, meta)
    offset = prior_offset(pi, meta["loss"], meta["tau"], len(meta["classes"]), rule)
    if pi is not None and rule == "bayes":
        np.testing.assert_allclose(offset, np.log(pi), rtol=1e-6)
    expected = z * scale + bias + offset
    logits, probs = run_onnx(make_session(exports[case], threads=1), x)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs, torch.from_numpy(expected).softmax(-1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(info["prior"]["offset"], offset, rtol=1e-6)
    assert info["prior"]["pi"] is None if pi is None else np.allclose(info["prior"]["pi"], pi)


def test_metadata_round_trips_every_contract_key(exports, reference, run_dir):
    meta, _, _ = reference
    info = json.loads(
        {p.key: p.value for p in onnx.load(str(exports["file-calibrated"])).metadata_props}["livt"]
    )
    assert set(info) >= CONTRACT_KEYS
    assert info["model"] == meta["model"] and info["model_name"] == "vit_micro"
    assert info["classes"] == meta["classes"] and info["class_counts"] == meta["class_counts"]
    assert info["preprocess"] == meta["preprocess"]
    assert info["input"] == {"name": "input", "shape": [None, 3, 32, 32], "dtype": "float32"}
    assert info["outputs"] == ["logits", "probabilities"]
    assert info["prior"]["mode"] == "file" and info["prior"]["source"].endswith("prior.json")
    assert info["quantization"] is None
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert info["metrics"]["balanced_acc"] == run_metrics["balanced_acc"]
    assert "per_class" not in info["metrics"] and "confusion" not in info["metrics"]
    import hashlib

    weights = run_dir / "checkpoints" / "best" / "model.safetensors"
    assert info["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert set(info["versions"]) == {"torch", "onnx", "onnxruntime", "timm"}
    cal = info["calibration"]
    assert cal["images"] == 100 and cal["method"] in ("none", "temperature", "bcts", "vector")
    assert len(cal["scale"]) == len(cal["bias"]) == 10


def test_report_beside_the_artifact(exports):
    report = json.loads((exports["train-calibrated"].parent / "export_report.json").read_text())
    assert report["parity"]["onnx-fp32"]["max_abs_diff_logits"] < 1e-4
    assert report["parity"]["onnx-fp32"]["top1_agreement"] == 1.0
    evaluation = report["evaluation"]
    assert evaluation["split"] == "test" and evaluation["samples"] == 200
    assert set(evaluation["variants"]["onnx-fp32"]) >= {"balanced_acc", "many", "medium", "few"}
    cal = report["calibration"]
    assert cal["selection"] == "auto" and cal["images"] == 100 and "cross-validated NLL" in cal["criterion"]
    assert set(cal["candidates"]) == {"none", "temperature", "bcts", "vector"}
    # The chosen method has the lowest held-out NLL on val; every candidate is also scored on test.
    chosen = cal["candidates"][cal["method"]]["val_cv"]["nll"]
    assert all(chosen <= c["val_cv"]["nll"] for c in cal["candidates"].values())
    assert all({"nll", "ece"} <= set(c["test"]) for c in cal["candidates"].values())


def test_dynamic_batch_runs_batch_1_and_7(exports, reference):
    _, x, _ = reference
    session = make_session(exports["balanced"], threads=1)
    for batch in (1, 7):
        logits, probs = run_onnx(session, x[:batch])
        assert logits.shape == probs.shape == (batch, 10)


def test_success_prints_what_it_wrote_and_next_commands(run_dir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["--run", str(run_dir), "--out", str(out), "--eval-split", "none"]) == 0
    stdout = capsys.readouterr().out
    assert str(out) in stdout and "livt-serve --model" in stdout and "livt-export benchmark" in stdout


def _assert_fails(args, capsys, code, message, out_dir):
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("[1, 2, 3]", ".json", "expected 10 values"),
        ("[1, -1, 1, 1, 1, 1, 1, 1, 1, 1]", ".json", "non-negative"),
        ("[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", ".json", "must not all be zero"),
        ("{not json", ".json", "not valid JSON"),
        ("0.1\n" * 5 + "abc\n" + "0.1\n" * 4, ".csv", "one number per line"),
    ],
)
def test_bad_prior_files_fail_with_exit_2_and_no_artifact(
    run_dir, tmp_path, capsys, content, suffix, message
):
    prior = tmp_path / f"prior{suffix}"
    prior.write_text(content)
    out_dir = tmp_path / "out"
    _assert_fails(
        ["--run", str(run_dir), "--out", str(out_dir / "m.onnx"), "--prior", str(prior)],
        capsys,
        2,
        message,
        out_dir,
    )


def test_unreadable_prior_path_fails(run_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    args = [
        "--run",
        str(run_dir),
        "--out",
        str(out_dir / "m.onnx"),
        "--prior",
        str(tmp_path / "missing.json"),
    ]
    _assert_fails(args, capsys, 2, "existing JSON/CSV file", out_dir)


def test_missing_run_folder_fails(tmp_path, capsys):
    out_dir = tmp_path / "out"
    _assert_fails(
        ["--run", str(tmp_path / "nope"), "--out", str(out_dir / "m.onnx")],
        capsys,
        2,
        "does not exist",
        out_dir,
    )


def test_pretrain_run_is_refused(run_dir, tmp_path, capsys):
    ckpt = run_dir / "checkpoints" / "best"
    meta = {**load_checkpoint_meta(ckpt), "stage": "pretrain"}
    model = create_classifier(ViTConfig.from_dict(meta["model"]))
    save_checkpoint(tmp_path / "pre" / "checkpoints" / "last", model, meta)
    out_dir = tmp_path / "out"
    args = ["--run", str(tmp_path / "pre"), "--out", str(out_dir / "m.onnx")]
    _assert_fails(args, capsys, 2, "'pretrain' checkpoint", out_dir)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fp16"], "--fp16 needs a TensorRT engine"),
        (["--max-batch", "64"], "shape a TensorRT engine"),
        (["--int8-mode", "static"], "--int8-mode needs --int8"),
        (["--opset", "16"], "opset >= 17"),
        (["--format", "tensorrt", "--int8", "--int8-mode", "dynamic"], "explicit Q/DQ"),
    ],
)
def test_unsupported_combinations_fail_with_exit_2(run_dir, tmp_path, capsys, extra, message):
    out_dir = tmp_path / "out"
    suffix = ".plan" if "tensorrt" in extra else ".onnx"
    _assert_fails(
        ["--run", str(run_dir), "--out", str(out_dir / f"m{suffix}"), *extra], capsys, 2, message, out_dir
    )


def test_verification_failure_exits_1_and_leaves_nothing(run_dir, exports, tmp_path, capsys):
    report = json.loads((exports["balanced"].parent / "export_report.json").read_text())
    diff = report["parity"]["onnx-fp32"]["max_abs_diff_logits"]
    # ONNX Runtime's kernels are not bitwise PyTorch's: a tolerance below the measured gap must fail.
    assert diff > 0
    out_dir = tmp_path / "out"
    args = [
        "--run",
        str(run_dir),
        "--out",
        str(out_dir / "m.onnx"),
        "--atol",
        str(diff / 10),
        "--eval-split",
        "none",
    ]
    assert main(args) == 1
    assert "nothing was written" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []  # the temporary folder is gone too


def test_tensorrt_without_gpu_says_so_in_one_line(run_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the TensorRT tests cover this path")
    out_dir = tmp_path / "out"
    assert main(["--run", str(run_dir), "--out", str(out_dir / "m.plan"), "--format", "tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot build a TensorRT engine" in err and len(err.splitlines()) == 1
    assert not out_dir.exists()


def _run_copy(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoints", run / "checkpoints")
    shutil.copy(run_dir / "metrics.json", run / "metrics.json")
    return run


def test_broken_metrics_json_exits_2_with_a_clear_message(run_dir, tmp_path, capsys):
    run = _run_copy(run_dir, tmp_path)
    (run / "metrics.json").write_text("{not json")
    assert main(["--run", str(run), "--out", str(tmp_path / "out" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json is not readable JSON" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "m.onnx").exists()


def test_a_run_without_val_split_exports_and_verifies_on_test(run_dir, tmp_path, capsys):
    """``val_per_class=0``-style data (no val split): a plain export streams test and verifies on it."""
    from PIL import Image

    run = _run_copy(run_dir, tmp_path)
    meta_path = run / "checkpoints" / "best" / "meta.json"
    meta = json.loads(meta_path.read_text())
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c, name in enumerate(meta["classes"]):
        (root / "test" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "test" / name / f"{c}-{i}.png")
    pp = meta["preprocess"]
    options = {"classes": meta["classes"], "image_size": pp["img_size"], "mean": pp["mean"], "std": pp["std"]}
    meta["dataset"] = {"name": "imagefolder", "data_root": str(root), "options": options}
    meta_path.write_text(json.dumps(meta))

    out = tmp_path / "out" / "m.onnx"
    assert main(["--run", str(run), "--out", str(out), "--verify-samples", "16"]) == 0
    report = json.loads((out.parent / "export_report.json").read_text())
    assert report["parity"]["onnx-fp32"]["samples"] == 16
    assert report["evaluation"]["split"] == "test" and report["evaluation"]["samples"] == 30
    assert report["calibration"] is None  # the default calibration is skipped, not an error
    capsys.readouterr()
    assert main(["--run", str(run), "--out", str(tmp_path / "cal" / "m.onnx"), "--calibrate", "bcts"]) == 2
    assert "--calibrate bcts needs the val split" in capsys.readouterr().err


def test_a_run_without_test_split_exports_with_the_command_training_prints(run_dir, tmp_path, capsys):
    """test/ is optional in an image folder: the printed `livt-export --run R --out O` evaluates on val."""
    from PIL import Image

    run = _run_copy(run_dir, tmp_path)
    meta_path = run / "checkpoints" / "best" / "meta.json"
    meta = json.loads(meta_path.read_text())
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in meta["classes"]:
        (root / "val" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                root / "val" / name / f"{i}.png"
            )
    pp = meta["preprocess"]
    options = {"classes": meta["classes"], "image_size": pp["img_size"], "mean": pp["mean"], "std": pp["std"]}
    meta["dataset"] = {"name": "imagefolder", "data_root": str(root), "options": options}
    meta_path.write_text(json.dumps(meta))

    out = run / "export" / "model.onnx"
    assert main(["--run", str(run), "--out", str(out), "--calibrate", "none"]) == 0, capsys.readouterr().err
    report = json.loads((out.parent / "export_report.json").read_text())
    assert report["evaluation"]["split"] == "val" and report["evaluation"]["samples"] == 30
    capsys.readouterr()
    assert main(["--run", str(run), "--out", str(tmp_path / "t" / "m.onnx"), "--eval-split", "test"]) == 2
    assert "cannot read the 'test' split" in capsys.readouterr().err


def test_a_folder_as_out_is_one_line_and_leaves_no_stray_file(run_dir, tmp_path, capsys):
    target = tmp_path / "model.onnx"
    target.mkdir()
    assert main(["--run", str(run_dir), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"] and not any(target.iterdir())


@pytest.mark.slow  # a whole export in a child process: about 20 s on 2 busy cores
def test_a_full_disk_is_one_line_and_leaves_no_stray_file(run_dir, tmp_path):
    # A full disk, simulated by a file-size limit: the ONNX file (about 1 MB) cannot be written.
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "livt.export.cli", "--run", str(run_dir), "--out", str(out), "--calibrate",
         "none", "--eval-split", "none", "--verify-samples", "8"],
        capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert "livt-export: error:" in done.stderr and "File too large" in done.stderr, done.stderr
    assert list(out.parent.iterdir()) == []


def test_an_export_removes_the_stale_variants_of_an_earlier_one(run_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    stale = tmp_path / "model.int8.onnx"
    stale.write_bytes(b"another model")
    (tmp_path / "model.int8.onnx.sha256").write_text("0" * 64 + "  model.int8.onnx\n")
    (tmp_path / "other.int8.onnx").write_bytes(b"not a variant of model.onnx")
    args = ["--run", str(run_dir), "--out", str(out), "--calibrate", "none", "--eval-split", "none"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert not stale.exists() and not (tmp_path / "model.int8.onnx.sha256").exists()
    assert "removed (variants of an earlier export" in printed and str(stale) in printed
    assert (tmp_path / "other.int8.onnx").exists() and out.exists()


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a folder nobody may write to (sysfs)")
def test_an_unwritable_destination_is_one_line(run_dir, capsys):
    # Root ignores a read-only mode bit, so the test writes under sysfs, which nobody may write.
    assert main(["--run", str(run_dir), "--out", "/sys/livt-export-test/model.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write /sys/livt-export-test" in err and "Traceback" not in err, (
        err
    )
