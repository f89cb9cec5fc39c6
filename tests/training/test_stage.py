"""The stage setup's rules: the batch-size floor and the model's input size."""

from __future__ import annotations

import pytest
import torch

from livt.training.config import PretrainConfig
from livt.training.distributed import DistEnv
from livt.training.stage import fit_batch_size, input_size

ONE = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _cfg(**changes) -> PretrainConfig:
    return PretrainConfig(dataset="synthetic", model="vit_micro", **changes)


def test_a_batch_too_large_for_the_data_is_lowered_to_the_floor(caplog):
    with caplog.at_level("WARNING", logger="livt"):
        assert fit_batch_size(_cfg(batch_size=256), 486, ONE) == 48  # 486 // 10: ten steps an epoch
    assert "batch size 256 -> 48: 486 training images give 1 optimizer step(s)" in caplog.text
    assert "(x 0.188)" in caplog.text
    assert fit_batch_size(_cfg(batch_size=32), 486, ONE) == 32  # 15 steps: left alone
    assert fit_batch_size(_cfg(batch_size=256, min_steps_per_epoch=0), 486, ONE) == 256
    assert fit_batch_size(_cfg(batch_size=256), 470, ONE, even=True) == 46  # mixup: an even batch
    two = DistEnv(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    assert fit_batch_size(_cfg(batch_size=256, accum_steps=2), 486, two) == 12  # 4 x 12 per step
    assert fit_batch_size(_cfg(batch_size=256), 5, ONE) == 1  # as small as it goes


@pytest.mark.parametrize(("flag", "native", "patch", "size"), [(None, 28, 4, 28), (None, 30, 4, 32),
                                                               (None, 3, 4, 4), (20, 30, 4, 20)])  # fmt: skip
def test_input_size_is_the_data_sets_made_a_multiple_of_the_patch(flag, native, patch, size):
    assert input_size(_cfg(img_size=flag), native, patch) == size
