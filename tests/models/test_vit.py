import dataclasses

import numpy as np
import pytest
import torch
from timm.layers import DropPath

from livt.models import (
    MAEConfig,
    ViTConfig,
    create_classifier,
    get_2d_sincos_pos_embed,
    vit_config,
)

MICRO = dict(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=2)
SMALL_MAE = MAEConfig(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_classifier_output_shape(in_chans):
    model = create_classifier(vit_config("vit_micro", in_chans=in_chans, num_classes=7)).eval()
    assert model(torch.randn(2, in_chans, 16, 16)).shape == (2, 7)


def test_features_head_split_pools_patch_tokens_only():
    torch.manual_seed(0)
    model = create_classifier(ViTConfig(**MICRO)).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (3, 1 + 16, 32)
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(pooled, features[:, 1:].mean(dim=1))  # class token left out
        torch.testing.assert_close(model.forward_head(features), model.head(pooled))
        torch.testing.assert_close(model(x), model.forward_head(features))


def test_classifier_structure():
    model = create_classifier(dataclasses.replace(ViTConfig(**MICRO), drop_path_rate=0.2))
    assert isinstance(model.fc_norm, torch.nn.Identity)
    assert isinstance(model.norm, torch.nn.LayerNorm)
    assert model.cls_token is not None and model.global_pool == "avg"
    assert isinstance(model.blocks[-1].drop_path1, DropPath)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    expected = get_2d_sincos_pos_embed(32, 4, cls_token=True)
    np.testing.assert_allclose(model.pos_embed.detach()[0].numpy(), expected)
    assert model.pos_embed.requires_grad


def test_headless_classifier():
    model = create_classifier(dataclasses.replace(ViTConfig(**MICRO), num_classes=0)).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    assert not any(k.startswith("head.") for k in model.state_dict())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"img_size": 18}, "divisible by patch_size"),
        ({"num_heads": 3}, "divisible by num_heads"),
        ({"embed_dim": 34, "num_heads": 2}, "divisible by 4"),
        ({"depth": 0}, "depth must be a positive int"),
        ({"patch_size": 4.0}, "patch_size must be a positive int"),
        ({"in_chans": True}, "in_chans must be a positive int"),
        ({"num_classes": -1}, "num_classes must be an int >= 0"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**MICRO, **change})


def test_config_dict_round_trip():
    cfg = ViTConfig(**MICRO, mlp_ratio=2.0, name="x")
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.grid_size == 4 and cfg.num_patches == 16
    with pytest.raises(ValueError, match=r"unknown ViTConfig field\(s\) \['width'\]"):
        ViTConfig.from_dict({**cfg.to_dict(), "width": 3})
