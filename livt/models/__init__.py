"""ViT classifier (timm) and the masked autoencoder of LiVT's MGP stage."""

from livt.models.mae import MAEConfig, MaskedAutoencoder
from livt.models.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed
from livt.models.registry import list_presets, vit_config
from livt.models.vit import ViTConfig, create_classifier

__all__ = [
    "MAEConfig",
    "MaskedAutoencoder",
    "ViTConfig",
    "create_classifier",
    "get_2d_sincos_pos_embed",
    "interpolate_pos_embed",
    "list_presets",
    "vit_config",
]
