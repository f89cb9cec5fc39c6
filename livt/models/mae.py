"""Masked autoencoder for LiVT's masked generative pretraining (MGP) stage.

The encoder is the very module the classifier uses (``create_classifier`` without a head), run on
the visible patches only; a light decoder sees the encoded tokens plus a shared mask token at
every removed position and predicts the pixels of every patch. The loss is the mean squared error
over the removed patches, against per-patch normalised pixels when ``norm_pix_loss`` is on.

Weight init follows MAE rather than timm: xavier-uniform for every ``Linear`` (the patch
projection included, viewed as a ``Linear``), zero biases, unit/zero ``LayerNorm``, normal(0.02)
class and mask tokens, fixed sin-cos position embeddings in encoder and decoder.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import nn

from livt.models.pos_embed import get_2d_sincos_pos_embed
from livt.models.vit import ViTConfig, check_positive_ints, config_from_dict, create_classifier

_NORM_PIX_EPS = 1e-6


@dataclass(frozen=True)
class MAEConfig:
    """Decoder shape and masking of the MGP stage (defaults: MAE's ViT-B decoder)."""

    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    def __post_init__(self) -> None:
        check_positive_ints(self, ("decoder_embed_dim", "decoder_depth", "decoder_num_heads"))
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"MAEConfig.decoder_embed_dim ({self.decoder_embed_dim}) must be divisible by "
                f"decoder_num_heads ({self.decoder_num_heads})"
            )
        if self.decoder_embed_dim % 4:
            raise ValueError(
                f"MAEConfig.decoder_embed_dim ({self.decoder_embed_dim}) must be divisible by 4 "
                "(2-D sin-cos position embedding)"
            )
        _check_mask_ratio(self.mask_ratio)
        if not isinstance(self.norm_pix_loss, bool):
            raise ValueError(f"MAEConfig.norm_pix_loss must be a bool, got {self.norm_pix_loss!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``meta.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return config_from_dict(cls, data)


def _check_mask_ratio(mask_ratio: float) -> None:
    # 0 would leave no patch to score (loss 0/0); 1 would leave the encoder nothing to see.
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, numbers.Real) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be a number in (0, 1), got {mask_ratio!r}")


class MaskedAutoencoder(nn.Module):
    """MAE with a timm ViT encoder (``self.encoder``) and a light Transformer decoder."""

    def __init__(self, vit: ViTConfig, mae: MAEConfig | None = None) -> None:
        super().__init__()
        self.vit_config = vit
        self.mae_config = mae = mae or MAEConfig()
        self.patch_size = vit.patch_size
        self.in_chans = vit.in_chans

        self.encoder = create_classifier(dataclasses.replace(vit, num_classes=0))
        self.encoder.pos_embed.requires_grad_(False)

        dim = mae.decoder_embed_dim
        self.decoder_embed = nn.Linear(vit.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        decoder_pos = get_2d_sincos_pos_embed(dim, vit.grid_size, cls_token=True)
        self.decoder_pos_embed = nn.Parameter(torch.from_numpy(decoder_pos).unsqueeze(0), requires_grad=False)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(
                    dim, mae.decoder_num_heads, mlp_ratio=vit.mlp_ratio, qkv_bias=True, norm_layer=LayerNorm
                )
                for _ in range(mae.decoder_depth)
            ]
        )
        self.decoder_norm = LayerNorm(dim)
        self.decoder_pred = nn.Linear(dim, vit.patch_size**2 * vit.in_chans)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # The patch projection is a Linear over flattened patches, written as a strided conv.
        proj = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameter names to keep out of weight decay (read by timm's optimizer factory)."""
        return {"encoder.pos_embed", "encoder.cls_token", "mask_token", "decoder_pos_embed"}

    def _check_images(self, imgs: torch.Tensor) -> None:
        c, size = self.in_chans, self.vit_config.img_size
        if imgs.ndim != 4 or imgs.shape[1:] != (c, size, size):
            raise ValueError(f"expected images of shape (N, {c}, {size}, {size}), got {tuple(imgs.shape)}")

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, L, p * p * C)``; patches row-major, pixels ``(row, col, channel)``."""
        self._check_images(imgs)
        p, c = self.patch_size, self.in_chans
        n, h = imgs.shape[0], self.vit_config.grid_size
        x = imgs.reshape(n, c, h, p, h, p)  # (N, C, h, p, w, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # (N, h, w, p, p, C)
        return x.reshape(n, h * h, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, p * p * C)`` -> ``(N, C, H, W)``; the inverse of :meth:`patchify`."""
        p, c = self.patch_size, self.in_chans
        h = self.vit_config.grid_size
        if x.ndim != 3 or x.shape[1:] != (h * h, p * p * c):
            raise ValueError(f"expected patches of shape (N, {h * h}, {p * p * c}), got {tuple(x.shape)}")
        n = x.shape[0]
        x = x.reshape(n, h, h, p, p, c)  # (N, h, w, p, p, C)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (N, C, h, p, w, p)
        return x.reshape(n, c, h * p, h * p)

    @staticmethod
    def random_masking(
        x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random subset of ``int(L * (1 - mask_ratio))`` tokens per sample.

        Each sample's tokens are ranked by uniform noise (or the given ``(N, L)`` ``noise``) and
        the lowest-ranked are kept, in that shuffled order.

        Returns:
            ``x_masked`` ``(N, L_keep, D)``; ``mask`` ``(N, L)``, 1 where a token was removed, in the
            original order; ``ids_restore`` ``(N, L)``, gathering with it undoes the shuffle.
        """
        _check_mask_ratio(mask_ratio)
        n, length, dim = x.shape
        len_keep = int(length * (1 - mask_ratio))
        if len_keep < 1:
            raise ValueError(f"mask_ratio {mask_ratio} leaves no visible token out of {length}")
        if noise is None:
            noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches: ``(latent (N, 1 + L_keep, E), mask, ids_restore)``."""
        enc = self.encoder
        x = enc.patch_embed(imgs)  # (N, L, E)
        x = x + enc.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)  # (N, L_keep, E)
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # (N, 1 + L_keep, E)
        x = enc.blocks(x)
        return enc.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch's pixels from the visible tokens: ``(N, L, p * p * C)``."""
        x = self.decoder_embed(latent)  # (N, 1 + L_keep, Dd)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)  # (N, L, Dd), shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed  # (N, 1 + L, Dd)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:]  # drop the class token

    @staticmethod
    def _patch_stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch's default (unbiased) variance, as the MAE reference computes it.
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True) + _NORM_PIX_EPS) ** 0.5
        return mean, std

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over removed patches of the per-patch mean squared error."""
        target = self.patchify(imgs)
        if self.mae_config.norm_pix_loss:
            mean, std = self._patch_stats(target)
            target = (target - mean) / std
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # (N, L)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loss, pred (N, L, p * p * C), mask (N, L))``; ``mask_ratio`` defaults to the config's."""
        ratio = self.mae_config.mask_ratio if mask_ratio is None else mask_ratio
        self._check_images(imgs)
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(
        self, imgs: torch.Tensor, mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images for plots: ``(masked, reconstruction, pasted)``, each ``(N, C, H, W)``.

        ``masked`` zeroes the removed patches, ``reconstruction`` is the prediction of every patch,
        ``pasted`` the visible input patches with the predicted removed ones. Everything is in the
        input's (normalised) pixel space: with ``norm_pix_loss`` the prediction is mapped back
        with each true patch's mean and std, which a real inpainting would not know; fine for a
        picture. Call ``eval()`` first for a drop-path-free model.
        """
        _, pred, mask = self(imgs, mask_ratio)
        if self.mae_config.norm_pix_loss:
            mean, std = self._patch_stats(self.patchify(imgs))
            pred = pred * std + mean
        reconstruction = self.unpatchify(pred)
        removed = self.unpatchify(mask.unsqueeze(-1).expand_as(pred))  # (N, C, H, W), 1 = removed
        masked = imgs * (1 - removed)
        return masked, reconstruction, masked + reconstruction * removed
