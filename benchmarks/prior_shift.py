"""Calibration and label shift on a fine-tuned run: every calibrator, prior rule and prior source.

    python benchmarks/prior_shift.py --run runs/fmnist/finetune --json runs/bench/prior_shift.json

The calibrators are fitted on the run's balanced val split (never on test). The balanced test set
is split per class into two disjoint pools: "unlabeled" images the prior is estimated from, and
"scored" images the metrics are computed on. Each shifted set resamples both pools (seeded, with
replacement) to a label distribution: (a) the training prior, (b) the reversed long tail, (c) five
Dirichlet(1) draws, (d) 90 % one class, once the head and once the rarest class, and a balanced
stream. For each set: top-1, balanced accuracy, NLL and ECE of the scored images under the priors
balanced / train / estimated from 500 and from 2,000 unlabeled images (EM, and BBSE for
comparison) / the true one, for both prior rules and every calibrator. Prints JSON (and writes it
with ``--json``); ``--markdown`` writes the tables for docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from harness.report import write_json

from livt.export.calibration import CALIBRATORS, select_calibration
from livt.export.fold import FoldedClassifier
from livt.export.source import iter_batches, load_source, open_split
from livt.host import host_info
from livt.label_shift import bbse_prior, em_prior, total_variation
from livt.metrics import compute_metrics
from livt.prior import PRIOR_RULES, prior_offset, softmax

UNLABELED_SIZES = (500, 2000)
SCORED = 10_000
METHODS = ("none", *CALIBRATORS)
# What a calibrated artifact must reach (ECE on the balanced and on the true-prior test set, the
# estimated prior's total variation after 2,000 images), checked on the chosen calibrator and the default rule.
TARGETS = {"ece_balanced": 0.02, "ece_true_prior": 0.03, "tv_2000": 0.05}


def raw_logits(source: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The run's raw (balanced, uncalibrated) logits and the labels of ``split``."""
    from livt.export.onnx import run_torch

    model = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32))
    logits, targets = [], []
    for x, y in iter_batches(open_split(source, split)):
        logits.append(run_torch(model, x)[0])
        targets.append(y)
    return np.concatenate(logits).astype(np.float64), np.concatenate(targets)


def shifted_priors(train_pi: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    k = len(train_pi)
    rng = np.random.default_rng(seed)
    priors = {"balanced": np.full(k, 1 / k), "train (a)": train_pi, "reversed (b)": train_pi[::-1].copy()}
    for i in range(5):
        priors[f"dirichlet-{i} (c)"] = rng.dirichlet(np.ones(k))
    for name, c in (("head", int(np.argmax(train_pi))), ("tail", int(np.argmin(train_pi)))):
        one = np.full(k, 0.1 / (k - 1))
        one[c] = 0.9
        priors[f"90% {name} (d)"] = one
    return priors


def split_pools(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, half the test images go to the unlabeled pool, half to the scored pool."""
    rng = np.random.default_rng(seed)
    unlabeled, scored = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        unlabeled.append(members[: len(members) // 2])
        scored.append(members[len(members) // 2 :])
    return np.concatenate(unlabeled), np.concatenate(scored)


def resample(pool: np.ndarray, y: np.ndarray, pi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices of ``pool`` whose labels are drawn from ``pi`` (images with replacement)."""
    labels = rng.choice(len(pi), size=n, p=pi)
    by_class = {c: pool[y[pool] == c] for c in range(len(pi))}
    return np.array([rng.choice(by_class[c]) for c in labels])


def score(c: np.ndarray, y: np.ndarray, offset: np.ndarray, counts: list[int]) -> dict[str, float]:
    m = compute_metrics(c + offset, y, counts)
    return {k: float(m[k]) for k in ("top1", "balanced_acc", "nll", "ece")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    source = load_source(args.run)
    meta = source.meta
    counts = list(meta["class_counts"])
    loss, tau, k = meta["loss"], float(meta["tau"]), source.num_classes
    train_pi = np.asarray(counts, dtype=np.float64) / sum(counts)
    z_val, y_val = raw_logits(source, "val")
    z_test, y_test = raw_logits(source, "test")

    choice = select_calibration(z_val, y_val)
    calibrators = choice.candidates
    report: dict[str, Any] = {
        "run": str(args.run),
        "host": host_info(),
        "val_images": len(y_val),
        "test_images": len(y_test),
        "calibration": {
            "chosen": choice.calibration.method,
            "val_cv": choice.scores,
            "test_balanced": {
                m: score(cal.apply(z_test), y_test, 0.0, counts) for m, cal in calibrators.items()
            },
            "params": {m: cal.to_dict() for m, cal in calibrators.items()},
        },
        "sets": {},
    }
    unlabeled_pool, scored_pool = split_pools(y_test, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    for name, pi in shifted_priors(train_pi, args.seed).items():
        scored = resample(scored_pool, y_test, pi, SCORED, rng)
        unlabeled = {n: resample(unlabeled_pool, y_test, pi, n, rng) for n in UNLABELED_SIZES}
        entry: dict[str, Any] = {"pi": pi.tolist(), "calibrators": {}}
        for method, cal in calibrators.items():
            c_scored = cal.apply(z_test[scored])
            c_val = cal.apply(z_val)
            sources = {"balanced": None, "train": train_pi, "true": pi}
            estimates: dict[str, dict[str, Any]] = {}
            for n, idx in unlabeled.items():
                q = softmax(cal.apply(z_test[idx]))
                em = em_prior(q)[0]
                bbse = bbse_prior(softmax(c_val), y_val, q)
                sources[f"em-{n}"], sources[f"bbse-{n}"] = em, bbse
                estimates[f"em-{n}"] = {"tv": total_variation(em, pi)}
                estimates[f"bbse-{n}"] = {"tv": total_variation(bbse, pi)}
            results = {
                rule: {
                    src: score(c_scored, y_test[scored], prior_offset(p, loss, tau, k, rule), counts)
                    for src, p in sources.items()
                }
                for rule in PRIOR_RULES
            }
            entry["calibrators"][method] = {"estimates": estimates, "rules": results}
        report["sets"][name] = entry
    report["targets"] = check_targets(report, args.rule)
    return report


def check_targets(report: dict[str, Any], rule: str) -> dict[str, Any]:
    """``TARGETS`` on the chosen calibrator under ``rule``: each as measured, and met or not."""
    method = report["calibration"]["chosen"]
    ece_balanced = report["calibration"]["test_balanced"][method]["ece"]
    rows = {}
    for name, entry in report["sets"].items():
        r = entry["calibrators"][method]["rules"][rule]
        rows[name] = {
            "ece_true": r["true"]["ece"],
            "top1_est2000_minus_true": r["em-2000"]["top1"] - r["true"]["top1"],
            "top1_est2000_minus_balanced": r["em-2000"]["top1"] - r["balanced"]["top1"],
            "tv_2000": entry["calibrators"][method]["estimates"]["em-2000"]["tv"],
        }
    return {"calibrator": method, "rule": rule, "ece_balanced": ece_balanced, "sets": rows}


def markdown(report: dict[str, Any], rule: str) -> str:
    """The tables for docs/results.md: calibrators on the balanced test set, then each shifted set."""
    cal = report["calibration"]
    out = [
        f"Calibrators fitted on {report['val_images']} balanced val images; chosen by 5-fold CV NLL: "
        f"**{cal['chosen']}**.",
        "",
        "| calibrator | val NLL (CV) | val ECE (CV) | test top-1 | test NLL | test ECE |",
        "|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        v, t = cal["val_cv"][m], cal["test_balanced"][m]
        out.append(
            f"| {m} | {v['nll']:.4f} | {100 * v['ece']:.2f} % | {100 * t['top1']:.2f} | {t['nll']:.4f} | "
            f"{100 * t['ece']:.2f} % |"
        )
    for method in (cal["chosen"],):
        out += [
            "",
            f"Shifted test sets, calibrator **{method}**: top-1 % (ECE %) of {SCORED} scored images under each "
            "prior, and the total variation distance of the estimates to the true prior.",
            "",
        ]
        for r in PRIOR_RULES:
            out += [
                f"Rule **{r}**{' (default)' if r == rule else ''}:",
                "",
                "| set | balanced | train | EM 500 | EM 2000 | BBSE 2000 | true | TV EM 500 | TV EM 2000 | TV BBSE 2000 |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for name, entry in report["sets"].items():
                res = entry["calibrators"][method]["rules"][r]
                est = entry["calibrators"][method]["estimates"]
                cells = [
                    f"{100 * res[s]['top1']:.2f} ({100 * res[s]['ece']:.1f})"
                    for s in ("balanced", "train", "em-500", "em-2000", "bbse-2000", "true")
                ]
                tvs = [f"{est[s]['tv']:.3f}" for s in ("em-500", "em-2000", "bbse-2000")]
                out.append(f"| {name} | {' | '.join(cells)} | {' | '.join(tvs)} |")
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a fine-tuned run folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rule", choices=PRIOR_RULES, default="bayes", help="the rule the targets are checked on"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--markdown", type=Path, help="write the tables for docs/results.md here")
    args = parser.parse_args(argv)
    report = run(args)
    write_json(report, args.json)
    if args.markdown:
        args.markdown.write_text(markdown(report, args.rule) + "\n", encoding="utf-8")
    print(json.dumps(report["targets"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
