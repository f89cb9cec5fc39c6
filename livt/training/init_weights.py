"""The weights a run starts from (``--init``): a livt run folder, or a ViT checkpoint as the MAE,
timm and DeiT releases save them.

Every source is read into one form: the encoder under timm ``VisionTransformer`` key names
(``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``), the MAE decoder
under :class:`~livt.models.MaskedAutoencoder` names (``decoder_*``, ``mask_token``) where the file
holds one, the encoder's shape, and the keys that no livt model takes (a classifier head, DeiT's
distillation token). Loading then fits the weights to the run's model: position embeddings are
resampled to its patch grid and the patch embedding to its channel count (timm's
``adapt_input_conv``), so a 224 px RGB checkpoint starts a 32 px grey run. What was loaded is
returned as a record for the run's ``meta.json``.

Formats: ``livt`` (a pretrain run folder, or a livt ``model.safetensors``), ``mae`` (MAE's
``{"model": state_dict}`` ``.pth``, encoder with or without decoder), ``deit`` (the same wrapper with
a head, and ``dist_token`` for the distilled models), ``timm`` (a bare state dict as
``.safetensors``, ``.bin`` or ``.pth``, or a folder with ``config.json`` as timm's hub cache holds).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn

from livt.artifact import sha256_file
from livt.models import MAEConfig, ViTConfig, interpolate_pos_embed, vit_config
from livt.training import stage
from livt.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint_meta,
    load_model_weights,
    recorded_sha256,
)
from livt.training.config import ConfigError, TrainConfig

_logger = logging.getLogger(__name__)

FORMATS = ("livt", "mae", "deit", "timm")
# The weight files of a timm / Hugging Face model folder, in the order timm prefers them.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_ENCODER = re.compile(r"^(cls_token|pos_embed|patch_embed\.|blocks\.|norm\.)")
_DECODER = re.compile(r"^(decoder_|mask_token$)")
# Keys of a release that no livt model takes: a classifier head, DeiT's distillation token and head.
_DROPPED = re.compile(r"^(head\.|head_dist\.|dist_token$)")
_KEY_LIST = 6  # keys named in an error line before "... (N more)"
# Shape fields the checkpoint and the run's model must share (resolution and channels are fitted).
SHAPE_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


@dataclass
class InitWeights:
    """A checkpoint read for ``--init``, in timm / livt key names (module docstring)."""

    path: Path  # the weight file read
    format: str
    sha256: str
    encoder: dict[str, torch.Tensor]
    decoder: dict[str, torch.Tensor]
    vit: ViTConfig  # the encoder's shape at the checkpoint's own resolution (num_classes 0)
    mae: MAEConfig | None  # the decoder's shape, where there is a decoder
    dropped: list[str] = field(default_factory=list)
    guessed: list[str] = field(default_factory=list)  # shape fields the weights do not determine


def read_init(source: str | Path) -> InitWeights:
    """Read ``source``: a livt run folder, a timm model folder, or a checkpoint file.

    Raises:
        CheckpointError: missing or unreadable, or no ViT encoder in it (one line naming the file).
    """
    path = Path(source)
    if path.is_dir():
        if (path / "checkpoints").is_dir():
            return _read_run(path)
        return _read_hub_folder(path)
    if not path.is_file():
        raise CheckpointError(f"--init {path} does not exist (a run folder, a timm model folder or a file)")
    state, fmt, shape = _read_file(path)
    try:  # livt's own export-encoder records the exact shape, heads included
        vit = ViTConfig.from_dict(shape["model"]) if shape.get("model") else None
        mae = MAEConfig.from_dict(shape["mae"]) if shape.get("mae") else None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid 'livt' shape record: {exc}") from exc
    return _from_state(path, fmt, state, sha256_file(path), vit=vit, mae=mae)


def _read_run(run_dir: Path) -> InitWeights:
    ckpt = find_checkpoint(run_dir, "last")
    meta = load_checkpoint_meta(ckpt)
    if meta.get("stage") != "pretrain":
        raise CheckpointError(f"--init {run_dir} is a {meta.get('stage')!r} run, not a pretrain run")
    weights = load_model_weights(ckpt)
    if not any(k.startswith("encoder.") for k in weights):
        raise CheckpointError(f"{ckpt} holds no encoder.* weights; is it an MGP checkpoint?")
    try:
        vit = ViTConfig.from_dict(meta["model"])
        mae = MAEConfig.from_dict(meta["mae"]) if meta.get("mae") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}/meta.json: invalid model config: {exc}") from exc
    return _from_state(ckpt / "model.safetensors", "livt", weights, recorded_sha256(ckpt), vit=vit, mae=mae)


def _read_hub_folder(folder: Path) -> InitWeights:
    """A folder with ``config.json`` and weights, or a hub cache entry (``models--org--name``) above one."""
    folder = _hub_snapshot(folder)
    config_path = folder / "config.json"
    weights = next((folder / name for name in HUB_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None or not config_path.is_file():
        raise CheckpointError(
            f"--init {folder} is neither a livt run folder (checkpoints/) nor a timm model folder "
            f"(config.json and {' or '.join(HUB_WEIGHT_FILES)})"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    state, _, _ = _read_file(weights)
    config = config if isinstance(config, dict) else {}
    init = _from_state(
        weights, "timm", state, sha256_file(weights), num_heads=_heads_from_timm_config(config)
    )
    if isinstance(config.get("architecture"), str) and "embed_dim" not in (config.get("model_args") or {}):
        init.vit = dataclasses.replace(init.vit, name=config["architecture"])
    return init


def _hub_snapshot(folder: Path) -> Path:
    """The snapshot a hub cache entry's ``refs/main`` names, or its only one; else ``folder`` itself."""
    snapshots = folder / "snapshots"
    if (folder / "config.json").is_file() or not snapshots.is_dir():
        return folder
    ref = folder / "refs" / "main"
    if ref.is_file():
        return snapshots / ref.read_text(encoding="utf-8").strip()
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) != 1:
        raise CheckpointError(f"{snapshots} holds {len(found)} snapshots and no refs/main: name one of them")
    return found[0]


def _heads_from_timm_config(config: dict[str, Any]) -> int | None:
    """Attention heads from timm's ``config.json``: its ``model_args``, else its architecture's default."""
    args = config.get("model_args") or {}
    if isinstance(args, dict) and isinstance(args.get("num_heads"), int):
        return args["num_heads"]
    arch = config.get("architecture")
    if not isinstance(arch, str):
        return None
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, num_classes=0)
        return int(model.blocks[0].attn.num_heads)
    except (RuntimeError, AttributeError, IndexError, TypeError):  # unknown or not a ViT
        return None


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """A file's state dict, format and (``{"model": ..., "livt": {"model": ..., "mae": ...}}`` as
    export-encoder writes) shape record: safetensors, or ``torch.load(weights_only=True)`` for the rest."""
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} cannot be read as safetensors ({_first_line(exc)})") from exc
        return state, "livt" if any(k.startswith("encoder.") for k in state) else "timm", {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({_first_line(exc)})"
        ) from exc
    wrapped = isinstance(data, dict) and any(isinstance(data.get(k), dict) for k in ("model", "state_dict"))
    shape = data.get("livt") if wrapped and isinstance(data.get("livt"), dict) else {}
    if wrapped:
        data = data["model"] if isinstance(data.get("model"), dict) else data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors)")
    if not wrapped:
        return data, "timm", {}
    deit = any(k.startswith("head.") or k == "dist_token" for k in data)
    return data, "deit" if deit else "mae", shape


def _from_state(
    path: Path,
    fmt: str,
    state: dict[str, torch.Tensor],
    sha256: str,
    *,
    vit: ViTConfig | None = None,
    mae: MAEConfig | None = None,
    num_heads: int | None = None,
) -> InitWeights:
    """Split ``state`` into encoder, decoder and dropped keys; anything else is a one-line error."""
    if any(k.startswith("encoder.") for k in state):  # livt's MaskedAutoencoder
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
    encoder = {k: v for k, v in state.items() if _ENCODER.match(k)}
    decoder = {k: v for k, v in state.items() if _DECODER.match(k)}
    dropped = sorted(k for k in state if _DROPPED.match(k))
    unknown = sorted(set(state) - set(encoder) - set(decoder) - set(dropped))
    if unknown:
        raise CheckpointError(f"{path}: keys no livt ViT takes: {_keys(unknown)}")
    if "dist_token" in state:  # DeiT distilled: drop the distillation token's position row too
        encoder["pos_embed"] = torch.cat([encoder["pos_embed"][:, :1], encoder["pos_embed"][:, 2:]], dim=1)
    guessed: list[str] = []
    if vit is None:
        vit, guessed = _infer_vit(path, encoder, num_heads)
    if mae is None and decoder:
        mae = _infer_mae(path, decoder, vit)
    return InitWeights(path, fmt, sha256, encoder, decoder, vit, mae, dropped, guessed)


# The one release width that is not 64 channels a head: ViT-H (1280 wide, 16 heads).
_HEADS_BY_WIDTH = {1280: 16}
_NEEDED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")


def _infer_vit(
    path: Path, encoder: dict[str, torch.Tensor], num_heads: int | None
) -> tuple[ViTConfig, list[str]]:
    """The encoder's shape from its weights; the heads (which weights do not show) from ``num_heads``,
    else 64 channels a head as every ViT/DeiT/MAE release up to ViT-L has (ViT-H: 16)."""
    missing = [k for k in _NEEDED if k not in encoder]
    if missing:
        raise CheckpointError(f"{path} holds no ViT encoder: missing {_keys(missing)}")
    proj = encoder["patch_embed.proj.weight"]  # (E, C, p, p)
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    tokens = encoder["pos_embed"].shape[1] - 1
    side = math.isqrt(max(tokens, 0))
    if side * side != tokens:
        raise CheckpointError(f"{path}: pos_embed has {tokens} patch tokens, not a square grid")
    depth = 1 + max(int(k.split(".")[1]) for k in encoder if k.startswith("blocks."))
    guessed = []
    if num_heads is None:
        num_heads, guessed = _HEADS_BY_WIDTH.get(embed_dim, max(1, embed_dim // 64)), ["num_heads"]
    try:
        vit = ViTConfig(
            img_size=side * patch, patch_size=patch, in_chans=in_chans, num_classes=0, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=encoder["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        )  # fmt: skip
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a ViT livt can build: {exc}") from exc
    return vit, guessed


def _infer_mae(path: Path, decoder: dict[str, torch.Tensor], vit: ViTConfig) -> MAEConfig:
    """The decoder's shape from its weights, heads at 32 channels each (MAE's 512-wide, 16-head decoder)."""
    if "decoder_embed.weight" not in decoder:
        raise CheckpointError(f"{path}: decoder keys without decoder_embed.weight: {_keys(sorted(decoder))}")
    dim = decoder["decoder_embed.weight"].shape[0]
    blocks = [int(k.split(".")[1]) for k in decoder if k.startswith("decoder_blocks.")]
    try:
        return MAEConfig(decoder_embed_dim=dim, decoder_depth=1 + max(blocks, default=0),
                         decoder_num_heads=max(1, dim // 32))  # fmt: skip
    except ValueError as exc:
        raise CheckpointError(f"{path}: not an MAE decoder livt can build: {exc}") from exc


def run_model_config(
    cfg: TrainConfig, init: InitWeights | None, native_size: int, **fields: Any
) -> ViTConfig:
    """The run's model: ``--model``'s preset, else the checkpoint's shape; then ``fields`` and the size
    flags, at the run's input size (``--img-size`` or the data's, a multiple of the patch).

    Raises:
        ConfigError: an invalid shape, or one that differs from the checkpoint's in a
            :data:`SHAPE_FIELDS` field the checkpoint determines.
    """
    try:
        base = vit_config(cfg.model) if cfg.model else init.vit
        img_size = stage.input_size(cfg, native_size, cfg.patch_size or base.patch_size)
        overrides = {"img_size": img_size, **fields, **cfg.model_sizes()}
        vit = vit_config(cfg.model, **overrides) if cfg.model else dataclasses.replace(base, **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if init is not None:
        source = init.vit
        diffs = [f"{k} {getattr(source, k)} vs {getattr(vit, k)}" for k in SHAPE_FIELDS
                 if k not in init.guessed and getattr(source, k) != getattr(vit, k)]  # fmt: skip
        if diffs:
            raise ConfigError(
                f"model size mismatch between --init {init.path} ({source.name}) and this run "
                f"({vit.name}): {', '.join(diffs)}"
            )
    return vit


def load_init(model: nn.Module, init: InitWeights, *, new: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Load ``init`` into a classifier (a timm ViT) or a :class:`~livt.models.MaskedAutoencoder`.

    ``new``: the model's keys that may stay as initialised (a classifier's head). An MAE takes the
    checkpoint's decoder where it has one of the same shape, else keeps its fresh one.

    Returns:
        The record for ``meta.json``: file, sha256, format, and the keys resampled, adapted to the
        channel count, dropped and left new.

    Raises:
        CheckpointError: keys that do not match, named in one line with the file.
    """
    is_mae = hasattr(model, "decoder_embed")
    encoder = model.encoder if is_mae else model
    prefix = "encoder." if is_mae else ""
    state, resampled, adapted = _fit_encoder(init.encoder, encoder, prefix)
    dropped = list(init.dropped)
    if is_mae:
        decoder, fresh = _fit_decoder(init, model)
        if (
            "decoder_pos_embed" in decoder
            and decoder["decoder_pos_embed"] is not init.decoder["decoder_pos_embed"]
        ):
            resampled.append("decoder_pos_embed")
        state.update(decoder)
        new = new | fresh
    elif init.decoder:
        dropped += sorted(init.decoder)
    target = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in state.items()
             if k in target and v.shape != target[k].shape]  # fmt: skip
    missing = sorted(set(target) - set(state) - new)
    unexpected = sorted(set(state) - set(target))
    if wrong or missing or unexpected:
        parts = [f"{name} {_keys(keys)}" for name, keys in
                 (("shape", wrong), ("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
        raise CheckpointError(f"--init {init.path} does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=False)
    return {
        "path": str(init.path), "sha256": init.sha256, "format": init.format,
        "resampled": resampled, "adapted": adapted, "dropped": dropped,
        "new": sorted(set(target) - set(state)), "guessed": list(init.guessed),
    }  # fmt: skip


def log_init(record: dict[str, Any]) -> None:
    """One line saying what ``--init`` loaded and what it changed."""
    parts = [f"{name} {', '.join(record[name])}" for name in ("resampled", "adapted", "dropped", "new", "guessed")
             if record[name]]  # fmt: skip
    _logger.info(
        "init from %s (%s, sha256 %s)%s", record["path"], record["format"], record["sha256"][:12],
        f": {'; '.join(parts)}" if parts else "",
    )  # fmt: skip


def _fit_encoder(
    weights: dict[str, torch.Tensor], encoder: nn.Module, prefix: str
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """``weights`` resampled to ``encoder``'s patch grid and channel count, keys under ``prefix``."""
    state = dict(weights)
    resampled, adapted = [], []
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != encoder.pos_embed.shape:
        state["pos_embed"] = _resample(pos, encoder.patch_embed.grid_size)
        resampled.append(prefix + "pos_embed")
    proj = state.get("patch_embed.proj.weight")
    in_chans = encoder.patch_embed.proj.weight.shape[1]
    if proj is not None and proj.shape[1] != in_chans:
        state["patch_embed.proj.weight"] = adapt_input_conv(in_chans, proj)
        adapted.append(prefix + "patch_embed.proj.weight")
    return {prefix + k: v for k, v in state.items()}, resampled, adapted


def _fit_decoder(init: InitWeights, model: nn.Module) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """The checkpoint's decoder fitted to ``model``'s, and the decoder keys that stay fresh.

    A decoder of another shape, or none, leaves them all fresh; a pixel head for another channel
    count or patch size (``decoder_pred``) stays fresh alone, since it predicts other pixels.
    """
    own = {k for k in model.state_dict() if _DECODER.match(k)}
    source, own_shape = init.mae, model.mae_config
    if source is None or (source.decoder_embed_dim, source.decoder_depth) != (
        own_shape.decoder_embed_dim, own_shape.decoder_depth
    ):  # fmt: skip
        return {}, frozenset(own)
    decoder = dict(init.decoder)
    pos = decoder.get("decoder_pos_embed")
    if pos is not None and pos.shape != model.decoder_pos_embed.shape:
        decoder["decoder_pos_embed"] = _resample(pos, model.vit_config.grid_size)
    fresh = set()
    pred = decoder.get("decoder_pred.weight")
    if pred is not None and pred.shape != model.decoder_pred.weight.shape:
        fresh = {"decoder_pred.weight", "decoder_pred.bias"}
        decoder = {k: v for k, v in decoder.items() if k not in fresh}
    return decoder, frozenset(fresh)


def _resample(pos_embed: torch.Tensor, grid: int | tuple[int, int]) -> torch.Tensor:
    return interpolate_pos_embed(pos_embed, tuple(grid) if isinstance(grid, tuple) else grid)


def _keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEY_LIST])
    return f"[{shown}{f', ... ({len(keys) - _KEY_LIST} more)' if len(keys) > _KEY_LIST else ''}]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
