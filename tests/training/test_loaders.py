"""The training loader's epoch is a function of (seed, epoch): order and worker RNGs alike."""

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from livt.training.distributed import DistEnv
from livt.training.loaders import build_train_loader

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class _Draws(Dataset):
    """Item ``i`` is ``i`` with one draw from each RNG an augmentation may use."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(
            [index, random.random(), torch.rand(()).item(), np.random.rand()], dtype=torch.float64
        )


def _epoch(loader, epoch: int) -> torch.Tensor:
    loader.set_epoch(epoch)
    return torch.cat(list(loader))


def test_an_epoch_draws_the_same_in_a_fresh_loader_as_after_the_earlier_epochs():
    loader = build_train_loader(_Draws(), batch_size=2, seed=3, env=ENV, workers=2)
    first, second = _epoch(loader, 0), _epoch(loader, 1)
    resumed = build_train_loader(_Draws(), batch_size=2, seed=3, env=ENV, workers=2)
    assert torch.equal(_epoch(resumed, 1), second)  # what a resumed run sees
    assert not torch.equal(first[:, 1:], second[:, 1:])  # each epoch draws afresh
    other_seed = build_train_loader(_Draws(), batch_size=2, seed=4, env=ENV, workers=2)
    assert not torch.equal(_epoch(other_seed, 1)[:, 1:], second[:, 1:])
