"""DataLoaders with a deterministic, resumable epoch: epoch ``e`` is a function of ``(seed, e)`` alone.

Training always goes through a ``DistributedSampler`` (one replica when not distributed) so a
single code path gives each rank its shard; ``EpochLoader.set_epoch`` reseeds the shuffle and the
workers every epoch.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from livt.training.config import ConfigError
from livt.training.distributed import DistEnv, shard_range


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class EpochLoader(DataLoader):
    """The training loader: call ``set_epoch(e)`` before iterating epoch ``e``.

    ``set_epoch`` fixes both the shuffle (the sampler) and the worker processes' RNGs from
    ``(seed, epoch, rank)``: the workers are started afresh every epoch (not persistent) from a
    base seed drawn from this loader's generator, and torch seeds worker ``w``'s torch and Python
    ``random`` (timm's RandAugment, random erasing) with ``base + w`` and its numpy from
    ``(base, w)``. The augmentation of an epoch then depends on nothing a checkpoint would have to
    hold, so a resumed run draws the same images as an uninterrupted one with any ``--workers``.
    With 0 workers the transforms draw from the main process's RNGs, which ``state.pt`` holds.
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int, **kwargs: Any):
        super().__init__(dataset, generator=torch.Generator(), persistent_workers=False, **kwargs)
        self._seed, self._rank = seed, rank
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        entropy = (self._seed % 2**32, epoch, self._rank)
        self.generator.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))


def build_train_loader(
    dataset: Dataset, *, batch_size: int, seed: int, env: DistEnv, workers: int | None = None
) -> EpochLoader:
    """Shuffled, ``drop_last`` loader over this rank's shard; call ``loader.set_epoch(e)`` each epoch."""
    per_rank = len(dataset) // env.world_size
    if per_rank < batch_size:
        raise ConfigError(
            f"batch size {batch_size} is larger than the {per_rank} training images per process "
            f"({len(dataset)} images, {env.world_size} process(es)); lower --batch-size"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True
    )
    return EpochLoader(
        dataset,
        seed=seed,
        rank=env.rank,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=default_workers() if workers is None else workers,
        pin_memory=env.device.type == "cuda",
    )


def build_eval_loader(
    dataset: Dataset, *, batch_size: int, env: DistEnv, workers: int | None = None
) -> DataLoader:
    """In-order loader over this rank's contiguous shard (no padding, no duplicates)."""
    shard = Subset(dataset, shard_range(len(dataset), env))
    workers = default_workers() if workers is None else workers
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        # Evaluation draws no random numbers: its workers can live across epochs.
        persistent_workers=workers > 0,
        pin_memory=env.device.type == "cuda",
        # Its own generator, so starting its workers draws nothing from the training RNG stream.
        generator=torch.Generator().manual_seed(env.rank),
    )
