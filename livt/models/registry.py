"""Named ViT presets: the timm ImageNet sizes plus small models for small images.

Sizes of the small presets:

- ``vit_fmnist``: 28 px grey, patch 4 (7 x 7 = 49 tokens), 128 wide, 4 blocks, 4 heads (0.8 M
  parameters). Sized so that MGP + BFT on Fashion-MNIST-LT fit in minutes on a few CPU cores.
- ``vit_cifar``: 32 px RGB, patch 4 (64 tokens), 256 wide, 7 blocks, 4 heads, MLP ratio 2: the
  ViT-Lite-7/4 shape of Hassani et al. ("Escaping the Big Data Paradigm with Compact
  Transformers"), a ViT that trains well from scratch on CIFAR.
- ``vit_micro``: 16 px RGB, patch 4, 32 wide, 2 blocks, 2 heads: for tests only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from livt.models.vit import ViTConfig

_PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny_patch16_224": dict(
        img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192, depth=12, num_heads=3
    ),
    "vit_small_patch16_224": dict(
        img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=384, depth=12, num_heads=6
    ),
    "vit_base_patch16_224": dict(
        img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12, num_heads=12
    ),
    "vit_large_patch16_224": dict(
        img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=1024, depth=24, num_heads=16
    ),
    "vit_fmnist": dict(
        img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=128, depth=4, num_heads=4
    ),
    "vit_cifar": dict(
        img_size=32,
        patch_size=4,
        in_chans=3,
        num_classes=10,
        embed_dim=256,
        depth=7,
        num_heads=4,
        mlp_ratio=2.0,
    ),
    "vit_micro": dict(
        img_size=16, patch_size=4, in_chans=3, num_classes=10, embed_dim=32, depth=2, num_heads=2
    ),
}

# Everything but the name: a preset keeps its name whatever is overridden.
_OVERRIDABLE = tuple(f.name for f in dataclasses.fields(ViTConfig) if f.name != "name")


def list_presets() -> list[str]:
    """Names accepted by :func:`vit_config`."""
    return sorted(_PRESETS)


def vit_config(name: str, /, **overrides: Any) -> ViTConfig:
    """Return the preset ``name`` with ``overrides`` applied.

    Overrides set to ``None`` are ignored (as in ``timm.create_model``), so a CLI can pass its
    optional arguments straight through.

    Raises:
        ValueError: unknown preset name or override key, or an invalid resulting config.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown ViT preset {name!r}; known presets: {list_presets()}")
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for vit_config; allowed: {list(_OVERRIDABLE)}")
    fields = {**_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return ViTConfig(**fields, name=name)
