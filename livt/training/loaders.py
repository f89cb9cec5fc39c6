"""DataLoaders with a deterministic, resumable order: epoch ``e`` is shuffled by ``(seed, e)``.

Training always goes through a ``DistributedSampler`` (one replica when not distributed) so a
single code path gives each rank its shard and reseeds the shuffle every epoch via ``set_epoch``.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from livt.training.config import ConfigError
from livt.training.distributed import DistEnv, shard_range


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def build_train_loader(
    dataset: Dataset, *, batch_size: int, seed: int, env: DistEnv, workers: int | None = None
) -> DataLoader:
    """Shuffled, ``drop_last`` loader over this rank's shard; call ``loader.sampler.set_epoch(e)``."""
    per_rank = len(dataset) // env.world_size
    if per_rank < batch_size:
        raise ConfigError(
            f"batch size {batch_size} is larger than the {per_rank} training images per process "
            f"({len(dataset)} images, {env.world_size} process(es)); lower --batch-size"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True
    )
    return _loader(dataset, batch_size, sampler=sampler, drop_last=True, env=env, workers=workers, seed=seed)


def build_eval_loader(
    dataset: Dataset, *, batch_size: int, env: DistEnv, workers: int | None = None
) -> DataLoader:
    """In-order loader over this rank's contiguous shard (no padding, no duplicates)."""
    shard = Subset(dataset, shard_range(len(dataset), env))
    return _loader(shard, batch_size, sampler=None, drop_last=False, env=env, workers=workers, seed=0)


def _loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: DistributedSampler | None,
    drop_last: bool,
    env: DistEnv,
    workers: int | None,
    seed: int,
) -> DataLoader:
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=env.device.type == "cuda",
        # Seeds the workers' RNGs (augmentation) independently of the training RNG stream.
        generator=torch.Generator().manual_seed(seed + env.rank),
    )
