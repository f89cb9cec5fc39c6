"""``--init`` from the checkpoints users download: written here in each release's format, nothing fetched."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv, save_for_hf

from livt.artifact import sha256_file
from livt.models import MAEConfig, MaskedAutoencoder, ViTConfig, create_classifier, interpolate_pos_embed
from livt.training.checkpoint import CheckpointError, load_model_weights
from livt.training.cli import main
from livt.training.init_weights import load_init, read_init
from tests.training.conftest import FINETUNE, PRETRAIN

HEAD = frozenset({"head.weight", "head.bias"})
# timm's ViT-Ti/16 at 224 px, two blocks: a real release's shape, small enough for a test.
TIMM_ARCH = "vit_tiny_patch16_224"
GREY_32 = ViTConfig(
    img_size=32, patch_size=16, in_chans=1, num_classes=5, embed_dim=192, depth=2, num_heads=3
)


def _timm_vit(arch: str = TIMM_ARCH, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, depth=2, **kwargs)


def _assert_encoder_equals(model: torch.nn.Module, source: dict[str, torch.Tensor], grid: int = 2) -> None:
    """``model`` holds ``source``'s encoder, resampled to ``grid`` and adapted to its channels."""
    target = model.state_dict()
    for key, value in source.items():
        if key.startswith(("head", "fc_norm")) or key == "dist_token":
            continue
        if key == "pos_embed":
            value = interpolate_pos_embed(value, grid)
        elif key == "patch_embed.proj.weight":
            value = adapt_input_conv(target[key].shape[1], value)
        torch.testing.assert_close(target[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "vit.pth"])
def test_timm_state_dict_file_initialises_a_grey_32px_classifier(tmp_path: Path, name: str):
    source = _timm_vit().state_dict()
    path = tmp_path / name
    save_file(source, str(path)) if name.endswith(".safetensors") else torch.save(source, path)
    init = read_init(path)
    assert init.format == "timm" and init.sha256 == sha256_file(path)
    assert (init.vit.img_size, init.vit.patch_size, init.vit.in_chans) == (224, 16, 3)
    assert (init.vit.embed_dim, init.vit.depth, init.vit.num_heads, init.vit.mlp_ratio) == (192, 2, 3, 4.0)
    model = create_classifier(GREY_32)
    record = load_init(model, init, new=HEAD)
    _assert_encoder_equals(model, source)
    assert record["format"] == "timm" and record["path"] == str(path)
    assert record["resampled"] == ["pos_embed"] and record["adapted"] == ["patch_embed.proj.weight"]
    assert record["dropped"] == ["head.bias", "head.weight"] and record["new"] == ["head.bias", "head.weight"]
    assert record["guessed"] == ["num_heads"]  # a bare file: 64 channels a head
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("safe", [True, False])
def test_timm_hub_folder_and_cache_entry(tmp_path: Path, safe: bool):
    vit = _timm_vit(num_heads=4)  # not 64 a head: config.json's model_args say so
    folder = tmp_path / "models--timm--vit_tiny" / "snapshots" / "0123abc"
    save_for_hf(vit, str(folder), safe_serialization=safe)
    (tmp_path / "models--timm--vit_tiny" / "refs").mkdir()
    (tmp_path / "models--timm--vit_tiny" / "refs" / "main").write_text("0123abc")
    for where in (folder, tmp_path / "models--timm--vit_tiny"):
        init = read_init(where)
        assert init.format == "timm" and init.guessed == [] and init.vit.num_heads == 4
        assert init.vit.name == TIMM_ARCH
        assert init.path.name == ("model.safetensors" if safe else "pytorch_model.bin")
    model = create_classifier(ViTConfig(**{**GREY_32.to_dict(), "num_heads": 4}))
    load_init(model, init, new=HEAD)
    _assert_encoder_equals(model, vit.state_dict())


def test_timm_hub_config_without_model_args_takes_the_heads_from_its_architecture(tmp_path: Path):
    # What the hub holds for timm's own releases: the architecture, no model_args.
    save_file(_timm_vit().state_dict(), str(tmp_path / "model.safetensors"))
    config = {"architecture": TIMM_ARCH, "num_classes": 1000, "pretrained_cfg": {"tag": "augreg_in21k"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    init = read_init(tmp_path)
    assert init.vit.num_heads == 3 and init.guessed == [] and init.vit.name == TIMM_ARCH


def _mae_release(tmp_path: Path, *, decoder: bool) -> tuple[Path, dict[str, torch.Tensor]]:
    """An MAE ``.pth`` as facebookresearch/mae saves it: ``{"model": state_dict}``, encoder keys at the top."""
    torch.manual_seed(1)
    vit = ViTConfig(img_size=32, patch_size=4, in_chans=3, num_classes=0, embed_dim=64, depth=2, num_heads=1)
    mae = MaskedAutoencoder(vit, MAEConfig(decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2))
    state = {k.removeprefix("encoder."): v for k, v in mae.state_dict().items()}
    if not decoder:
        state = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
    path = tmp_path / "mae_pretrain_vit.pth"
    torch.save({"model": state}, path)
    return path, state


def test_mae_release_continues_mgp_with_its_decoder_and_finetunes_without_it(tmp_path: Path):
    path, state = _mae_release(tmp_path, decoder=True)
    init = read_init(path)
    assert init.format == "mae" and init.mae is not None
    assert (init.mae.decoder_embed_dim, init.mae.decoder_depth, init.mae.decoder_num_heads) == (64, 1, 2)
    assert init.guessed == ["num_heads"] and init.vit.num_heads == 1
    mae = MaskedAutoencoder(init.vit, init.mae)
    record = load_init(mae, init)
    assert record["new"] == [] and record["resampled"] == [] and record["dropped"] == []
    for key, value in mae.state_dict().items():
        torch.testing.assert_close(value, state[key.removeprefix("encoder.")], rtol=0, atol=0, msg=key)
    classifier = create_classifier(ViTConfig(**{**init.vit.to_dict(), "num_classes": 3}))
    record = load_init(classifier, init, new=HEAD)
    assert "decoder_embed.weight" in record["dropped"] and "mask_token" in record["dropped"]
    _assert_encoder_equals(
        classifier, {k: v for k, v in state.items() if not k.startswith(("dec", "mask"))}, 8
    )


def test_mae_release_at_another_size_and_channel_count_resamples_the_grids(tmp_path: Path):
    path, state = _mae_release(tmp_path, decoder=True)
    init = read_init(path)
    grey16 = ViTConfig(**{**init.vit.to_dict(), "img_size": 16, "in_chans": 1})
    mae = MaskedAutoencoder(grey16, init.mae)
    record = load_init(mae, init)
    assert record["resampled"] == ["encoder.pos_embed", "decoder_pos_embed"]
    assert record["adapted"] == ["encoder.patch_embed.proj.weight"]
    assert record["new"] == ["decoder_pred.bias", "decoder_pred.weight"]  # it predicts grey pixels now
    torch.testing.assert_close(mae.decoder_pos_embed, interpolate_pos_embed(state["decoder_pos_embed"], 4))
    torch.testing.assert_close(mae.decoder_blocks[0].mlp.fc1.weight, state["decoder_blocks.0.mlp.fc1.weight"])


def test_mae_release_without_decoder_gives_pretrain_a_fresh_one(tmp_path: Path):
    path, state = _mae_release(tmp_path, decoder=False)
    init = read_init(path)
    assert init.format == "mae" and init.mae is None
    mae = MaskedAutoencoder(init.vit, MAEConfig(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2))
    record = load_init(mae, init)
    assert "decoder_embed.weight" in record["new"] and "mask_token" in record["new"]
    torch.testing.assert_close(mae.encoder.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])


@pytest.mark.parametrize("arch", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_deit_release(tmp_path: Path, arch: str):
    source = _timm_vit(arch).state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save({"model": source}, path)  # DeiT's release: the state dict under "model"
    init = read_init(path)
    assert init.format == "deit" and init.vit.depth == 2
    model = create_classifier(ViTConfig(**{**GREY_32.to_dict(), "img_size": 224, "in_chans": 3}))
    record = load_init(model, init, new=HEAD)
    expected = dict(source)
    if "dist_token" in source:  # the distillation token's position row goes with it
        expected["pos_embed"] = torch.cat([source["pos_embed"][:, :1], source["pos_embed"][:, 2:]], dim=1)
        assert {"dist_token", "head_dist.weight", "head_dist.bias"} <= set(record["dropped"])
    _assert_encoder_equals(model, expected, grid=14)


def test_wrong_checkpoints_fail_in_one_line_naming_the_file_and_keys(tmp_path: Path):
    avg = tmp_path / "avg.safetensors"  # timm's avg-pool ViT normalises after pooling: another model
    save_file(_timm_vit(global_pool="avg").state_dict(), str(avg))
    with pytest.raises(CheckpointError) as exc:
        read_init(avg)
    assert str(exc.value) == f"{avg}: keys no livt ViT takes: [fc_norm.bias, fc_norm.weight]"

    resnet = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(8, 3, 7, 7)}}, resnet)
    with pytest.raises(CheckpointError, match=r"resnet\.pth: keys no livt ViT takes: \[conv1\.weight\]"):
        read_init(resnet)

    deeper = create_classifier(ViTConfig(**{**GREY_32.to_dict(), "depth": 3}))
    timm_file = tmp_path / "vit.safetensors"
    save_file(_timm_vit().state_dict(), str(timm_file))
    with pytest.raises(CheckpointError) as exc:
        load_init(deeper, read_init(timm_file), new=HEAD)
    line = str(exc.value)
    assert "\n" not in line and str(timm_file) in line and "missing [blocks.2.attn.proj.bias, " in line

    pickled = tmp_path / "training_state.pth"  # a training checkpoint with pickled objects in it
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match=r"training_state\.pth cannot be read with torch\.load\("):
        read_init(pickled)

    text = tmp_path / "notes.bin"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.bin cannot be read with torch\.load"):
        read_init(text)
    with pytest.raises(CheckpointError, match="neither a livt run folder"):
        read_init(tmp_path)


def test_finetune_cli_from_a_224px_rgb_timm_file_on_32px_grey_data(tmp_path: Path, capsys):
    vit = _timm_vit()
    path = tmp_path / "model.safetensors"
    save_file(vit.state_dict(), str(path))
    out = tmp_path / "ft"
    grey = ["--data-opt", "channels=1", "--epochs", "1"]
    assert main(["finetune", *FINETUNE, *grey, "--init", str(path), "--out", str(out)]) == 0
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["model"]["embed_dim"] == 192 and meta["model"]["in_chans"] == 1
    assert meta["model"]["img_size"] == 32 and meta["model"]["patch_size"] == 16
    assert meta["init"]["sha256"] == sha256_file(path) and meta["init"]["format"] == "timm"
    assert meta["init"]["adapted"] == ["patch_embed.proj.weight"] and meta["init"]["resampled"] == [
        "pos_embed"
    ]
    log = (out / "train.log").read_text()
    assert f"init from {path} (timm, sha256 {meta['init']['sha256'][:12]})" in log


def test_pretrain_cli_continues_from_an_mae_release(tmp_path: Path):
    path, state = _mae_release(tmp_path, decoder=True)
    out = tmp_path / "pre"
    assert main(["pretrain", *PRETRAIN, "--epochs", "1", "--init", str(path), "--out", str(out)]) == 0
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["init"]["format"] == "mae" and meta["init"]["new"] == []
    assert meta["mae"]["decoder_embed_dim"] == 64 and meta["model"]["embed_dim"] == 64
    weights = load_model_weights(out / "checkpoints" / "last")
    assert weights["decoder_pred.weight"].shape == state["decoder_pred.weight"].shape
