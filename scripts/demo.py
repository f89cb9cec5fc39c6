"""The main job end to end on Fashion-MNIST-LT, as a user would run it (``make demo``).

MGP -> BFT with the recipe's balanced loss (evaluated on the test set) -> ONNX export (fp32 and
INT8, balanced prior, calibrated) -> ``livt-serve`` on loopback -> a handful of real test images
sent over HTTP -> a table.
Every stage is the project's own command line; a stage that finished before is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# benchmarks/harness: the real server in a child process (and the run folder's state) that the
# benchmarks and tests use too; not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from harness.runs import run_state
from harness.server import ServerProcess

from livt.data import build_dataset
from livt.training.config_sources import build_config

BIN = Path(sys.executable).parent
RECIPE = "fashion-mnist-lt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the runs go (default: runs)")
    parser.add_argument("--samples", type=int, default=2, help="test images per class sent to the server")
    args = parser.parse_args()
    root = args.runs / "fmnist"
    pretrain, finetune, export = root / "pretrain", root / "finetune", root / "export"
    model = export / "model.onnx"
    started = time.monotonic()

    stage("1/5 masked generative pretraining (MGP)")
    if run_state("pretrain", pretrain) != "done":
        train("pretrain", "--out", pretrain, *_resume_flag(pretrain))
    ft = build_config("finetune", recipe=RECIPE, overrides={"init": str(pretrain)})
    loss = f"{ft.loss}, tau {ft.tau:g}, smoothing {ft.smoothing:g} toward the {ft.smoothing_toward}"
    stage(f"2/5 balanced fine-tuning ({loss}), then the test set once")
    if not (finetune / "metrics.json").is_file():
        train("finetune", "--init", pretrain, "--out", finetune, *_resume_flag(finetune))
    metrics = json.loads((finetune / "metrics.json").read_text())

    stage(
        "3/5 export: ONNX fp32 + INT8 (ONNX Runtime, OpenVINO), balanced prior, calibrated on val; every engine timed"
    )
    record = export / "model.benchmark.json"
    if not (model.is_file() and (export / "export_report.json").is_file() and record.is_file()):
        shutil.rmtree(export, ignore_errors=True)
        run(
            BIN / "livt-export",
            "--run",
            finetune,
            "--format",
            "openvino",
            "--prior",
            "balanced",
            "--calibrate",
            "--int8",
            "--out",
            model,
        )
        # The record livt-serve --backend auto reads: it serves the fastest engine that keeps the accuracy.
        run(BIN / "livt-export", "benchmark", model, "--batch-sizes", "1", "32")

    stage("4/5 serving: livt-serve on 127.0.0.1, real test images over HTTP")
    samples = write_samples(root / "samples", args.samples)
    rows = serve_and_predict(model, samples)

    stage("5/5 summary")
    print(f"{'file':<28} {'true label':<14} {'predicted':<14} {'probability':>11}")
    for path, true, pred, prob in rows:
        print(f"{path.name:<28} {true:<14} {pred:<14} {prob:>11.3f}")
    correct = sum(t == p for _, t, p, _ in rows)
    print(f"\n{correct}/{len(rows)} served predictions correct")
    print(
        f"test: balanced accuracy {metrics['balanced_acc']:.4f}, top-1 {metrics['top1']:.4f}, "
        f"many/medium/few {_fmt(metrics.get('many'))}/{_fmt(metrics.get('medium'))}/{_fmt(metrics.get('few'))}, "
        f"ECE {metrics['ece']:.4f}"
    )
    print("\nartifacts:")
    for label, path in (
        ("MGP run", pretrain),
        ("BFT run (metrics.json, plots/)", finetune),
        ("ONNX fp32", model),
        ("ONNX INT8", export / "model.int8.onnx"),
        ("OpenVINO INT8", export / "model.ov-int8.onnx"),
        ("engine record (--backend auto)", record),
        ("export report", export / "export_report.json"),
        ("sample images", root / "samples"),
    ):
        print(f"  {label:<32} {path}")
    print(f"\nnext: {BIN / 'livt-serve'} --model {model}   (then open http://127.0.0.1:8000/)")
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


def stage(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run(*cmd: object) -> None:
    printable = " ".join(str(c) for c in cmd)
    print(f"$ {printable}", flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def train(command: str, *flags: object) -> None:
    run(BIN / "livt-train", command, "--recipe", RECIPE, *flags)


def _resume_flag(run_dir: Path) -> list[str]:
    return ["--resume"] if (run_dir / "config.yaml").is_file() else []


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_samples(folder: Path, per_class: int) -> list[tuple[Path, str]]:
    """Real Fashion-MNIST test images as PNG files, ``per_class`` of each class."""
    test = build_dataset("fashion-mnist-lt", split="test")
    folder.mkdir(parents=True, exist_ok=True)
    taken: dict[int, int] = {}
    samples = []
    for index, target in enumerate(test.targets):
        if taken.get(target, 0) >= per_class:
            continue
        taken[target] = taken.get(target, 0) + 1
        image, _ = test[index]
        label = test.classes[target]
        path = folder / f"test{index:05d}_{label.replace('/', '-').replace(' ', '-')}.png"
        image.save(path)
        samples.append((path, label))
        if len(samples) == per_class * len(test.classes):
            break
    return samples


def serve_and_predict(model: Path, samples: list[tuple[Path, str]]) -> list[tuple[Path, str, str, float]]:
    # The demo talks to its own loopback server: no API key.
    env = {k: v for k, v in os.environ.items() if k != "LIVT_API_KEY"}
    server = ServerProcess(model, ["--log-level", "warning"], python=sys.executable, env=env)
    print(f"$ {BIN / 'livt-serve'} --model {model} --port {server.port} --log-level warning", flush=True)
    with server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/model", timeout=30) as response:
            engine = json.load(response)["engine"]
        print(f"serving on {engine['engine']} {engine['precision']} ({engine['file']}): {engine['reason']}")
        rows = []
        for path, true in samples:
            answer = _post_image(server.port, path)
            best = answer["predictions"][0]["top_k"][0]
            rows.append((path, true, best["label"], best["probability"]))
        return rows


def _post_image(port: int, path: Path) -> dict:
    boundary = "livt-demo-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n3\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


if __name__ == "__main__":
    sys.exit(main())
