"""``livt-train export-encoder``: a run's encoder written as the timm and MAE releases write theirs.

The inverse of ``--init`` (``livt.training.init_weights``): what is written here reads back through
``--init FILE`` to the same weights, and timm itself builds the model from the timm folder
(``timm.create_model(config["architecture"], **config["model_args"])`` then the state dict).

- ``timm``: a folder as timm's ``save_for_hf`` writes it (``model.safetensors`` + ``config.json``
  with ``model_args`` for the exact shape and ``pretrained_cfg`` for the preprocessing), the model
  headless with livt's average pooling over the normalised patch tokens.
- ``mae``: one ``.pth`` as facebookresearch/mae saves it, ``{"model": state_dict}``, encoder keys at
  the top and, from a pretrain run, the decoder's; plus ``"livt"``, the shape (the heads are not in
  the weights).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import timm
import torch
from timm.models import save_for_hf

from livt.files import atomic_write
from livt.models import ViTConfig
from livt.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
)

EXPORT_FORMATS = ("timm", "mae")
# timm architecture whose factory builds any livt ViT shape from model_args (class token, no
# registers, learned absolute position embedding: livt's classifier).
TIMM_ARCH = "vit_base_patch16_224"


def default_out(run_dir: Path, fmt: str) -> Path:
    """``RUN/export/encoder-timm`` (a folder) or ``RUN/export/encoder-mae.pth``."""
    return Path(run_dir) / "export" / ("encoder-timm" if fmt == "timm" else "encoder-mae.pth")


def export_encoder(run_dir: Path, fmt: str, out: Path | None = None) -> Path:
    """Write the encoder of ``run_dir`` (best checkpoint, else last) in ``fmt``; return what was written.

    Raises:
        CheckpointError: not a livt run folder, or its checkpoint is damaged.
        ValueError: an unknown ``fmt``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    ckpt = find_checkpoint(Path(run_dir), "best")
    meta = load_checkpoint_meta(ckpt)
    weights = load_model_weights(ckpt)
    if meta.get("stage") == "pretrain":
        state = {k.removeprefix("encoder."): v for k, v in weights.items()}
    elif meta.get("stage") == "finetune":
        state = {k: v for k, v in weights.items() if not k.startswith("head.")}
    else:
        raise CheckpointError(
            f"{ckpt}/meta.json: stage {meta.get('stage')!r} is neither pretrain nor finetune"
        )
    out = Path(out) if out is not None else default_out(run_dir, fmt)
    if fmt == "mae":
        # "livt": the shape, heads included, which the weights do not show; MAE's loaders read "model" only.
        record = {
            "model": {**meta["model"], "num_classes": 0},
            "mae": meta.get("mae") if meta.get("stage") == "pretrain" else None,
        }
        atomic_write(out, lambda tmp: torch.save({"model": state, "livt": record}, tmp))
        return out
    encoder = {k: v for k, v in state.items() if not k.startswith(("decoder_", "mask_token"))}
    _write_timm(out, ViTConfig.from_dict(meta["model"]), encoder, meta.get("preprocess") or {})
    return out


def _write_timm(out: Path, vit: ViTConfig, encoder: dict[str, torch.Tensor], preprocess: dict) -> None:
    """timm's own writer on a timm model holding ``encoder``, in a sibling folder renamed into place."""
    model = timm.create_model(
        TIMM_ARCH, pretrained=False, pretrained_cfg_overlay={"tag": "livt", "license": None},
        img_size=vit.img_size, patch_size=vit.patch_size, in_chans=vit.in_chans, num_classes=0,
        embed_dim=vit.embed_dim, depth=vit.depth, num_heads=vit.num_heads, mlp_ratio=vit.mlp_ratio,
        global_pool="avg", fc_norm=False,
    )  # fmt: skip
    model.load_state_dict(encoder, strict=True)
    data = {k: preprocess[k] for k in ("mean", "std", "crop_pct", "interpolation") if k in preprocess}
    staging, retired = out.parent / f".{out.name}.new", out.parent / f".{out.name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    save_for_hf(model, str(staging), safe_serialization=True, data_config=data or None)
    shutil.rmtree(retired, ignore_errors=True)
    if out.exists():
        os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)
