"""One MGP training step, livt against the MAE reference implementation, interleaved; prints JSON.

    git clone https://github.com/facebookresearch/mae /tmp/mae      # (or any copy of it)
    python benchmarks/bench_mgp.py --mae-repo /tmp/mae

The same configuration on both sides (by default docs/performance.md's: ViT 192 wide, 6 blocks, 3 heads,
32 px, patch 4, decoder 128 wide x 2 blocks, batch 64, norm-pix loss, AdamW), random images, the
CPU or GPU given. Sides, each timed for ``--steps`` steps in every round, rounds interleaving them so
that a slow moment of the machine hits all:

- ``mae``: the reference's ``MaskedAutoencoderViT`` and ``torch.optim.AdamW`` (its own main_pretrain
  does the same), imported from ``--mae-repo`` and run as it is; two shims let the 2021 code run on
  today's libraries: timm's ``Block`` no longer takes ``qk_scale`` (always None there), and numpy
  no longer has ``np.float``;
- ``livt``: ``livt.models.MaskedAutoencoder`` with ``livt.training.optim.build_optimizer`` as
  ``livt-train pretrain`` builds them, in eager mode;
- ``-compiled``: with ``torch.compile`` (``livt-train --compile``); ``-bf16``: under bf16 autocast
  (``--precision bf16``), on either side (``mae-bf16``: the reference's own step under autocast, as
  its main_pretrain runs on a GPU).

GFLOP/s are the model FLOPs of a step (``torch.utils.flop_counter``: matmuls and attention)
per second, next to the machine's fp32 matmul peak measured in the same script with a plain
``torch.mm`` of the same order as the model's largest products.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from livt.host import host_info
from livt.models import MAEConfig, MaskedAutoencoder, ViTConfig
from livt.training.distributed import resolve_device
from livt.training.engine import autocast, resolve_precision
from livt.training.optim import build_optimizer

Step = Callable[[], None]
# side: (implementation, torch.compile, precision)
SIDES = {
    "mae": ("mae", False, "fp32"),
    "livt": ("livt", False, "fp32"),
    "livt-compiled": ("livt", True, "fp32"),
    "mae-bf16": ("mae", False, "bf16"),
    "livt-bf16": ("livt", False, "bf16"),
    "livt-compiled-bf16": ("livt", True, "bf16"),
}


def reference_model(repo: Path, args: argparse.Namespace) -> torch.nn.Module:
    """The reference's MaskedAutoencoderViT, imported from its repository as it is."""
    import timm.models.vision_transformer as vit

    if not hasattr(np, "float"):
        np.float = float  # the reference's pos_embed uses np.float (removed in numpy 1.24)
    block = vit.Block

    class Block(block):  # type: ignore[misc, valid-type]
        def __init__(self, *a, qk_scale=None, **kw):
            super().__init__(*a, **kw)

    sys.path.insert(0, str(repo))
    vit.Block = Block
    try:
        models_mae = importlib.import_module("models_mae")
    finally:
        vit.Block = block
    return models_mae.MaskedAutoencoderViT(
        img_size=args.img_size, patch_size=args.patch_size, in_chans=args.in_chans, embed_dim=args.embed_dim,
        depth=args.depth, num_heads=args.heads, decoder_embed_dim=args.decoder_dim,
        decoder_depth=args.decoder_depth, decoder_num_heads=args.decoder_heads, mlp_ratio=4.0, norm_pix_loss=True,
    )  # fmt: skip


def livt_model(args: argparse.Namespace) -> MaskedAutoencoder:
    vit = ViTConfig(args.img_size, args.patch_size, args.in_chans, 0, args.embed_dim, args.depth, args.heads)
    return MaskedAutoencoder(
        vit, MAEConfig(args.decoder_dim, args.decoder_depth, args.decoder_heads, 0.75, True)
    )


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, dtype) -> Step:
    device = images.device

    def step() -> None:
        with autocast(device, dtype):
            loss = model(images, mask_ratio=0.75)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_flops(model: torch.nn.Module, images: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        model(images, mask_ratio=0.75)[0].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, n: int = 1024, reps: int = 20) -> float:
    """fp32 GFLOP/s of a plain square ``torch.mm`` on ``device``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mae-repo", type=Path, required=True, help="a copy of github.com/facebookresearch/mae")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--decoder-dim", type=int, default=128)
    p.add_argument("--decoder-depth", type=int, default=2)
    p.add_argument("--decoder-heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per side and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not (args.mae_repo / "models_mae.py").is_file():
        p.error(f"--mae-repo {args.mae_repo} holds no models_mae.py")

    device = resolve_device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, args.in_chans, args.img_size, args.img_size, device=device)
    steps: dict[str, Step] = {}
    flops: dict[str, float] = {}
    for side in args.sides:
        implementation, compiled, precision = SIDES[side]
        if implementation == "mae":
            model = reference_model(args.mae_repo, args).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
        else:
            model = livt_model(args).to(device)
            optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
        flops[side] = step_flops(model, images)
        if compiled:
            model = torch.compile(model)
        steps[side] = make_step(model, optimizer, images, resolve_precision(precision, device))
        for _ in range(3):  # warm-up (and compilation)
            steps[side]()
    peak = matmul_peak(device)
    rates: dict[str, list[float]] = {side: [] for side in steps}
    for _ in range(args.rounds):
        for side, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[side].append(args.steps * args.batch_size / (time.perf_counter() - start))
    medians = {side: statistics.median(v) for side, v in rates.items()}
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("mae_repo",)}
        | {"mae_repo": str(args.mae_repo)},
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "host": host_info(),
        "images_per_s": rates,
        "median_images_per_s": medians,
        "gflops_per_s": {s: medians[s] * flops[s] / args.batch_size / 1e9 for s in medians},
        "matmul_peak_gflops": peak,
        "speedup_vs_mae": {s: medians[s] / medians["mae"] for s in medians} if "mae" in medians else None,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
