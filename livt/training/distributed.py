"""Single-process and ``torchrun`` multi-process training: device, process group, sharding, gathers.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with them we join a process group
(NCCL on CUDA, gloo on CPU) and each rank trains on its shard of every epoch. Only rank 0 writes
files, logs and progress bars. Without them everything here degrades to the single-process case.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from livt.training.config import ConfigError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its rank among ``world_size`` and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {preference!r} requested but CUDA is not available")
        return torch.device(preference if ":" in preference else f"cuda:{local_rank}")
    if preference != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {preference!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the ``torchrun`` process group if there is one (idempotent) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _logger.info("rank %d of %d on %s", rank, world_size, dev)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """DDP-wrap ``model`` (already on ``env.device``) when running on several processes."""
    if not env.distributed:
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (what checkpoints store)."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def shard_range(n: int, env: DistEnv) -> range:
    """Contiguous slice of ``range(n)`` for this rank; concatenating the ranks' slices gives ``range(n)``."""
    per_rank = -(-n // env.world_size)
    return range(min(n, env.rank * per_rank), min(n, (env.rank + 1) * per_rank))


def all_gather_cat(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order; lengths may differ per rank."""
    if not env.distributed:
        return tensor
    length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(env.world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(n.item() for n in lengths))
    # all_gather needs equal shapes: pad every rank to the longest shard, trim after.
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(n.item())] for g, n in zip(gathered, lengths, strict=True)])


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor over ranks (a no-op on one process)."""
    if not env.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / env.world_size


def all_gather_objects(obj: object, env: DistEnv) -> list[object]:
    """Every rank's picklable ``obj``, in rank order."""
    if not env.distributed:
        return [obj]
    out: list[object] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
