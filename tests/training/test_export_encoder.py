"""``livt-train export-encoder``: a run's encoder as timm and MAE write theirs, read back by ``--init`` and timm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from livt.models import MaskedAutoencoder, ViTConfig, create_classifier
from livt.training.checkpoint import find_checkpoint, load_checkpoint_meta, load_model_weights
from livt.training.cli import main
from livt.training.init_weights import load_init, read_init
from tests.training.conftest import FINETUNE


def test_timm_export_fine_tunes_to_the_same_weights_as_the_run_folder(
    pretrain_run: Path, tmp_path: Path, capsys
):
    folder = tmp_path / "encoder-timm"
    assert main(["export-encoder", str(pretrain_run), "--format", "timm", "--out", str(folder)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {folder}\n")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    runs = {}
    for name, init in (("from_run", pretrain_run), ("from_timm", folder)):
        runs[name] = tmp_path / name
        args = ["finetune", *FINETUNE, "--epochs", "1", "--init", str(init), "--out", str(runs[name])]
        assert main(args) == 0
    a, b = (load_model_weights(find_checkpoint(runs[n], "last")) for n in ("from_run", "from_timm"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    meta = load_checkpoint_meta(find_checkpoint(runs["from_timm"], "last"))
    assert meta["init"]["format"] == "timm" and meta["init"]["path"] == str(folder / "model.safetensors")


def test_timm_builds_the_exported_encoder_and_computes_the_same_features(pretrain_run: Path, tmp_path: Path):
    folder = tmp_path / "enc"
    assert main(["export-encoder", str(pretrain_run), "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model(
        config["architecture"], pretrained=True,
        pretrained_cfg_overlay={"file": str(folder / "model.safetensors")}, **config["model_args"],
    ).eval()  # fmt: skip
    meta = load_checkpoint_meta(find_checkpoint(pretrain_run, "last"))
    assert config["pretrained_cfg"]["mean"] == meta["preprocess"]["mean"]
    ours = create_classifier(ViTConfig.from_dict(meta["model"])).eval()
    load_init(ours, read_init(pretrain_run))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images), ours(images))


def test_mae_export_reads_back_to_the_run_weights_with_its_decoder(pretrain_run: Path, tmp_path: Path):
    out = tmp_path / "mae.pth"
    assert main(["export-encoder", str(pretrain_run), "--format", "mae", "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert "cls_token" in saved["model"] and "decoder_embed.weight" in saved["model"]  # MAE's own key names
    init = read_init(out)
    source = read_init(pretrain_run)
    assert init.format == "mae" and init.guessed == []
    assert (init.vit, init.mae) == (source.vit, source.mae)
    mae = MaskedAutoencoder(init.vit, init.mae)
    assert load_init(mae, init)["new"] == []
    weights = load_model_weights(find_checkpoint(pretrain_run, "last"))
    for key, value in mae.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0, msg=key)


def test_export_encoder_of_a_finetune_run_drops_the_head(finetune_run: Path, tmp_path: Path):
    out = tmp_path / "ft.pth"
    assert main(["export-encoder", str(finetune_run), "--format", "mae", "--out", str(out)]) == 0
    keys = torch.load(out, weights_only=True)["model"].keys()
    assert "norm.weight" in keys and not any(k.startswith("head.") for k in keys)


def test_export_encoder_of_a_missing_run_is_one_line(tmp_path: Path, capsys):
    assert main(["export-encoder", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"livt-train export-encoder: error: run folder {tmp_path / 'nope'} does not exist"
    )


@pytest.fixture(autouse=True)
def _no_stray_outputs(pretrain_run: Path):
    yield
    assert not (pretrain_run / "export").exists()  # every test wrote to its own --out
