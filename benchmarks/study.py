"""The paper's claims on Fashion-MNIST-LT, three seeds a cell, paired (``make study``).

Two settings: imbalance factor 100 (recipe ``fashion-mnist-lt``, the default) and 1000
(``fashion-mnist-lt-if1000``, the smallest round factor that leaves two classes under 20 training
images, so a Few group exists). Per setting and seed, ONE MGP run is shared by every MGP cell of
that seed, and the cells are fine-tuned with the same seed, so differences between cells are
paired. A tau sweep of MGP + bal-bce on the first seed chooses tau on val; the best tau is then
retrained with the other seeds, to compare with a post-hoc logit adjustment of the tau 1 model.

After each fine-tuning run the runner reads its best checkpoint's raw logits on val and test
once and keeps what the report needs in ``analysis.json``: the calibrators fitted on val
(``livt.export.calibration``) and the post-hoc adjustment ``z + gamma * rule(pi)`` with gamma
chosen on val balanced accuracy. Run folders live under ``--runs``; ``--archive`` keeps a small
copy of each finished run (config, metrics, history, analysis: no weights), which counts as done
on a later invocation, so the grid can be run across machines and sessions and reported from
what is there (``--report-only``). The report is ``benchmarks/study_report.py``.

``--robust`` runs the robustness grid instead (``benchmarks/study_robust.py``): MGP + Bal-BCE, MGP +
CE and MGP + Bal-CE smoothed toward the prior, the recipe's own loss against the others, at IF 10, 50,
100 and 1000 (exponential profile) and IF 100 (step profile), sharing the MGP runs and the CE runs
with the claims cells, raw and calibrated; its section of the report is kept when the claims are
reported again.

    python benchmarks/study.py                                  # the whole grid (hours on 2 cores)
    python benchmarks/study.py --robust --settings if1000 if100 if10 if50 if100-step
    python benchmarks/study.py --robust --settings if1000 --cells mgp/bal-ce   # one cell first
    python benchmarks/study.py --dry-run                        # the plan
    python benchmarks/study.py --report-only                    # docs/study.md from what has run
    python benchmarks/study.py --settings if100 --seeds 0 --cells mgp/bal-bce mgp/ce
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from study_grid import (
    CELLS,
    CLAIM_SETTINGS,
    FT_EPOCHS,
    HEADLINE_TAU,
    ROBUST_CELLS,
    ROBUST_SETTINGS,
    ROOT,
    SETTINGS,
    TAUS,
    Study,
    StudyError,
)

from livt.training.checkpoint import CheckpointError
from livt.training.config import PRECISIONS, ConfigError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _tau(text: str) -> float:
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"tau must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/study"), help="folder of the run folders")
    p.add_argument("--archive", type=Path, default=ROOT / "docs" / "study" / "runs",
                   help="small copies of the finished runs, reused as done ('none': keep none)")  # fmt: skip
    p.add_argument(
        "--results", type=Path, default=ROOT / "docs" / "study.md", help="the report (figures/ beside it)"
    )
    p.add_argument(
        "--summary", type=Path, default=ROOT / "docs" / "results.md",
        help="a page beside the report whose study-claims block gets the claims table ('none': no page)",
    )  # fmt: skip
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS),
                   help=f"settings to run, in order (default: {' '.join(CLAIM_SETTINGS)}; with --robust: "
                        f"{' '.join(ROBUST_SETTINGS)})")  # fmt: skip
    p.add_argument("--robust", action="store_true",
                   help="the robustness grid (default recipe, MGP + CE, MGP + Bal-CE) instead of the claims cells")  # fmt: skip
    p.add_argument("--recipe", action="append", default=[], metavar="SETTING=RECIPE",
                   help="another recipe for a setting (repeatable), e.g. if100=tiny.yaml")  # fmt: skip
    p.add_argument("--cells", nargs="+", choices=[*CELLS, *ROBUST_CELLS], metavar="CELL",
                   help=f"cells to run (default: all; claims: {', '.join(CELLS)}; with --robust: "
                        f"{', '.join(ROBUST_CELLS)})")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the same seeds in every cell")
    p.add_argument(
        "--taus",
        type=_tau,
        nargs="+",
        default=list(TAUS),
        help=f"bal-bce tau sweep (must hold {HEADLINE_TAU:g})",
    )
    p.add_argument("--ft-epochs", type=_positive_int, default=FT_EPOCHS,
                   help=f"fine-tuning epochs of every cell (default: {FT_EPOCHS}, the study's budget)")  # fmt: skip
    p.add_argument("--mgp-epochs", type=_positive_int, help="MGP epochs (default: the recipe's)")
    p.add_argument(
        "--jobs", type=_positive_int, default=1, help="runs at once, each in its own process (a GPU)"
    )
    p.add_argument("--device", help="device of every run (livt-train --device)")
    p.add_argument("--precision", choices=PRECISIONS, help="precision of every run")
    p.add_argument("--workers", type=int, help="DataLoader workers of every run")
    p.add_argument("--machine", help="where the runs were made, for the report (default: this machine)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs to train, reuse or resume)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("seeds", "taus"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            parser.error(f"--{name} has duplicates: {values}")
    if HEADLINE_TAU not in args.taus:
        parser.error(f"--taus must include the recipe's tau {HEADLINE_TAU:g}")
    recipes = dict(SETTINGS)
    for item in args.recipe:
        setting, sep, recipe = item.partition("=")
        if not sep or setting not in SETTINGS:
            parser.error(
                f"--recipe expects SETTING=RECIPE with SETTING one of {list(SETTINGS)}, got {item!r}"
            )
        recipes[setting] = recipe
    archive = None if str(args.archive).lower() == "none" else args.archive
    settings = args.settings or list(ROBUST_SETTINGS if args.robust else CLAIM_SETTINGS)
    if len(set(settings)) != len(settings):
        parser.error(f"--settings has duplicates: {settings}")
    grid_cells = tuple(ROBUST_CELLS if args.robust else CELLS)
    cells = tuple(args.cells or grid_cells)
    if not set(cells) <= set(grid_cells):
        parser.error(
            f"--cells of {'the robustness grid' if args.robust else 'the claims'} are {list(grid_cells)}"
        )
    study = Study(
        runs=args.runs, archive=archive, settings=tuple(settings), cells=cells, robust=args.robust,
        seeds=tuple(args.seeds), taus=tuple(args.taus), ft_epochs=args.ft_epochs, mgp_epochs=args.mgp_epochs,
        jobs=args.jobs, dry_run=args.dry_run, report_only=args.report_only, recipes=recipes,
        runtime={k: getattr(args, k) for k in ("device", "precision", "workers") if getattr(args, k) is not None},
    )  # fmt: skip
    command = shlex.join(["python", "benchmarks/study.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    try:
        study.execute()
        if args.dry_run:
            return 0
        if args.robust:
            import study_robust

            summary = study_robust.write(study, args.results, command=command)
            print(json.dumps({"results": str(args.results), **summary}, indent=2))
            return 0
        from study_report import write_report

        summary_page = None if str(args.summary).lower() == "none" else args.summary
        summary = write_report(study, args.results, command=command, machine=args.machine,
                               wall_s=time.monotonic() - started, summary_path=summary_page)  # fmt: skip
    except (StudyError, ConfigError, CheckpointError) as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"results": str(args.results), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
