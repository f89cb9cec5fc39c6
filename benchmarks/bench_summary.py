"""Every row of the performance table in one run (``make bench``): JSON, a Markdown table, figures.

    python benchmarks/bench_summary.py --run runs/fmnist/finetune --model runs/fmnist/export/model.onnx \
        --mae-repo /tmp/mae --json runs/bench/summary.json --figures docs/figures

Runs the side-by-side benchmarks one after the other, each in its own process, and collects their
JSON: ``bench_infer`` (PyTorch eager, ONNX Runtime fp32 and INT8, interleaved, with the accuracy
each variant keeps), ``bench_serve`` (the server on raw image bodies next to raw ONNX Runtime),
``bench_mgp`` (an MGP step against the MAE reference; skipped, with the reason, without a copy of
it) and ``bench_train`` across model widths. Every ratio in the table comes from one of those
scripts, whose sides were interleaved; none divides figures from two processes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from livt.host import host_info

HERE = Path(__file__).resolve().parent
# name: bench_train arguments (32 px, patch 4, the MGP decoder 128 x 2 unless said).
WIDTHS = {
    "vit_micro (32 wide)": "--img-size 16 --in-chans 3 --embed-dim 32 --depth 2 --heads 2 --decoder-dim 32 --decoder-depth 1 --decoder-heads 2",
    "vit_fmnist (128 wide)": "--img-size 28 --in-chans 1 --embed-dim 128 --depth 4 --heads 4 --decoder-dim 64 --decoder-depth 1 --decoder-heads 4",
    "192 wide, 6 deep": "--img-size 32 --in-chans 3 --embed-dim 192 --depth 6 --heads 3 --decoder-dim 128 --decoder-depth 2 --decoder-heads 4",
    "vit_small (384 wide, 12 deep)": "--img-size 32 --in-chans 3 --embed-dim 384 --depth 12 --heads 6 --decoder-dim 128 --decoder-depth 2 --decoder-heads 4",
}  # fmt: skip
TARGETS = {  # what each measured row must reach (docs/performance.md)
    "ort_fp32_vs_eager": 1.8,
    "ort_int8_vs_eager": 3.0,
    "int8_balanced_loss_points": 0.3,
    "serve_c32_fraction_of_raw": 0.70,
    "serve_c1_overhead_ms": 0.6,
    "mgp_vs_mae": 1.3,
}


def bench(script: str, *args: str) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` and return the JSON it prints."""
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{script} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run", type=Path, required=True, help="the fine-tuned run (make demo: runs/fmnist/finetune)"
    )
    p.add_argument("--model", type=Path, required=True, help="its exported artifact, for the server")
    p.add_argument(
        "--mae-repo", type=Path, help="a copy of github.com/facebookresearch/mae (else no MGP row)"
    )
    p.add_argument("--json", type=Path, help="also write the collected JSON here")
    p.add_argument("--figures", type=Path, help="draw the figures into this folder")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = p.parse_args(argv)
    for path, what in ((args.run, "--run"), (args.model, "--model")):
        if not path.exists():
            p.error(f"{what} {path} does not exist (run `make demo` first)")

    batches = ["1", "8", "32", "64"]
    results: dict[str, Any] = {
        "host": host_info(),
        "infer": bench("bench_infer.py", "--run", str(args.run), "--batch-sizes", *batches),
    }
    concurrency = [str(c) for c in args.concurrency]
    serve_args = [
        "--model",
        str(args.model),
        "--body",
        "raw",
        "--concurrency",
        *concurrency,
        "--batches",
        *batches,
    ]
    results["serve"] = bench("bench_serve.py", *serve_args)
    common = [
        "--patch-size",
        "4",
        "--num-classes",
        "10",
        "--batch-size",
        "64",
        "--steps",
        "10",
        "--device",
        "cpu",
    ]
    results["train"] = {
        name: {
            p: bench("bench_train.py", *flags.split(), *common, "--precision", p) for p in ("fp32", "bf16")
        }
        for name, flags in WIDTHS.items()
    }
    if args.mae_repo is not None:
        results["mgp"] = bench("bench_mgp.py", "--mae-repo", str(args.mae_repo))
    else:
        results["mgp"] = {"skipped": "no --mae-repo: the reference's step is not timed"}
    results["table"] = table(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.figures is not None:
        draw(results, args.figures)
    print(markdown(results["table"]))
    return 0


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what, measured, target, met."""
    infer = {(r["backend"], r["batch_size"]): r for r in results["infer"]["rows"]}
    accuracy = results["infer"]["accuracy"]["variants"]
    serve = {r["concurrency"]: r for r in results["serve"]["http"]["raw"]}
    ort = {r["batch"]: r for r in results["serve"]["engine"]}  # the raw engine the server runs
    fp32, int8 = infer[("ort-fp32", 32)], infer[("ort-int8", 32)]
    eager = infer[("pytorch-eager", 32)]
    int8_loss = 100 * (accuracy["ort-fp32"]["balanced_acc"] - accuracy["ort-int8"]["balanced_acc"])
    rows = [
        _row("ORT fp32 vs PyTorch eager, batch 32", fp32["speedup_vs_eager"], "ort_fp32_vs_eager",
             f"{fp32['images_per_s']:,.0f} vs {eager['images_per_s']:,.0f} img/s: {fp32['speedup_vs_eager']:.2f}x"),
        _row("ORT dynamic INT8 vs eager, batch 32", int8["speedup_vs_eager"], "ort_int8_vs_eager",
             f"{int8['images_per_s']:,.0f} img/s: {int8['speedup_vs_eager']:.2f}x"),
        _row("INT8 balanced accuracy lost (points)", int8_loss, "int8_balanced_loss_points", f"{int8_loss:+.2f}",
             lower_is_better=True),
    ]  # fmt: skip
    if 32 in serve and 32 in ort:
        fraction = serve[32]["requests_per_s"] / ort[32]["images_per_s"]
        rows.append(_row(
            "serving c32, raw body, 1 image/request, vs its raw engine batch 32", fraction, "serve_c32_fraction_of_raw",
            f"{serve[32]['requests_per_s']:,.0f} req/s vs {ort[32]['images_per_s']:,.0f} img/s: {fraction:.0%}",
        ))  # fmt: skip
    if 1 in serve and 1 in ort:
        overhead = serve[1]["p50_ms"] - ort[1]["p50_ms"]
        rows.append(_row(
            "serving c1 p50 vs its raw engine batch 1", overhead, "serve_c1_overhead_ms",
            f"{serve[1]['p50_ms']:.2f} vs {ort[1]['p50_ms']:.2f} ms: +{overhead:.2f} ms", lower_is_better=True,
        ))  # fmt: skip
    mgp = results["mgp"]
    if "median_images_per_s" in mgp:
        rates = mgp["median_images_per_s"]
        for side in (s for s in rates if s.startswith("livt")):
            # A bf16 side against the reference both as it runs on a CPU (fp32) and under the same autocast.
            for ref in ("mae", "mae-bf16") if side.endswith("bf16") and "mae-bf16" in rates else ("mae",):
                ratio = rates[side] / rates[ref]
                rows.append(_row(
                    f"MGP step, {side} vs the MAE reference ({ref})", ratio, "mgp_vs_mae",
                    f"{rates[side]:,.0f} vs {rates[ref]:,.0f} img/s: {ratio:.2f}x",
                ))  # fmt: skip
    return rows


def _row(
    what: str, value: float, target: str, shown: str, *, lower_is_better: bool = False
) -> dict[str, Any]:
    goal = TARGETS[target]
    met = value <= goal if lower_is_better else value >= goal
    return {"what": what, "value": value, "measured": shown, "target": ("<= " if lower_is_better else ">= ") + f"{goal:g}", "met": met}  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| what | measured | target | met |", "|---|---|---|---|"]
    lines += [
        f"| {r['what']} | {r['measured']} | {r['target']} | {'yes' if r['met'] else 'no'} |" for r in rows
    ]
    return "\n".join(lines)


def draw(results: dict[str, Any], folder: Path) -> None:
    """perf_inference.png (img/s by batch size and backend), perf_serving.png, perf_training.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    backends = sorted({r["backend"] for r in results["infer"]["rows"]})
    for backend in backends:
        rows = sorted(
            (r for r in results["infer"]["rows"] if r["backend"] == backend), key=lambda r: r["batch_size"]
        )
        ax.plot([r["batch_size"] for r in rows], [r["images_per_s"] for r in rows], marker="o", label=backend)
    ax.set(xscale="log", xlabel="batch size", ylabel="images / s", title="Inference, 2 CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "perf_inference.png", dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    http = sorted(results["serve"]["http"]["raw"], key=lambda r: r["concurrency"])
    c = [r["concurrency"] for r in http]
    left.plot(c, [r["requests_per_s"] for r in http], marker="o", label="server, 1 image/request")
    ort = sorted(results["serve"]["engine"], key=lambda r: r["batch"])
    left.plot(
        [r["batch"] for r in ort],
        [r["images_per_s"] for r in ort],
        marker="s",
        ls="--",
        label="raw engine (batch)",
    )
    left.set(
        xscale="log", xlabel="concurrency (batch for the raw engine)", ylabel="per s", title="Throughput"
    )
    left.legend(fontsize=8)
    right.plot(c, [r["p50_ms"] for r in http], marker="o", label="p50")
    right.plot(c, [r["p99_ms"] for r in http], marker="o", label="p99")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="Latency")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "perf_serving.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(results["train"])
    for stage in ("mgp", "bft"):
        for precision in ("fp32", "bf16"):
            rates = [results["train"][n][precision][stage] for n in names]
            gflops = [r["images_per_s"] * r["train_gflops_per_image"] for r in rates]
            ax.plot(range(len(names)), gflops, marker="o", label=f"{stage} {precision}")
    ax.set_xticks(range(len(names)), [n.split(" (")[0] for n in names], fontsize=8)
    ax.set(ylabel="model GFLOP/s", title="Training step, 2 CPU cores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "perf_training.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
