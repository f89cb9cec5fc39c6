"""Training throughput of one MGP step and one BFT step on random tensors; prints one JSON object.

    python benchmarks/bench_train.py --img-size 224 --patch-size 16 --embed-dim 768 --depth 12 \
        --heads 12 --batch-size 64 --steps 20 --device cuda --precision bf16

FLOPs per image are counted by ``torch.utils.flop_counter`` over one forward + backward pass
(matmuls and attention; elementwise work is left out, as MFU conventionally does). MFU is
reported when the peak is given (``--peak-tflops``) or known for the GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from livt.host import host_info
from livt.models import MAEConfig, MaskedAutoencoder, ViTConfig, create_classifier
from livt.training.distributed import resolve_device
from livt.training.engine import autocast, resolve_precision
from livt.training.optim import build_optimizer

# Dense bf16 peak TFLOP/s by GPU name fragment.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--decoder-dim", type=int, default=512)
    p.add_argument("--decoder-depth", type=int, default=8)
    p.add_argument("--decoder-heads", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s of the device, in TFLOP/s")
    args = p.parse_args(argv)

    try:  # a bad size or an unsupported precision is a usage error, not a traceback
        device = resolve_device(args.device)
        dtype = resolve_precision(args.precision, device)
        vit = ViTConfig(args.img_size, args.patch_size, args.in_chans, args.num_classes, args.embed_dim,
                        args.depth, args.heads, args.mlp_ratio)  # fmt: skip
        mae = MAEConfig(args.decoder_dim, args.decoder_depth, args.decoder_heads)
    except ValueError as exc:
        p.error(str(exc))
    images = torch.randn(args.batch_size, args.in_chans, args.img_size, args.img_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

    mgp = MaskedAutoencoder(vit, mae).to(device)
    bft = create_classifier(vit).to(device)
    cases = {
        "mgp": (mgp, lambda: mgp(images)[0]),
        "bft": (bft, lambda: torch.nn.functional.cross_entropy(bft(images), labels)),
    }
    peak = args.peak_tflops or _known_peak(device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "host": host_info(),
        "precision": "bf16" if dtype is not None else "fp32",
        "batch_size": args.batch_size,
        "model": vit.to_dict(),
        "peak_tflops": peak,
    }
    for name, (model, loss_fn) in cases.items():
        result[name] = _bench(model, loss_fn, args, device, dtype, peak)
    print(json.dumps(result, indent=2))


def _bench(model, loss_fn, args, device, dtype, peak) -> dict:
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))

    def step() -> None:
        with autocast(device, dtype):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        with autocast(device, dtype):
            loss = loss_fn()
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops_per_image = counter.get_total_flops() / args.batch_size
    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    images_per_s = args.steps * args.batch_size / (time.perf_counter() - start)
    out = {"images_per_s": round(images_per_s, 2), "train_gflops_per_image": round(flops_per_image / 1e9, 3)}
    if peak:
        out["mfu"] = round(images_per_s * flops_per_image / (peak * 1e12), 4)
    return out


def _known_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
