"""Fixed 2-D sine-cosine position embeddings and their resampling to another patch grid.

MAE (and so LiVT's MGP stage) uses a fixed, non-learned position embedding in both encoder and
decoder: half of the channels encode the patch's row, the other half its column, each as the
sin/cos pairs of the Transformer's 1-D embedding. The classifier starts from the same table so
that a from-scratch baseline and a fine-tuned MGP encoder begin comparably.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """``(M,)`` positions -> ``(M, dim)``: ``[sin(p * w_0..w_{dim/2-1}), cos(p * w_0..w_{dim/2-1})]``."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.astype(np.float64), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_size: int | tuple[int, int], cls_token: bool = False
) -> np.ndarray:
    """Return the fixed 2-D sin-cos position embedding of a patch grid.

    Args:
        embed_dim: Channels per token; must be divisible by 4 (a sin and a cos half per axis).
        grid_size: Patches per side, or ``(rows, cols)``.
        cls_token: Prepend an all-zero row for the class token.

    Returns:
        float32 array of shape ``(rows * cols [+ 1], embed_dim)``, patches in row-major order (the
        order of timm's ``PatchEmbed``). Channels ``[:embed_dim // 2]`` encode the row, the rest the
        column.
    """
    if embed_dim <= 0 or embed_dim % 4:
        raise ValueError(
            f"embed_dim must be a positive multiple of 4 for a 2-D sin-cos embedding, got {embed_dim}"
        )
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid_size must be positive, got {grid_size}")
    row_idx, col_idx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    emb = np.concatenate(
        [_sincos_1d(embed_dim // 2, row_idx.ravel()), _sincos_1d(embed_dim // 2, col_idx.ravel())],
        axis=1,
    )  # (rows * cols, embed_dim)
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return emb.astype(np.float32)


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid_size: int | tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resample a ``(1, prefix + rows * cols, D)`` position embedding to another patch grid.

    Used to fine-tune at a different resolution than the MGP stage (e.g. pretrain at 128 px,
    fine-tune at 224 px). The source grid must be square; prefix (class) tokens are kept as they
    are and the patch part is resized bicubically by timm's ``resample_abs_pos_embed``.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim), got {tuple(pos_embed.shape)}")
    num_patches = pos_embed.shape[1] - num_prefix_tokens
    side = math.isqrt(max(num_patches, 0))
    if num_patches <= 0 or side * side != num_patches:
        raise ValueError(
            f"pos_embed has {num_patches} patch tokens after {num_prefix_tokens} prefix token(s); "
            "expected a square grid"
        )
    new_size = [grid_size, grid_size] if isinstance(grid_size, int) else list(grid_size)
    if new_size == [side, side]:
        return pos_embed
    return resample_abs_pos_embed(
        pos_embed, new_size=new_size, old_size=[side, side], num_prefix_tokens=num_prefix_tokens
    )
