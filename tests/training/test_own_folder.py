"""A user's own image folder with a recipe made for another data set (issue 13, part 0).

The folder is RGB, 36 px and has no test split; the fashion-mnist-lt recipe is for grey 28 px
images with a val split held out of the training images. The commands carry nothing beyond
``--recipe``, ``--dataset`` and ``--data-root`` (and finetune's ``--init``), and no ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from livt.data.longtail import longtail_counts
from livt.training import config_sources
from livt.training.cli import main

SIZE = 36


def write_folder(root: Path, *, head: int = 40, imbalance: int = 10, val: int = 4) -> Path:
    """10 long-tailed classes of RGB noise, each tinted its own colour; ``train/`` and ``val/`` only."""
    rng = np.random.default_rng(0)
    tints = rng.uniform(0, 255, (10, 3))
    for split, counts in (("train", longtail_counts(head, 10, imbalance)), ("val", [val] * 10)):
        for c, n in enumerate(counts):
            folder = root / split / f"kind_{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(tints[c] + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def short_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real fashion-mnist-lt recipe with a couple of epochs per stage (and no worker processes)."""
    values = yaml.safe_load((config_sources.RECIPE_DIR / "fashion-mnist-lt.yaml").read_text())
    values["workers"] = 0
    values["pretrain"].update(epochs=2, warmup_epochs=1)
    values["finetune"].update(epochs=2, warmup_epochs=1)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "fashion-mnist-lt.yaml").write_text(yaml.safe_dump(values))
    monkeypatch.setattr(config_sources, "RECIPE_DIR", recipes)


def _train_on_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    root = write_folder(tmp_path / "my-pets")
    monkeypatch.chdir(tmp_path)
    user = ["--recipe", "fashion-mnist-lt", "--dataset", "imagefolder", "--data-root", str(root)]
    assert main(["pretrain", *user]) == 0
    pre = Path("runs/pretrain/my-pets")
    assert f"livt-train finetune {' '.join(user)} --init {pre}" in capsys.readouterr().out
    assert main(["finetune", *user, "--init", str(pre)]) == 0
    return Path("runs/finetune/my-pets")


def _check_run(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_samples"] == 40
    assert set(metrics["classes"]) == {f"kind_{c}" for c in range(10)}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    options = cfg["dataset_options"]
    # the recipe's options for Fashion-MNIST are gone; what the images are was read from them
    assert "val_per_class" not in options and "imbalance_factor" not in options
    assert (options["channels"], options["image_size"]) == (3, SIZE) and len(options["mean"]) == 3
    meta = json.loads((run / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["preprocess"]["channels"] == 3 and meta["preprocess"]["img_size"] == SIZE
    assert meta["preprocess"]["mean"] == options["mean"] and meta["model"]["in_chans"] == 3
    log = (run / "train.log").read_text()
    assert "dropped the dataset options of fashion-mnist-lt (imbalance_factor=100, val_per_class=300)" in log
    assert "batch size 256 -> 15" in log  # 159 training images, 10 steps an epoch
    assert f"effective batch 15, lr {2e-3 * 15 / 256:.3g}" in log  # the recipe's blr, by the linear rule
    assert "no test split" in log


def test_fashion_mnist_recipe_on_an_rgb_folder_without_test(tmp_path, monkeypatch, capsys, short_recipe):
    _check_run(_train_on_own_folder(tmp_path, monkeypatch, capsys))


@pytest.mark.slow
def test_the_whole_fashion_mnist_recipe_on_an_rgb_folder(tmp_path, monkeypatch, capsys):
    _check_run(_train_on_own_folder(tmp_path, monkeypatch, capsys))


def test_a_test_split_asked_for_and_missing_stops_the_run_before_it_starts(tmp_path, capsys, short_recipe):
    root = write_folder(tmp_path / "my-pets")
    out = tmp_path / "run"
    args = ["finetune", "--recipe", "fashion-mnist-lt", "--dataset", "imagefolder", "--data-root", str(root),
            "--from-scratch", "--test-split", "test", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    assert "image folder split 'test' not found" in capsys.readouterr().err
    assert not out.exists()
