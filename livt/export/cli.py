"""``livt-export``: turn a fine-tuned run into a verified ONNX / TensorRT / Triton artifact.

``livt-export --run RUN --out model.onnx [...]`` exports; ``livt-export benchmark ARTIFACT...``
times artifacts. Exit codes: 0 success, 1 verification failed (nothing written), 2 bad input,
unsupported options or no TensorRT/CUDA.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from livt.export.pipeline import CALIBRATION_CHOICES  # torch-free at import, like this CLI's --help
from livt.prior import DEFAULT_RULE, PRIOR_RULES

EXIT_VERIFY = 1
EXIT_USAGE = 2

_EPILOG = """\
examples:
  livt-export --run runs/fmnist-ft --out artifacts/fmnist.onnx
  livt-export --run runs/fmnist-ft --prior train --calibrate --optimize --int8 --out artifacts/fmnist.onnx
  livt-export --run runs/fmnist-ft --prior deploy_prior.json --format triton --out model_repository
  livt-export --run runs/fmnist-ft --format tensorrt --fp16 --max-batch 64 --out artifacts/fmnist.plan
  livt-export benchmark artifacts/fmnist.onnx artifacts/fmnist.int8.onnx --run runs/fmnist-ft

priors: 'balanced' (default) keeps the model's balanced logits; 'train' folds the training label
distribution back in; a JSON (list, or {class: value}) or CSV (value per line, or class,value) file
folds a deployment distribution. The prior is applied to the calibrated balanced logits as
Bayes' rule says (log pi; --prior-rule loss: the training loss's own offset).
--calibrate fits a calibrator (temperature, bcts or vector scaling; auto: the best by
cross-validated NLL) on the raw balanced logits of the run's balanced val split.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livt-export",
        description="Export a fine-tuned livt run with its calibration and prior folded into the head, "
        "verified against PyTorch. Also: `livt-export benchmark ARTIFACT...` (see `livt-export benchmark -h`).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run", required=True, type=Path, help="fine-tune run folder (holds checkpoints/best|last)"
    )
    p.add_argument("--out", required=True, type=Path, help="X.onnx, X.plan, or a Triton repository folder")
    p.add_argument(
        "--format",
        default="onnx",
        choices=("onnx", "tensorrt", "triton"),
        help="artifact kind (default: onnx)",
    )
    p.add_argument(
        "--checkpoint", default="best", choices=("best", "last"), help="which checkpoint (default: best)"
    )
    p.add_argument("--data-root", type=Path, help="data folder, if not the one the run recorded")
    fold = p.add_argument_group("folding")
    fold.add_argument(
        "--prior", default="balanced", help="balanced | train | PATH.json | PATH.csv (default: balanced)"
    )
    fold.add_argument(
        "--prior-rule",
        default=DEFAULT_RULE,
        choices=PRIOR_RULES,
        help=f"how the prior moves the calibrated logits (default: {DEFAULT_RULE})",
    )
    fold.add_argument(
        "--calibrate",
        nargs="?",
        const="auto",
        choices=CALIBRATION_CHOICES,
        help="fit a calibrator on the balanced val split and fold it: auto (the default when the flag "
        "is given alone: the best of temperature, bcts, vector by cross-validated NLL) or one method",
    )
    fold.add_argument(
        "--calibration-folds", type=int, default=5, help="cross-validation folds for --calibrate (5)"
    )
    onnx = p.add_argument_group("ONNX")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    onnx.add_argument(
        "--optimize", action="store_true", help="also write X.opt.onnx (ORT transformer fusions)"
    )
    onnx.add_argument(
        "--int8", action="store_true", help="also write an INT8 model (X.int8.onnx or X.qdq.onnx)"
    )
    onnx.add_argument(
        "--int8-mode", choices=("dynamic", "static"), help="dynamic (ONNX default) or static Q/DQ"
    )
    onnx.add_argument("--calibration-images", type=int, default=256, help="training images for static INT8")
    check = p.add_argument_group("verification and evaluation")
    check.add_argument("--atol", type=float, default=1e-4, help="max |logit diff| vs PyTorch for FP32 (1e-4)")
    check.add_argument(
        "--int8-min-agreement", type=float, default=0.9, help="min top-1 agreement for INT8/FP16"
    )
    check.add_argument(
        "--verify-samples", type=int, default=256, help="images (val, else test) checked against PyTorch"
    )
    check.add_argument(
        "--eval-split",
        default="test",
        choices=("val", "test", "none"),
        help="split for the per-variant accuracy table (default: test)",
    )
    check.add_argument("--eval-limit", type=int, help="evaluate on at most this many images")
    check.add_argument(
        "--many", type=int, help="many-shot: more training images than this (default: the run's, else 100)"
    )
    check.add_argument(
        "--few", type=int, help="few-shot: fewer training images than this (default: the run's, else 20)"
    )
    check.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    check.add_argument(
        "--workers", type=int, default=0, help="data loading processes for streamed splits (default 0)"
    )
    trt = p.add_argument_group("TensorRT")
    trt.add_argument("--fp16", action="store_true", help="FP16 engine (LayerNorm and softmax pinned to FP32)")
    trt.add_argument("--min-batch", type=int, help="engine profile minimum batch (default 1)")
    trt.add_argument("--opt-batch", type=int, help="engine profile batch to tune for (default 8)")
    trt.add_argument("--max-batch", type=int, help="engine profile maximum batch (default 128)")
    trt.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit in GiB")
    trt.add_argument("--timing-cache-dir", type=Path, help="reuse TensorRT timing caches from this folder")
    tri = p.add_argument_group("Triton")
    tri.add_argument("--triton-name", default="livt", help="model name in the repository")
    tri.add_argument(
        "--triton-platform", default="onnxruntime_onnx", choices=("onnxruntime_onnx", "tensorrt_plan")
    )
    tri.add_argument("--triton-max-batch", type=int, default=128, help="max_batch_size in config.pbtxt")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_benchmark_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livt-export benchmark",
        description="Latency (p50/p99) and throughput of ONNX artifacts on the CPU, optionally beside "
        "the PyTorch model of a run.",
    )
    p.add_argument("artifacts", nargs="+", type=Path, help="ONNX files written by livt-export")
    p.add_argument("--run", type=Path, help="also time the run's PyTorch model (eager)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
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
    from livt.export.pipeline import ExportOptions, run_export

    options = ExportOptions(
        run_dir=args.run,
        out=args.out,
        format=args.format,
        prior=args.prior,
        prior_rule=args.prior_rule,
        calibrate=args.calibrate,
        calibration_folds=args.calibration_folds,
        optimize=args.optimize,
        int8=args.int8,
        int8_mode=args.int8_mode,
        fp16=args.fp16,
        opset=args.opset,
        atol=args.atol,
        int8_min_agreement=args.int8_min_agreement,
        checkpoint=args.checkpoint,
        data_root=args.data_root,
        verify_samples=args.verify_samples,
        calibration_images=args.calibration_images,
        eval_split=None if args.eval_split == "none" else args.eval_split,
        eval_limit=args.eval_limit,
        many=args.many,
        few=args.few,
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        workspace_gib=args.workspace_gib,
        timing_cache_dir=args.timing_cache_dir,
        triton_name=args.triton_name,
        triton_platform=args.triton_platform,
        triton_max_batch=args.triton_max_batch,
        threads=args.threads,
        workers=args.workers,
    )
    try:
        result = run_export(options)
    except VerificationError as exc:
        print(f"livt-export: verification failed: {exc}", file=sys.stderr)
        return EXIT_VERIFY
    except ExportError as exc:
        print(f"livt-export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_summary(result, options)
    return 0


def _print_summary(result, options) -> None:
    from livt.export.pipeline import calibration_table, evaluation_table

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
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
