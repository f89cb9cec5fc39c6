"""End to end through ``livt-train``: pretrain -> finetune (--init) -> evaluate on synthetic-tiny."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from livt.data.formats import DATA_ROOT_ENV, idx
from livt.training.checkpoint import load_model_weights
from livt.training.cli import main

from ..data.writers import write_fashion_mnist
from .conftest import FINETUNE, PRETRAIN, damage

METRIC_KEYS = {"top1", "top5", "balanced_acc", "many", "medium", "few", "ece", "nll", "mce", "per_class",
               "train_counts", "tail3", "val", "best_epoch"}  # fmt: skip


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_run_folder(pretrain_run: Path):
    assert yaml.safe_load((pretrain_run / "config.yaml").read_text())["stage"] == "pretrain"
    assert [r["epoch"] for r in _history(pretrain_run)] == [0, 1]
    assert {"train_loss", "lr", "images_per_s", "time"} <= set(_history(pretrain_run)[0])
    last = pretrain_run / "checkpoints" / "last"
    assert {p.name for p in last.iterdir()} == {"model.safetensors", "meta.json", "state.pt"}
    meta = json.loads((last / "meta.json").read_text())
    assert meta["stage"] == "pretrain" and meta["mae"]["decoder_depth"] == 1 and meta["epoch"] == 1
    assert {p.name for p in (pretrain_run / "plots").iterdir()} == {"loss.png", "reconstructions.png"}
    assert "epoch 2/2" in (pretrain_run / "train.log").read_text()  # epochs counted from 1


def test_finetune_run_folder_and_metrics(finetune_run: Path):
    metrics = json.loads((finetune_run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert (metrics["many_threshold"], metrics["few_threshold"]) == (60, 20)  # the recipe's groups
    assert metrics["balanced_acc"] > 0.2  # 10 classes: chance is 0.1
    assert metrics["train_counts"][0] == 100 and metrics["train_counts"][-1] == 10
    history = _history(finetune_run)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert "balanced_acc" in history[0]["val"]
    best_epoch = max(history, key=lambda r: r["val"]["balanced_acc"])["epoch"]
    assert metrics["best_epoch"] == best_epoch
    meta = json.loads((finetune_run / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["stage"] == "finetune" and meta["loss"] == "bal-bce" and meta["tau"] == 1.0
    assert meta["model"]["num_classes"] == 10 and meta["mae"] is not None
    assert meta["preprocess"] == {"img_size": 32, "channels": 3, "mean": meta["preprocess"]["mean"],
                                  "std": meta["preprocess"]["std"], "resize": 32, "crop_pct": 1.0,
                                  "interpolation": "bicubic"}  # fmt: skip
    assert meta["class_counts"] == metrics["train_counts"] and len(meta["classes"]) == 10
    assert meta["dataset"]["name"] == "synthetic" and meta["dataset"]["options"]["n_max"] == 100
    assert {p.name for p in (finetune_run / "plots").iterdir()} == {
        "curves.png", "per_class_accuracy.png", "reliability.png", "confusion.png"}  # fmt: skip


def test_evaluate_writes_metrics_and_predictions(finetune_run: Path, tmp_path: Path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(finetune_run), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    final = json.loads((finetune_run / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(final["top1"])  # same best checkpoint, same test split
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 200 and lines[0]["path"] is None
    for line in lines[:5]:
        assert sum(line["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert (
            line["pred"] == int(np.argmax(line["probabilities"])) and line["label"] == f"class_{line['pred']}"
        )
    assert np.mean([p["pred"] == p["target"] for p in lines]) == pytest.approx(metrics["top1"])
    assert (out / "plots" / "reliability.png").is_file()


def _image_folder(root: Path, classes: int, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(classes):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_evaluate_on_image_files_records_paths(finetune_run: Path, tmp_path: Path):
    root = _image_folder(tmp_path / "imgs", classes=10)
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(finetune_run), "--dataset", "imagefolder", "--data-root", str(root)]
    assert main([*args, "--out", str(out), "--workers", "0", "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert lines[0]["path"] == str(root / "test" / "class_0" / "0.png") and lines[0]["target"] == 0


def test_evaluate_folder_with_some_of_the_runs_classes(finetune_run: Path, tmp_path: Path):
    root = _image_folder(tmp_path / "imgs", classes=3)
    shutil.rmtree(root / "train")  # the run's classes are the label space: no train split needed
    (root / "test" / "class_1").rename(root / "test" / "class_7")
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(finetune_run), "--dataset", "imagefolder", "--data-root", str(root)]
    assert main([*args, "--out", str(out), "--workers", "0", "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [line["target"] for line in lines] == [0, 0, 2, 2, 7, 7]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_class"]) == 10
    assert (metrics["many_threshold"], metrics["few_threshold"]) == (60, 20)  # the run's recipe


def test_evaluate_differently_labelled_folder_gives_predictions_only(
    finetune_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root = tmp_path / "imgs"
    for name, size in (("a.png", (40, 36)), ("b.jpg", (23, 51))):
        path = root / "val" / "unsorted" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 90, dtype=np.uint8)).save(path)
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(finetune_run), "--dataset", "imagefolder", "--data-root", str(root),
            "--split", "val", "--out", str(out), "--workers", "0", "--quiet"]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(line["path"]).name for line in lines] == ["a.png", "b.jpg"]
    for line in lines:
        assert line["target"] is None and len(line["probabilities"]) == 10
        assert line["label"] == f"class_{line['pred']}"  # the run's class names
    assert not (out / "metrics.json").exists()
    assert "not the run's classes" in caplog.text


def test_finetune_from_scratch(tmp_path: Path):
    out = tmp_path / "scratch"
    assert main(["finetune", *FINETUNE, "--from-scratch", "--epochs", "2", "--out", str(out)]) == 0
    meta = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["mae"] is None and meta["model"]["name"] == "vit_micro"


def test_model_mismatch_is_a_clear_error(pretrain_run: Path, tmp_path: Path, capsys):
    args = [
        "finetune",
        *FINETUNE,
        "--init",
        str(pretrain_run),
        "--model",
        "vit_cifar",
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model size mismatch between --init" in err and "embed_dim 32 vs 256" in err


def test_explicit_model_size_in_both_stages(tmp_path: Path):
    pre, out = tmp_path / "pre", tmp_path / "sized"
    size = ["--embed-dim", "48", "--depth", "1", "--heads", "4", "--mlp-ratio", "2"]
    assert main(["pretrain", *PRETRAIN, "--epochs", "1", *size, "--out", str(pre)]) == 0
    assert main(["finetune", *FINETUNE, "--init", str(pre), "--epochs", "1", *size, "--out", str(out)]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["embed_dim"], config["depth"], config["num_heads"], config["mlp_ratio"]) == (48, 1, 4, 2.0)
    assert config["patch_size"] is None  # unset: the preset's
    best = out / "checkpoints" / "best"
    model = json.loads((best / "meta.json").read_text())["model"]
    assert (model["embed_dim"], model["depth"], model["num_heads"], model["mlp_ratio"]) == (48, 1, 4, 2.0)
    assert model["patch_size"] == 4 and model["name"] == "vit_micro"
    weights = load_model_weights(best)
    assert weights["patch_embed.proj.weight"].shape[0] == 48
    assert weights["blocks.0.mlp.fc1.weight"].shape == (96, 48)
    assert not any(k.startswith("blocks.1.") for k in weights)


def test_size_flags_that_disagree_with_the_pretrain_run(pretrain_run: Path, tmp_path: Path, capsys):
    args = ["finetune", *FINETUNE, "--init", str(pretrain_run), "--embed-dim", "48", "--depth", "1",
            "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model size mismatch between --init" in err and "embed_dim 32 vs 48, depth 2 vs 1" in err


@pytest.mark.slow
def test_compile_failure_is_a_clear_error(tmp_path: Path, monkeypatch, capsys):
    import torch._dynamo
    import torch._inductor.config

    # Inductor needs a C++ compiler on CPU; point it at one that does not exist.
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    args = [
        "finetune",
        *FINETUNE,
        "--from-scratch",
        "--epochs",
        "1",
        "--compile",
        "--out",
        str(tmp_path / "c"),
    ]
    try:
        assert main(args) == 2
    finally:
        torch._dynamo.reset()
    err = capsys.readouterr().err
    assert (
        "error: --compile failed (run without it)" in err and "C++ compiler" in err and "Traceback" not in err
    )


def test_missing_data_is_the_datasets_message(tmp_path: Path, capsys):
    args = ["pretrain", "--dataset", "cifar10-lt", "--data-root", str(tmp_path / "nowhere"),
            "--model", "vit_cifar", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("livt-train pretrain: error:") and "nowhere" in err and "Traceback" not in err


def _fashion_mnist_pretrain(root: Path, out: Path) -> list[str]:
    """A one-epoch vit_micro MGP run on the Fashion-MNIST files under ``root``."""
    return ["pretrain", "--dataset", "fashion-mnist-lt", "--data-root", str(root), "--imbalance-factor", "10",
            "--model", "vit_micro", "--img-size", "28", "--decoder-embed-dim", "16", "--decoder-depth", "1",
            "--decoder-num-heads", "2", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "32", "--workers", "0", "--quiet",
            "--out", str(out)]  # fmt: skip


def test_every_run_logs_the_folder_it_read(tmp_path: Path, pretrain_run: Path):
    write_fashion_mnist(tmp_path / "data")
    assert main(_fashion_mnist_pretrain(tmp_path / "data", tmp_path / "run")) == 0
    assert f"fashion-mnist-lt train split: 118 images read from {tmp_path / 'data'}" in (
        (tmp_path / "run" / "train.log").read_text()
    )
    assert (
        "synthetic train split: 403 images generated (no files read)"
        in (pretrain_run / "train.log").read_text()
    )


def test_a_data_root_without_the_data_is_an_error_naming_it(tmp_path: Path, monkeypatch, capsys):
    write_fashion_mnist(tmp_path / "system")
    monkeypatch.setattr(idx, "SYSTEM_DIRS", (tmp_path / "system",))  # a system copy it must not read
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert main(_fashion_mnist_pretrain(tmp_path / "nonexistent", tmp_path / "run")) == 2
    line = _error_line(capsys, "pretrain")
    assert f"not found in data_root {tmp_path / 'nonexistent'}" in line


def test_unwritable_output_folder(tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["pretrain", *PRETRAIN, "--out", str(blocker / "run")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_bad_flag_value(tmp_path: Path, capsys):
    assert main(["pretrain", *PRETRAIN, "--mask-ratio", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "mask_ratio must be in (0, 1)" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(pretrain_run: Path, tmp_path: Path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(pretrain_run, run)
    assert main(["pretrain", *PRETRAIN, "--seed", "5", "--out", str(run)]) == 2
    assert "different config (seed: 0 -> 5)" in capsys.readouterr().err
    assert main(["pretrain", *PRETRAIN, "--seed", "5", "--resume", "--out", str(run)]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert (
        main(["pretrain", *PRETRAIN, "--epochs", "1", "--seed", "5", "--overwrite", "--out", str(run)]) == 0
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 5
    assert [r["epoch"] for r in _history(run)] == [0]


def test_config_file_reproduces_a_run(pretrain_run: Path, tmp_path: Path):
    out = tmp_path / "again"
    assert (
        main(["pretrain", "--config", str(pretrain_run / "config.yaml"), "--out", str(out), "--quiet"]) == 0
    )
    again = yaml.safe_load((out / "config.yaml").read_text())
    first = yaml.safe_load((pretrain_run / "config.yaml").read_text())
    assert {**again, "out": None} == {**first, "out": None}
    a = (out / "checkpoints" / "last" / "model.safetensors").read_bytes()
    b = (pretrain_run / "checkpoints" / "last" / "model.safetensors").read_bytes()
    assert a == b  # deterministic on CPU


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


def _error_line(capsys, command: str) -> str:
    """The CLI's error: the last line on stderr, all of it (a message with a newline would be cut)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith(f"livt-train {command}: error: ")
    return line


@pytest.mark.parametrize(("name", "how"), [("model.safetensors", "zeroed"), ("state.pt", "truncated")])
def test_resume_refuses_a_damaged_checkpoint_in_one_line(
    finetune_run: Path, tmp_path: Path, capsys, name, how
):
    run = _copy_run(finetune_run, tmp_path)
    damage(run / "checkpoints" / "last" / name, how)
    assert main(["finetune", "--resume", "--quiet", "--out", str(run)]) == 2
    line = _error_line(capsys, "finetune")
    assert str(run / "checkpoints" / "last" / name) in line
    assert "checkpoints/best (epoch" in line and "no resume state" in line


def test_init_refuses_a_damaged_pretrain_checkpoint_in_one_line(pretrain_run: Path, tmp_path: Path, capsys):
    pre = _copy_run(pretrain_run, tmp_path)
    damage(pre / "checkpoints" / "last" / "model.safetensors", "zeroed")
    args = ["finetune", *FINETUNE, "--init", str(pre), "--out", str(tmp_path / "ft")]
    assert main(args) == 2
    line = _error_line(capsys, "finetune")
    assert str(pre / "checkpoints" / "last" / "model.safetensors") in line
    assert "no other checkpoint of this run is intact" in line


def test_evaluate_refuses_a_damaged_best_and_evaluates_last_on_request(
    finetune_run: Path, tmp_path: Path, capsys
):
    run = _copy_run(finetune_run, tmp_path)
    damage(run / "checkpoints" / "best" / "model.safetensors", "truncated")
    args = ["evaluate", "--run", str(run), "--workers", "0", "--quiet"]
    assert main(args) == 2
    line = _error_line(capsys, "evaluate")
    assert str(run / "checkpoints" / "best" / "model.safetensors") in line
    assert "checkpoints/last (epoch 3) is intact: use it instead (--checkpoint last)" in line
    assert main([*args, "--checkpoint", "last"]) == 0
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["checkpoint"].endswith("last")


def test_a_failed_start_leaves_no_folder_and_default_folders_never_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", *FINETUNE, "--from-scratch", "--loss", "foo"]) == 2
    assert "unknown loss 'foo'" in _error_line(capsys, "finetune")
    assert main(["pretrain", *PRETRAIN, "--model", "vit_nope"]) == 2
    assert not (tmp_path / "runs").exists()  # neither left a run folder behind
    for expected in ("synthetic", "synthetic2"):
        assert main(["pretrain", *PRETRAIN, "--epochs", "1"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"wrote runs/pretrain/{expected}"
        assert out[-1] == f"  livt-train finetune --recipe synthetic-tiny --init runs/pretrain/{expected}"
        saved = yaml.safe_load((tmp_path / "runs" / "pretrain" / expected / "config.yaml").read_text())
        assert saved["out"] == f"runs/pretrain/{expected}"
    for flag in ("--resume", "--overwrite"):
        assert main(["pretrain", *PRETRAIN, flag]) == 2
        assert f"{flag} needs --out RUN_DIR" in _error_line(capsys, "pretrain")


def test_a_run_that_never_saved_a_checkpoint_is_replaced(pretrain_run: Path, tmp_path: Path, caplog):
    run = tmp_path / "failed"
    run.mkdir()
    shutil.copy(pretrain_run / "config.yaml", run / "config.yaml")  # what a run dying in epoch 1 leaves
    (run / "train.log").write_text("the old log\n")
    assert main(["pretrain", *PRETRAIN, "--epochs", "1", "--seed", "4", "--out", str(run)]) == 0
    assert "never saved a checkpoint: it is replaced" in (run / "train.log").read_text()
    assert "the old log" not in (run / "train.log").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 4


def test_version_list_and_print_config(tmp_path, monkeypatch, capsys):
    from livt import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"livt-train {__version__}"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{what}:\n" in out for what in ("recipes", "models", "datasets", "losses"))
    assert "  fashion-mnist-lt         fashion-mnist-lt, vit_fmnist" in out
    assert "  vit_fmnist               28 px, patch 4, 128 wide, 4 blocks" in out
    assert main(["list", "losses"]) == 0
    assert capsys.readouterr().out.split() == ["ce", "bce", "bal-ce", "bal-bce", "cb-ce", "ldam", "focal"]
    monkeypatch.chdir(tmp_path)
    assert (
        main(["finetune", "--recipe", "synthetic-tiny", "--from-scratch", "--tau", "0.5", "--print-config"])
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["stage"] == "finetune" and printed["tau"] == 0.5 and printed["many"] == 60
    assert printed["out"] == "runs/finetune/synthetic" and not (tmp_path / "runs").exists()


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--min-steps-per-epoch MIN_STEPS_PER_EPOCH" in out and "(default: 10)" in out
    assert "{auto,test,val}" in out and "{none,tensorboard,mlflow,wandb}" in out


def test_tensorboard_gets_the_scalars_of_every_epoch(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert main(["finetune", *FINETUNE, "--from-scratch", "--epochs", "2", "--logger", "tensorboard",
                 "--out", str(out)]) == 0  # fmt: skip
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/balanced_acc", "test/balanced_acc"} <= tags
    assert [e.step for e in events.Scalars("val/balanced_acc")] == [1, 2]
    history = _history(out)
    assert events.Scalars("train/loss")[1].value == pytest.approx(history[1]["train_loss"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert events.Scalars("test/balanced_acc")[0].value == pytest.approx(metrics["balanced_acc"])


def test_a_missing_tracker_library_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import importlib

    real_import = importlib.import_module

    def no_mlflow(name: str, *args):
        if name.split(".")[0] == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_mlflow)
    assert main(["pretrain", *PRETRAIN, "--logger", "mlflow", "--out", str(tmp_path / "r")]) == 2
    assert "--logger mlflow needs the mlflow package: pip install mlflow" in _error_line(capsys, "pretrain")
    assert not (tmp_path / "r").exists()


def test_mlflow_gets_the_params_and_scalars_where_installed(tmp_path: Path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "ml"
    assert main(["pretrain", *PRETRAIN, "--logger", "mlflow", "--out", str(out)]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("livt-pretrain").experiment_id])
    assert run.info.run_name == "ml" and run.data.params["dataset"] == "synthetic"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]


def test_wandb_runs_offline_in_the_run_folder_where_installed(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "wb"
    assert main(["pretrain", *PRETRAIN, "--logger", "wandb", "--out", str(out)]) == 0
    (offline,) = (out / "wandb").glob("offline-run-*")  # nothing sent anywhere
    assert any(offline.glob("*.wandb"))


def test_an_overwrite_that_fails_to_start_keeps_the_old_run(pretrain_run: Path, tmp_path: Path, capsys):
    run = _copy_run(pretrain_run, tmp_path)
    assert main(["pretrain", *PRETRAIN, "--overwrite", "--model", "vit_nope", "--out", str(run)]) == 2
    assert "unknown ViT preset 'vit_nope'" in _error_line(capsys, "pretrain")
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (run / "train.log").read_text() == (pretrain_run / "train.log").read_text()
