"""The ViT classifier: timm's ``VisionTransformer`` with a global-average-pooled linear head.

LiVT fine-tunes the MGP encoder with average pooling over patch tokens (the class token is kept in
the sequence but not in the head path). ``fc_norm=False`` keeps timm's final token ``norm`` in the
trunk, so the classifier has exactly the encoder's keys plus ``head.*``: an MGP encoder loads with
only the head missing.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from timm.models.vision_transformer import VisionTransformer

from livt.models.pos_embed import get_2d_sincos_pos_embed

_C = TypeVar("_C")


def check_positive_ints(config: object, names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is not a positive int on ``config``."""
    kind = type(config).__name__
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{kind}.{name} must be a positive int, got {value!r}")


def config_from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
    """Build the config dataclass ``cls`` from plain data, naming any key it does not know."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT classifier; ``num_classes=0`` builds a headless trunk (the MAE encoder)."""

    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    name: str = "custom"

    def __post_init__(self) -> None:
        check_positive_ints(self, ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"))
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 0
        ):
            raise ValueError(f"ViTConfig.num_classes must be an int >= 0, got {self.num_classes!r}")
        if self.img_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"ViTConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.embed_dim % 4:
            raise ValueError(
                f"ViTConfig.embed_dim ({self.embed_dim}) must be divisible by 4 "
                "(the 2-D sin-cos position embedding splits it into sin/cos halves per axis)"
            )
        if not isinstance(self.mlp_ratio, numbers.Real) or self.mlp_ratio <= 0:
            raise ValueError(f"ViTConfig.mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if not isinstance(self.drop_path_rate, numbers.Real) or not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"ViTConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")

    @property
    def grid_size(self) -> int:
        """Patches per image side."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (without the class token)."""
        return self.grid_size**2

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``meta.json`` / ONNX metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return config_from_dict(cls, data)


def create_classifier(cfg: ViTConfig) -> VisionTransformer:
    """Build the timm ViT for ``cfg``: class token, average-pooled head, final ``norm`` kept.

    Weights use timm's default init, except ``pos_embed``, which starts as the fixed 2-D sin-cos
    table (it stays learnable here; the MAE freezes it).
    """
    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool="avg",
        fc_norm=False,
        class_token=True,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=cfg.drop_path_rate,
    )
    sincos = get_2d_sincos_pos_embed(cfg.embed_dim, cfg.grid_size, cls_token=True)
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(sincos).unsqueeze(0))
    return model
