"""Image transforms for the two LiVT stages and for evaluation, plus mixup / cutmix.

- pretrain (MGP): random resized crop (scale 0.2-1, bicubic) and horizontal flip only, as MAE;
- finetune (BFT): timm's training transform with RandAugment and random erasing;
- eval: timm's eval transform (resize the shorter side to ``floor(img_size / crop_pct)``, center
  crop, normalise), described for serving by ``eval_preprocess_config``.

All of them take PIL images of mode "L" (1 channel) or "RGB" and return ``(C, H, W)`` float tensors.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image
from timm.data import Mixup, create_transform
from timm.data import auto_augment as timm_aa
from torchvision import transforms

from livt.data.base import DatasetInfo
from livt.images import INTERPOLATIONS

STAGES = ("pretrain", "finetune")

# MAE's pretraining augmentation.
PRETRAIN_DEFAULTS: dict[str, Any] = {"scale": (0.2, 1.0), "hflip": 0.5}
# MAE / LiVT fine-tuning recipe: RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 with
# per-pixel noise; no colour jitter (timm turns it off under RandAugment anyway).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
    "re_mode": "pixel",
    "re_count": 1,
    "color_jitter": None,
    "hflip": 0.5,
    "scale": None,
}


def build_train_transform(info: DatasetInfo, img_size: int, *, stage: str, **aug: Any) -> transforms.Compose:
    """Training transform for ``stage`` ("pretrain" or "finetune"); ``aug`` overrides its defaults.

    pretrain options: ``scale``, ``hflip``. finetune options: ``auto_augment`` (timm string, or
    None), ``re_prob``, ``re_mode``, ``re_count``, ``color_jitter``, ``hflip``, ``scale``.
    """
    _check_size(img_size)
    if stage == "pretrain":
        opts = _with_defaults(PRETRAIN_DEFAULTS, aug, stage)
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(
                    img_size, scale=opts["scale"], interpolation=transforms.InterpolationMode.BICUBIC
                ),
                transforms.RandomHorizontalFlip(opts["hflip"]),
                transforms.ToTensor(),
                transforms.Normalize(info.mean, info.std),
            ]
        )
    if stage == "finetune":
        opts = _with_defaults(FINETUNE_DEFAULTS, aug, stage)
        transform = create_transform(
            input_size=(info.channels, img_size, img_size),
            is_training=True,
            interpolation="bicubic",
            mean=info.mean,
            std=info.std,
            **opts,
        )
        _guard_posterize(transform)
        return transform
    raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")


def build_eval_transform(
    info: DatasetInfo, img_size: int, crop_pct: float = 1.0, interpolation: str = "bicubic"
) -> transforms.Compose:
    """timm's eval transform: resize shorter side to ``floor(img_size / crop_pct)``, center crop, normalise."""
    _check_eval(img_size, crop_pct, interpolation)
    return create_transform(
        input_size=(info.channels, img_size, img_size),
        is_training=False,
        crop_pct=crop_pct,
        interpolation=interpolation,
        mean=info.mean,
        std=info.std,
    )


def eval_preprocess_config(
    info: DatasetInfo, img_size: int, crop_pct: float = 1.0, interpolation: str = "bicubic"
) -> dict[str, Any]:
    """The ``preprocess`` block of meta.json / the ONNX metadata for ``build_eval_transform``'s settings."""
    _check_eval(img_size, crop_pct, interpolation)
    return {
        "img_size": img_size,
        "channels": info.channels,
        "mean": list(info.mean),
        "std": list(info.std),
        # timm (transforms_imagenet_eval) computes the resize with math.floor; so must we.
        "resize": math.floor(img_size / crop_pct),
        "crop_pct": crop_pct,
        "interpolation": interpolation,
    }


def build_mixup(num_classes: int, mixup: float, cutmix: float) -> Mixup | None:
    """timm ``Mixup`` (mixup / cutmix alphas) or None when both alphas are 0.

    Its targets are unsmoothed: the loss smooths every target itself, toward its own prior
    (``livt.training.losses``), which timm's uniform smoothing cannot. It needs an even batch size.
    """
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup} and {cutmix}")
    if mixup == 0 and cutmix == 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0, num_classes=num_classes)


def _with_defaults(defaults: dict[str, Any], aug: dict[str, Any], stage: str) -> dict[str, Any]:
    unknown = sorted(set(aug) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown {stage} augmentation option(s) {', '.join(unknown)}; valid: {', '.join(defaults)}"
        )
    return {**defaults, **aug}


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    # RandAugment's "PosterizeIncreasing" asks for 0 bits at the top of its magnitude range (which
    # magnitude noise reaches: m9 + N(0, 0.5) clipped at 10). Pillow >= 13 rejects bits=0 where
    # older Pillow, like the TF reference, returned a black image; keep that result instead of
    # crashing a data loader worker every few hundred images. Applies to "L" and "RGB" alike.
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return timm_aa.posterize(img, bits_to_keep, **kwargs)


def _guard_posterize(transform: transforms.Compose) -> None:
    for t in transform.transforms:
        # RandAugment / AugMix keep a flat op list, AutoAugment a list of sub-policies.
        ops = list(getattr(t, "ops", []))
        ops += [op for sub in getattr(t, "policy", []) for op in sub]
        for op in ops:
            if isinstance(op, timm_aa.AugmentOp) and op.aug_fn is timm_aa.posterize:
                op.aug_fn = _posterize


def _check_size(img_size: int) -> None:
    if not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")


def _check_eval(img_size: int, crop_pct: float, interpolation: str) -> None:
    _check_size(img_size)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
