import pytest

from livt.models import ViTConfig, create_classifier, list_presets, vit_config

EXPECTED = {
    "vit_tiny_patch16_224": (224, 16, 3, 192, 12, 3),
    "vit_small_patch16_224": (224, 16, 3, 384, 12, 6),
    "vit_base_patch16_224": (224, 16, 3, 768, 12, 12),
    "vit_large_patch16_224": (224, 16, 3, 1024, 24, 16),
    "vit_fmnist": (28, 4, 1, 128, 4, 4),
    "vit_cifar": (32, 4, 3, 256, 7, 4),
    "vit_micro": (16, 4, 3, 32, 2, 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_presets(name):
    cfg = vit_config(name)
    assert isinstance(cfg, ViTConfig)
    assert cfg.name == name
    assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.depth, cfg.num_heads) == EXPECTED[
        name
    ]


def test_list_presets():
    assert list_presets() == sorted(EXPECTED)


def test_unknown_name_lists_presets():
    with pytest.raises(ValueError, match=r"unknown ViT preset 'vit_huge'.*vit_fmnist"):
        vit_config("vit_huge")


def test_overrides_apply_and_none_is_ignored():
    cfg = vit_config("vit_fmnist", num_classes=7, img_size=32, drop_path_rate=0.1, depth=None)
    assert (cfg.num_classes, cfg.img_size, cfg.drop_path_rate, cfg.depth) == (7, 32, 0.1, 4)
    assert cfg.name == "vit_fmnist"
    assert create_classifier(vit_config("vit_micro", in_chans=1)).patch_embed.proj.in_channels == 1


def test_unknown_override():
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['embed'\]"):
        vit_config("vit_micro", embed=64)
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['name'\]"):
        vit_config("vit_micro", name="other")


def test_invalid_override_is_validated():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        vit_config("vit_fmnist", patch_size=5)
