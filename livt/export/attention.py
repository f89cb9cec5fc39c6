"""timm's ViT attention, exported in the form ONNX Runtime runs fastest.

timm's ``Attention.forward`` traces into ONNX with the sequence length and batch size computed from
``Shape`` ops at run time, a ``scaled_dot_product_attention`` decomposed with a square-rooted scale
on both ``q`` and ``k``, and ``Split``/``Squeeze`` for ``unbind``: about 40 small ops a block, which
cost more than the matrix products on a small model. ``ExportAttention`` computes the same function
with the token count as a constant (a ViT's is fixed by its input size), one scale and no ``Shape``
ops, in standard ONNX ops (TensorRT and other runtimes read it as well).

Measured on the demo model (docs/performance.md): this export doubles ONNX Runtime's throughput
against timm's own trace; ONNX Runtime's fused contrib ``Attention`` op and its transformer
optimizer's fusions on top were no faster (the first) and slower (the second), so neither is used.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Attention
from torch import nn


class ExportAttention(nn.Module):
    """The function of a timm ``Attention`` (no q/k norm, no gate, no mask) for a fixed token count."""

    def __init__(self, attn: Attention, num_tokens: int) -> None:
        super().__init__()
        unsupported = [
            name
            for name, module in (("q_norm", attn.q_norm), ("k_norm", attn.k_norm), ("norm", attn.norm))
            if not isinstance(module, nn.Identity)
        ] + (["gate"] if getattr(attn, "gate", None) is not None else [])
        if unsupported:
            raise ValueError(f"ExportAttention does not carry timm Attention's {', '.join(unsupported)}")
        self.qkv, self.proj = attn.qkv, attn.proj
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.num_tokens = num_tokens

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        # timm's blocks pass these on; a classifier's attention is full and unmasked.
        if attn_mask is not None or is_causal:
            raise ValueError("ExportAttention exports unmasked, non-causal attention only")
        # -1 for the batch and constants elsewhere: no Shape ops in the graph.
        qkv = self.qkv(x).reshape(-1, self.num_tokens, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, tokens, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, self.num_tokens, self.num_heads * self.head_dim)
        return self.proj(out)


def for_export(model: nn.Module) -> nn.Module:
    """Replace every timm ``Attention`` of ``model`` (in place) by its ``ExportAttention``."""
    num_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    for block in model.blocks:
        if isinstance(block.attn, Attention):
            block.attn = ExportAttention(block.attn, num_tokens)
    return model
