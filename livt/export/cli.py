"""``livt-export``: turn a fine-tuned run into a verified ONNX / TensorRT / Triton artifact.

``livt-export --run RUN --out model.onnx [...]`` exports; ``livt-export benchmark ARTIFACT...``
times artifacts. Exit codes: 0 success, 1 verification failed (nothing written), 2 bad input,
unsupported options or no TensorRT/CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from livt import __version__
from livt.export.options import ExportOptions  # torch-free: --help starts quickly
from livt.flags import add_dataclass_flags

EXIT_VERIFY = 1
EXIT_USAGE = 2

_EPILOG = """\
examples:
  livt-export --run runs/fmnist-ft --out artifacts/fmnist.onnx
  livt-export --run runs/fmnist-ft --prior train --int8 --out artifacts/fmnist.onnx
  livt-export --run runs/fmnist-ft --calibrate none --out artifacts/fmnist-as-trained.onnx
  livt-export --run runs/fmnist-ft --prior deploy_prior.json --format triton --out model_repository
  livt-export --run runs/fmnist-ft --format tensorrt --fp16 --max-batch 64 --out artifacts/fmnist.plan
  livt-export benchmark artifacts/fmnist.onnx artifacts/fmnist.int8.onnx --run runs/fmnist-ft

priors: 'balanced' (default) keeps the model's balanced logits; 'train' folds the training label
distribution back in; a JSON (list, or {class: value}) or CSV (value per line, or class,value) file
folds a deployment distribution. The prior is applied to the calibrated balanced logits as
Bayes' rule says (log pi; --prior-rule loss: the training loss's own offset).
Calibration, on by default where the run has a val split, fits a calibrator (temperature, bcts or
vector scaling; auto: the best by cross-validated NLL, or none) on the raw balanced logits of the
run's balanced val split; its per-class bias also sets Bal-BCE's tau after training (README).
--calibrate none exports the logits as trained.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livt-export",
        description="Export a fine-tuned livt run with its calibration and prior folded into the head, "
        "verified against PyTorch. Also: `livt-export benchmark ARTIFACT...` (see `livt-export benchmark -h`).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_dataclass_flags(p, ExportOptions)
    p.add_argument("-v", "--verbose", action="store_true", default=False, help="log each step")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_benchmark_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livt-export benchmark",
        description="Latency (p50/p99) and throughput of ONNX artifacts on the CPU, optionally beside "
        "the PyTorch model of a run.",
    )
    p.add_argument("artifacts", nargs="+", type=Path, help="ONNX files written by livt-export")
    p.add_argument("--run", type=Path, help="also time the run's PyTorch model (eager)")
    p.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=_positive_int, default=20, help="timed calls per model and batch size")
    p.add_argument("--rounds", type=_positive_int, default=5,
                   help="the engine table's interleaved rounds, --iters split across them")  # fmt: skip
    p.add_argument("--threads", type=int, help="intra-op threads for every backend (default: all cores)")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["benchmark"]:
        return benchmark_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    from livt.export.errors import ExportError, VerificationError
    from livt.export.pipeline import run_export

    fields = {f.name for f in dataclasses.fields(ExportOptions)}
    try:
        options = ExportOptions(**{k: v for k, v in vars(args).items() if k in fields})
    except ExportError as exc:
        print(f"livt-export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_export(options)
    except VerificationError as exc:
        print(f"livt-export: verification failed: {exc}", file=sys.stderr)
        return EXIT_VERIFY
    except ExportError as exc:
        print(f"livt-export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a read-only or full destination: the staging folder is already gone
        where = exc.filename or options.out
        print(f"livt-export: error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_summary(result, options)
    return 0


def _print_summary(result, options) -> None:
    from livt.export.report import calibration_table, evaluation_table

    report = result.report
    print(f"prior: {report['prior']['mode']} (rule: {report['prior']['rule']})")
    table = calibration_table(report)
    if table:
        print(table)
    for name, parity in report["parity"].items():
        print(
            f"parity {name}: max |diff| {parity['max_abs_diff_logits']:.2e}, "
            f"top-1 agreement {parity['top1_agreement']:.4f} on {parity['samples']} val images"
        )
    table = evaluation_table(report)
    if table:
        print(table)
    print("wrote:")
    for path in result.written:
        print(f"  {path}")
    if result.removed:
        print("removed (variants of an earlier export, not this one's):")
        for path in result.removed:
            print(f"  {path}")
    print("next:")
    if options.format == "triton":
        print(f"  tritonserver --model-repository {Path(options.out).resolve()}")
    else:
        print(f"  livt-serve --model {result.artifact}")
    onnx_files = [str(p) for p in result.written if str(p).endswith(".onnx")]
    if onnx_files:
        print(f"  livt-export benchmark {' '.join(onnx_files)} --run {options.run_dir}")


def benchmark_main(argv: Sequence[str]) -> int:
    """``livt-export benchmark``: time ONNX artifacts (and the run's PyTorch model)."""
    args = build_benchmark_parser().parse_args(argv)
    from livt.export.bench import benchmark_onnx, benchmark_torch, format_table
    from livt.export.errors import ExportError

    missing = [str(p) for p in args.artifacts if not p.is_file()]
    if missing:
        print(f"livt-export benchmark: error: no such artifact: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    rows = []
    if args.run is not None:
        from livt.export.fold import FoldedClassifier
        from livt.export.source import load_source

        try:
            source = load_source(args.run)
        except ExportError as exc:
            print(f"livt-export benchmark: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        module = FoldedClassifier(source.model, [0.0] * source.num_classes)
        rows += benchmark_torch(
            module,
            source.input_shape,
            args.batch_sizes,
            threads=args.threads,
            warmup=args.warmup,
            iters=args.iters,
        )
    for path in args.artifacts:
        try:
            rows += benchmark_onnx(
                path, args.batch_sizes, threads=args.threads, warmup=args.warmup, iters=args.iters
            )
        except ValueError as exc:
            print(f"livt-export benchmark: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(format_table(rows))
    engines_table(args)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def engines_table(args: argparse.Namespace) -> None:
    """Every engine x precision of each fp32 export named, printed and saved as ``X.benchmark.json``."""
    from livt.export.bench import benchmark_engines, engine_table
    from livt.export.metadata import read_onnx_metadata
    from livt.export.report import write_json
    from livt.inference.selection import record_path

    for path in args.artifacts:
        if path.suffix != ".onnx" or read_onnx_metadata(path).get("quantization"):
            continue  # a variant: timed as a candidate of its fp32 export
        record = benchmark_engines(
            path,
            args.batch_sizes,
            threads=args.threads,
            warmup=args.warmup,
            rounds=args.rounds,
            iters=max(1, args.iters // args.rounds),
        )
        print(engine_table(record))
        write_json(record_path(path), record)
        print(f"wrote {record_path(path)}")


if __name__ == "__main__":
    sys.exit(main())
