"""timm's ViT attention, exported in the form ONNX Runtime runs fastest.

timm's ``Attention.forward`` traces into ONNX with the sequence length and batch size computed from
``Shape`` ops at run time, a ``scaled_dot_product_attention`` decomposed with a square-rooted scale
on both ``q`` and ``k``, and ``Split``/``Squeeze`` for ``unbind``: about 40 small ops a block, which
cost more than the matrix products on a small model, and a pattern ONNX Runtime's transformer
optimizer does not fuse. ``ExportAttention`` computes the same function with the token count as a
constant (a ViT's is fixed by its input size), one scale and no ``Shape`` ops. With
``contrib=True`` it emits ONNX Runtime's own fused ``com.microsoft::Attention`` (qkv projection,
scaled dot-product attention over all heads, in one kernel), which only ONNX Runtime runs: the
``X.opt.onnx`` variant; the portable ``X.onnx`` keeps standard ops (TensorRT and others read it).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Attention
from torch import nn

CONTRIB_DOMAIN = "com.microsoft"


class _ContribAttention(torch.autograd.Function):
    """``Attention(x, qkv weight, qkv bias)`` over all heads: traced as ONNX Runtime's contrib op."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_heads: int
    ) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = (
            (x @ weight + bias)
            .reshape(batch, tokens, 3, num_heads, width // num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        out = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return out.transpose(1, 2).reshape(batch, tokens, width)

    @staticmethod
    def symbolic(g, x, weight, bias, num_heads: int):  # the exporter's graph API
        out = g.op(f"{CONTRIB_DOMAIN}::Attention", x, weight, bias, num_heads_i=num_heads)
        out.setType(x.type())  # the output has the input's shape and type: tell the exporter so
        return out


class ExportAttention(nn.Module):
    """The function of a timm ``Attention`` (no q/k norm, no gate, no mask) for a fixed token count."""

    def __init__(self, attn: Attention, num_tokens: int, *, contrib: bool = False) -> None:
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
        self.contrib = contrib

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        # timm's blocks pass these on; a classifier's attention is full and unmasked.
        if attn_mask is not None or is_causal:
            raise ValueError("ExportAttention exports unmasked, non-causal attention only")
        width = self.num_heads * self.head_dim
        if self.contrib:
            bias = self.qkv.bias if self.qkv.bias is not None else x.new_zeros(3 * width)
            out = _ContribAttention.apply(x, self.qkv.weight.t(), bias, self.num_heads)
        else:
            # -1 for the batch and constants elsewhere: no Shape ops in the graph.
            qkv = self.qkv(x).reshape(-1, self.num_tokens, 3, self.num_heads, self.head_dim)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = (attn @ v).transpose(1, 2).reshape(-1, self.num_tokens, width)
        return self.proj(out)


def for_export(model: nn.Module, *, contrib: bool = False) -> nn.Module:
    """Replace every timm ``Attention`` of ``model`` (in place) by its ``ExportAttention``."""
    num_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    for block in model.blocks:
        if isinstance(block.attn, Attention):
            block.attn = ExportAttention(block.attn, num_tokens, contrib=contrib)
    return model
