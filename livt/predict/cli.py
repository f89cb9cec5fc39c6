"""``livt-predict``: classify image files with an exported model, no server, no PyTorch.

    livt-predict --model model.onnx photos/ more/*.png --out predictions.csv
    livt-predict --model model.onnx photos/ --prior estimated --estimate-prior prior.json
    livt-predict --model model.onnx --predictions balanced.jsonl --estimate-prior prior.json

Exit codes: 0 success; 1 some images could not be read (the others are written); 2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from livt import __version__
from livt.files import atomic_write_text, display_name
from livt.inference.backends.base import ENGINES, PRECISIONS
from livt.prior import REQUEST_PRIORS, PriorError

EXIT_UNREADABLE = 1
EXIT_USAGE = 2
_PRIORS = " | ".join(REQUEST_PRIORS) + " | a JSON list of one number per class"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livt-predict",
        description="Classify images with a livt ONNX artifact exactly as livt-serve does (same "
        "preprocessing, calibration and prior rule), and estimate the images' label prior.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--model", required=True, type=Path, help="the ONNX artifact written by livt-export")
    p.add_argument("--out", type=Path, help="predictions file: .csv or .jsonl (default: CSV on stdout)")
    p.add_argument("--top-k", type=int, default=5, help="classes per image")
    p.add_argument("--prior", default="model", help=f"prior to predict under: {_PRIORS}")
    p.add_argument(
        "--probabilities", action="store_true", help="also write every class's probability (JSONL only)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per model call")
    p.add_argument("--threads", type=int, default=0, help="the engine's intra-op threads (0: its default)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *ENGINES],
        help="inference engine (auto: the fastest accurate one on this host, as livt-serve picks it)",
    )
    p.add_argument("--precision", choices=PRECISIONS, help="fp32, bf16 or int8 (default: auto picks)")
    p.add_argument(
        "--estimate-prior",
        type=Path,
        metavar="PRIOR.json",
        help="write the images' label prior, estimated by EM (accepted by livt-export --prior and the API)",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        help="estimate the prior from a JSONL written with --prior balanced --probabilities, not from images",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from livt.inference.artifact import ArtifactError
    from livt.predict.predictor import Predictor

    try:
        _check_args(args)
        predictor = Predictor(
            args.model, threads=args.threads, backend=args.backend, precision=args.precision
        )
        if args.predictions is not None:
            _estimate_from_predictions(predictor, args)
            return 0
        return _predict(predictor, args)
    except (ArtifactError, PriorError, FileNotFoundError, ValueError) as exc:
        print(f"livt-predict: error: {display_name(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # an output that cannot be written: its old content is kept
        where = display_name(exc.filename) if exc.filename else "output"
        print(f"livt-predict: error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


def _check_args(args: argparse.Namespace) -> None:
    if args.top_k < 1 or args.batch_size < 1:
        raise ValueError("--top-k and --batch-size must be >= 1")
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"--out must end in .csv or .jsonl, got {args.out}")
    if args.probabilities and (args.out is None or args.out.suffix.lower() != ".jsonl"):
        raise ValueError("--probabilities needs --out FILE.jsonl")
    if args.predictions is not None:
        if args.images or args.estimate_prior is None:
            raise ValueError("--predictions FILE estimates a prior: give --estimate-prior and no images")
    elif not args.images:
        raise ValueError("no images given (files, folders or glob patterns)")
    if args.prior.startswith("["):
        try:
            args.prior = json.loads(args.prior)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--prior is not a valid JSON list: {exc}") from exc


def _predict(predictor, args: argparse.Namespace) -> int:
    from livt.predict.sources import collect_images

    sources = collect_images(args.images)
    readable, logits, failed = _run_images(predictor, sources.files, args)
    failed = sources.unreadable + failed
    for path, reason in failed:
        print(f"livt-predict: skipped {display_name(path)}: {reason}", file=sys.stderr)
    if not readable:
        print("livt-predict: error: no image could be read", file=sys.stderr)
        return EXIT_UNREADABLE
    z = np.concatenate(logits)
    mode, probabilities = predictor.apply_prior(z, args.prior)
    _write_predictions(predictor, readable, mode, probabilities, args)
    if args.estimate_prior is not None:
        _write_prior(predictor, predictor.estimate_from_logits(z), args.estimate_prior)
    return EXIT_UNREADABLE if failed else 0


def _run_images(predictor, paths: list[Path], args: argparse.Namespace) -> tuple[list, list, list]:
    """The readable paths, their logits (in batches), and each unreadable path with the reason."""
    from tqdm import tqdm

    from livt.inference.preprocess import ImageError

    readable, logits, failed = [], [], []
    with tqdm(total=len(paths), unit="img", disable=args.quiet, file=sys.stderr) as bar:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start : start + args.batch_size]
            try:
                logits.append(predictor.logits(chunk, batch_size=args.batch_size))
                readable += chunk
            except (ImageError, OSError):
                # Find the bad files one by one, so one corrupt image costs only itself.
                for path in chunk:
                    try:
                        logits.append(predictor.logits([path]))
                        readable.append(path)
                    except ImageError as exc:
                        failed.append((path, _without_name(str(exc), path)))
                    except OSError as exc:  # unreadable: permissions, a vanished file, an I/O error
                        failed.append((path, exc.strerror or str(exc)))
            bar.update(len(chunk))
    return readable, logits, failed


def _without_name(message: str, path: Path) -> str:
    # Image errors start with the path; the report names it once, escaped.
    return message.removeprefix(f"{path}: ")


def _write_predictions(predictor, paths: list[Path], mode: str, probabilities: np.ndarray, args) -> None:
    """The predictions as CSV or JSONL: on stdout, or a file replaced whole (never half written)."""
    from livt.inference.model import top_k

    classes = predictor.classes
    k = min(args.top_k, len(classes))
    out = io.StringIO()
    if args.out is not None and args.out.suffix.lower() == ".jsonl":
        for path, row in zip(paths, probabilities, strict=True):
            record = {
                "path": display_name(path),
                "prior": mode,
                "top_k": [{"label": classes[i], "index": i, "probability": p} for i, p in top_k(row, k)],
            }
            if args.probabilities:
                record["probabilities"] = [float(v) for v in row]
            out.write(json.dumps(record) + "\n")
    else:
        writer = csv.writer(out)
        header = [f"{name}_{j}" for j in range(1, k + 1) for name in ("label", "probability")]
        writer.writerow(["path", "prior", *header])
        for path, row in zip(paths, probabilities, strict=True):
            cells = [v for i, p in top_k(row, k) for v in (classes[i], f"{p:.6g}")]
            writer.writerow([display_name(path), mode, *cells])
    if args.out is None:
        sys.stdout.write(out.getvalue())
        return
    atomic_write_text(args.out, out.getvalue())
    print(f"wrote {len(paths)} predictions to {display_name(args.out)}", file=sys.stderr)


def _estimate_from_predictions(predictor, args: argparse.Namespace) -> None:
    from livt.label_shift import estimate_prior

    rows = []
    for n, line in enumerate(args.predictions.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            probabilities = record["probabilities"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{args.predictions}:{n}: not a livt-predict line with probabilities (--probabilities)"
            ) from exc
        if record.get("prior") != "balanced":
            raise ValueError(
                f"{args.predictions}:{n}: predictions under prior {record.get('prior')!r}; the estimate needs "
                "balanced ones (livt-predict --prior balanced --probabilities)"
            )
        rows.append(probabilities)
    if not rows:
        raise ValueError(f"{args.predictions} holds no predictions")
    q = np.asarray(rows, dtype=np.float64)
    if q.shape[1] != len(predictor.classes):
        raise ValueError(
            f"{args.predictions}: {q.shape[1]} probabilities per line, the model has {len(predictor.classes)} classes"
        )
    _write_prior(predictor, estimate_prior(q), args.estimate_prior)


def _write_prior(predictor, estimate, path: Path) -> None:
    """The prior file (class name -> frequency) and a summary on stderr."""
    classes = predictor.classes
    atomic_write_text(
        path, json.dumps(dict(zip(classes, estimate.pi.round(6).tolist(), strict=True)), indent=2) + "\n"
    )
    print(
        f"estimated prior from {estimate.images} images (EM, {estimate.iterations} iterations) -> {path}",
        file=sys.stderr,
    )
    width = max(len(c) for c in classes)
    spreads = [None] * len(classes) if estimate.std is None else estimate.std
    for name, value, spread in zip(classes, estimate.pi, spreads, strict=True):
        error = "(no spread from one image)" if spread is None else f"± {spread:.4f}"
        print(f"  {name:<{width}}  {value:7.4f} {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
