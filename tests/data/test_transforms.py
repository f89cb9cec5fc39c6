import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import Mixup
from torchvision import transforms

from livt.data import (
    DatasetInfo,
    build_eval_transform,
    build_mixup,
    build_train_transform,
    eval_preprocess_config,
)

GREY = DatasetInfo("grey", ("a", "b"), 1, 28, (0.3,), (0.4,))
COLOUR = DatasetInfo("colour", ("a", "b"), 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def _image(info: DatasetInfo, size=(40, 30), seed=0) -> Image.Image:
    rng = np.random.RandomState(seed)
    shape = (size[1], size[0]) if info.channels == 1 else (size[1], size[0], 3)
    return Image.fromarray(rng.randint(0, 256, shape, dtype=np.uint8))


@pytest.mark.parametrize("info", [GREY, COLOUR], ids=["L", "RGB"])
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_train_transform_shapes(info, stage):
    transform = build_train_transform(info, 24, stage=stage)
    for seed in range(5):
        out = transform(_image(info, seed=seed))
        assert out.shape == (info.channels, 24, 24) and out.dtype == torch.float32


def test_pretrain_is_mae_crop_and_flip():
    steps = build_train_transform(GREY, 28, stage="pretrain").transforms
    crop = steps[0]
    assert isinstance(crop, transforms.RandomResizedCrop) and crop.scale == (0.2, 1.0)
    assert crop.interpolation == transforms.InterpolationMode.BICUBIC
    assert [type(s) for s in steps[1:]] == [
        transforms.RandomHorizontalFlip,
        transforms.ToTensor,
        transforms.Normalize,
    ]


@pytest.mark.parametrize("info", [GREY, COLOUR], ids=["L", "RGB"])
def test_finetune_randaugment_survives_maximum_posterize(info):
    # At magnitude 10 timm's PosterizeIncreasing keeps 0 bits, which Pillow >= 13 rejects.
    transform = build_train_transform(info, 16, stage="finetune", auto_augment="rand-m10-n3-inc1")
    random.seed(0)
    np.random.seed(0)
    for seed in range(150):
        assert transform(_image(info, seed=seed)).shape == (info.channels, 16, 16)


@pytest.mark.parametrize("info", [GREY, COLOUR], ids=["L", "RGB"])
def test_finetune_random_erasing_works_per_channel_count(info):
    image = _image(info)
    outputs = []
    for re_prob in (0.0, 1.0):
        transform = build_train_transform(info, 16, stage="finetune", auto_augment=None, re_prob=re_prob)
        random.seed(1)
        torch.manual_seed(1)
        outputs.append(transform(image))
    plain, erased = outputs
    assert erased.shape == plain.shape == (info.channels, 16, 16)
    changed = (plain != erased).any(0)
    assert 0 < changed.float().mean() < 1  # a rectangle, not the whole image


def test_unknown_stage_and_options():
    with pytest.raises(ValueError, match="valid stages: pretrain, finetune"):
        build_train_transform(GREY, 28, stage="train")
    with pytest.raises(
        ValueError, match=r"unknown finetune augmentation option\(s\) mixup; valid: auto_augment"
    ):
        build_train_transform(GREY, 28, stage="finetune", mixup=0.8)


@pytest.mark.parametrize("info", [GREY, COLOUR], ids=["L", "RGB"])
def test_eval_transform_equals_hand_computation(info):
    image = _image(info, size=(10, 8))  # width 10, height 8
    out = build_eval_transform(info, 4, crop_pct=0.8, interpolation="bicubic")(image)
    # resize = floor(4 / 0.8) = 5 for the shorter side (8 -> 5), longer side int(5 * 10 / 8) = 6,
    # then a 4x4 center crop: top = round((5 - 4) / 2) = 0, left = round((6 - 4) / 2) = 1
    resized = np.asarray(image.resize((6, 5), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    crop = resized[0:4, 1:5].reshape(4, 4, info.channels).transpose(2, 0, 1)
    expected = (crop - np.array(info.mean)[:, None, None]) / np.array(info.std)[:, None, None]
    assert out.shape == (info.channels, 4, 4)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("img_size", "crop_pct", "resize"), [(28, 1.0, 28), (224, 0.875, 256), (224, 0.9, 248), (384, 0.95, 404)]
)
def test_preprocess_config_matches_the_eval_transform(img_size, crop_pct, resize):
    config = eval_preprocess_config(COLOUR, img_size, crop_pct, "bilinear")
    assert config == {
        "img_size": img_size,
        "channels": 3,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "resize": resize,
        "crop_pct": crop_pct,
        "interpolation": "bilinear",
    }
    resize_step = build_eval_transform(COLOUR, img_size, crop_pct, "bilinear").transforms[0]
    assert isinstance(resize_step, transforms.Resize) and resize_step.size == resize


def test_eval_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"crop_pct must be in \(0, 1\]"):
        build_eval_transform(GREY, 28, crop_pct=0)
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        eval_preprocess_config(GREY, 28, 1.0, "cubic")


def test_build_mixup():
    assert build_mixup(10, 0.0, 0.0) is None
    mixup = build_mixup(4, 0.8, 1.0)
    assert isinstance(mixup, Mixup)
    # No smoothing of its own: the loss smooths the mixed targets toward its prior.
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing, mixup.num_classes) == (
        0.8,
        1.0,
        0.0,
        4,
    )
    images, targets = mixup(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert images.shape == (4, 1, 8, 8) and targets.shape == (4, 4)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="alphas must be >= 0"):
        build_mixup(4, -1.0, 0.0)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"])
def test_every_interpolation_of_the_one_list_resizes_alike_in_training_and_serving(interpolation):
    from livt.images import INTERPOLATIONS
    from livt.inference.preprocess import PreprocessConfig, transform

    assert interpolation in INTERPOLATIONS
    info = DatasetInfo("x", ("a",), 3, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    ours = build_eval_transform(info, 8, crop_pct=0.8, interpolation=interpolation)(image).numpy()
    served = transform(image, PreprocessConfig.from_dict(eval_preprocess_config(info, 8, 0.8, interpolation)))
    np.testing.assert_allclose(ours, served, atol=1e-5)
