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

    python benchmarks/study.py                                  # the whole grid (hours on 2 cores)
    python benchmarks/study.py --dry-run                        # the plan
    python benchmarks/study.py --report-only                    # docs/study.md from what has run
    python benchmarks/study.py --settings if100 --seeds 0 --cells mgp/bal-bce mgp/ce
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livt.training import cli
from livt.training.batchrun import BatchRunError, Command, cli_flags, run_batch
from livt.training.checkpoint import CheckpointError
from livt.training.config import PRECISIONS, ConfigError
from livt.training.rundir import check_reusable, read_history, run_state

SETTINGS = {"if100": "fashion-mnist-lt", "if1000": "fashion-mnist-lt-if1000"}
CELLS = ("mgp/ce", "mgp/bce", "mgp/bal-ce", "mgp/bal-bce", "scratch/ce", "scratch/bal-bce")
SWEPT = "mgp/bal-bce"
TAUS = (0.5, 1.0, 1.5, 2.0)
HEADLINE_TAU = 1.0  # the recipe's tau: the cell the other cells and the post-hoc adjustment compare with
GAMMAS = np.round(np.arange(-1.5, 1.5001, 0.05), 2)
ANALYSIS = "analysis.json"
KEPT = ("config.yaml", "metrics.json", "metrics.jsonl", ANALYSIS)  # what --archive keeps of a run
ROOT = Path(__file__).resolve().parents[1]


class StudyError(RuntimeError):
    """A run failed or a run folder holds something the study cannot use."""


@dataclass(frozen=True)
class Run:
    """One fine-tuning run; ``tau`` None: the loss's default (the recipe's for bal-bce)."""

    setting: str
    init: str
    loss: str
    seed: int
    tau: float | None = None

    @property
    def cell(self) -> str:
        return f"{self.init}/{self.loss}"

    @property
    def name(self) -> str:
        tau = "" if self.tau is None else f"-tau{self.tau:g}"
        return f"{self.init}-{self.loss}{tau}-s{self.seed}"


@dataclass
class Study:
    runs: Path
    archive: Path | None
    settings: tuple[str, ...]
    cells: tuple[str, ...]
    seeds: tuple[int, ...]
    taus: tuple[float, ...]
    ft_epochs: int | None = None
    mgp_epochs: int | None = None
    jobs: int = 1
    runtime: dict[str, Any] = field(default_factory=dict)  # --device/--precision/--workers of every run
    dry_run: bool = False
    report_only: bool = False
    recipes: dict[str, str] = field(default_factory=lambda: dict(SETTINGS))
    commands: list[str] = field(default_factory=list)

    def mgp_dir(self, setting: str, seed: int) -> Path:
        return self.runs / setting / f"mgp-s{seed}"

    def run_dir(self, run: Run) -> Path:
        return self.runs / run.setting / run.name

    def archived(self, setting: str, name: str) -> Path | None:
        """The archived copy of a finished run, if there is one."""
        if self.archive is None:
            return None
        folder = self.archive / setting / name
        return folder if (folder / "metrics.jsonl").is_file() else None

    # ------------------------------------------------------------ planning and running

    def grid(self, seed: int, tau_star: dict[str, float | None]) -> list[Run]:
        """The fine-tuning runs of one seed: every cell, the tau sweep on the first seed, the best tau after."""
        runs = []
        for setting in self.settings:
            for cell in self.cells:
                init, loss = cell.split("/")
                runs.append(Run(setting, init, loss, seed, HEADLINE_TAU if cell == SWEPT else None))
            if SWEPT in self.cells and seed == self.seeds[0]:
                runs += [Run(setting, "mgp", "bal-bce", seed, t) for t in self.taus if t != HEADLINE_TAU]
            elif SWEPT in self.cells and tau_star.get(setting) not in (None, HEADLINE_TAU):
                runs.append(Run(setting, "mgp", "bal-bce", seed, tau_star[setting]))
        return runs

    def execute(self) -> None:
        """Train (or reuse) everything, seed by seed: after the first seed a complete table exists."""
        tau_star: dict[str, float | None] = {}
        for seed in self.seeds:
            runs = self.grid(seed, tau_star)
            self._train(seed, runs)
            if not self.dry_run:
                for run in runs:
                    self.analyse(run)
            if seed == self.seeds[0]:
                tau_star = {s: choose_tau(self, s, seed) for s in self.settings}

    def _train(self, seed: int, runs: list[Run]) -> None:
        """The runs still to train, each MGP run first where a fine-tuning run still needs it."""
        todo: list[tuple[list[str], Path, Path | None]] = []  # argv, run folder, the MGP run it needs
        for run in runs:
            overrides: dict[str, Any] = {
                "out": str(self.run_dir(run)),
                "loss": run.loss,
                "seed": run.seed,
                "tau": run.tau,
                "epochs": self.ft_epochs,
            }
            if run.init == "mgp":
                overrides["init"] = str(self.mgp_dir(run.setting, run.seed))
            else:
                overrides["from_scratch"] = True
            planned = self._plan("finetune", run.setting, overrides, run.name)
            if planned is not None:
                mgp = self.mgp_dir(run.setting, run.seed) if run.init == "mgp" else None
                todo.append((planned, self.run_dir(run), mgp))
        # An MGP run is trained only for fine-tuning runs that still need its checkpoint: its archived
        # copy (no weights) is no use to them, and no use needed when they are all archived.
        needed = sorted({mgp for _, _, mgp in todo if mgp is not None})
        pretrain = []
        for mgp in needed:
            setting = mgp.parent.name
            overrides = {"out": str(mgp), "seed": seed, "epochs": self.mgp_epochs}
            planned = self._plan("pretrain", setting, overrides, mgp.name)
            if planned is not None:
                pretrain.append((planned, mgp, None))
        todo = pretrain + todo
        for argv, _, _ in todo:
            print(f"  {'plan' if self.dry_run else 'run':<7} livt-train {shlex.join(argv)}", flush=True)
        if self.dry_run or not todo:
            return
        if self.jobs > 1:
            index = {folder: i for i, (_, folder, _) in enumerate(todo)}
            commands = [
                Command(
                    tuple(argv), folder.parent / f"{folder.name}.log", (index[mgp],) if mgp in index else ()
                )
                for argv, folder, mgp in todo
            ]
            try:
                run_batch(commands, self.jobs)
            except BatchRunError as exc:
                raise StudyError(str(exc)) from exc
        else:
            for argv, folder, _ in todo:
                status = cli.main([*argv, "--quiet"])
                if status == 130:
                    raise StudyError("interrupted; run the same command again to continue where it stopped")
                if status != 0:
                    raise StudyError(f"livt-train {argv[0]} for {folder} failed with status {status}")
        for _, folder, _ in pretrain:
            self._keep(folder.parent.name, folder, ("config.yaml", "metrics.jsonl"))

    def _plan(self, stage: str, setting: str, overrides: dict[str, Any], name: str) -> list[str] | None:
        """``livt-train STAGE`` unless the run is finished (None); resumes a partial one.

        A fine-tuning run also counts as finished when it is archived (with its analysis).
        """
        overrides = {k: v for k, v in {**overrides, **self.runtime}.items() if v is not None}
        run_dir = Path(overrides["out"])
        argv = [stage, "--recipe", self.recipes[setting], *cli_flags(overrides)]
        self._record(argv)
        state = run_state(stage, run_dir)
        archived = self.archived(setting, name) if stage == "finetune" and state == "new" else None
        if state == "done" or (archived is not None and _has_analysis(archived)):
            try:
                check_reusable(
                    stage, run_dir if state == "done" else archived, self.recipes[setting], overrides
                )
            except ConfigError as exc:
                raise StudyError(str(exc)) from exc
            print(f"  reuse   {run_dir if state == 'done' else archived}", flush=True)
            return None
        if self.report_only:
            return None
        return argv + {"partial": ["--resume"], "stale": ["--overwrite"], "new": []}[state]

    def _record(self, argv: list[str]) -> None:
        command = f"livt-train {shlex.join(argv)}"
        if command not in self.commands:
            self.commands.append(command)

    # ------------------------------------------------------------ analysis and results

    def analyse(self, run: Run) -> None:
        """Write ``analysis.json`` of a finished run (once), then archive the run's small files."""
        folder = self.run_dir(run)
        if (folder / "metrics.json").is_file() and not (folder / ANALYSIS).is_file():
            (folder / ANALYSIS).write_text(json.dumps(analyse_run(folder), indent=2) + "\n", encoding="utf-8")
        if (folder / ANALYSIS).is_file():
            self._keep(run.setting, folder, KEPT)

    def _keep(self, setting: str, folder: Path, names: Sequence[str]) -> None:
        """Copy a finished run's small files into the archive (weights stay behind)."""
        if self.archive is None or not folder.is_dir():
            return
        target = self.archive / setting / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (folder / name).is_file():
                shutil.copy2(folder / name, target / name)

    def result(self, run: Run) -> dict[str, Any] | None:
        """A finished run's metrics, history and analysis (from its folder, else the archive)."""
        for folder in (self.run_dir(run), self.archived(run.setting, run.name)):
            if folder is not None and _has_analysis(folder):
                return {
                    "run": run,
                    "metrics": json.loads((folder / "metrics.json").read_text(encoding="utf-8")),
                    "history": read_history(folder),
                    "analysis": json.loads((folder / ANALYSIS).read_text(encoding="utf-8")),
                }
        return None


def _has_analysis(folder: Path) -> bool:
    return (folder / ANALYSIS).is_file() and (folder / "metrics.json").is_file()


def choose_tau(study: Study, setting: str, seed: int) -> float | None:
    """The swept tau with the best VAL balanced accuracy of the best checkpoint (None until all ran)."""
    scores = {}
    for tau in study.taus:
        result = study.result(Run(setting, "mgp", "bal-bce", seed, tau))
        if result is None:
            return None
        scores[tau] = result["metrics"]["val"]["balanced_acc"]
    return max(scores, key=scores.get)


def analyse_run(run_dir: Path) -> dict[str, Any]:
    """Calibration and the post-hoc adjustment of a run's best checkpoint, fitted and chosen on val."""
    from livt.export.calibration import select_calibration
    from livt.prior import prior_offset
    from livt.training.metrics import compute_metrics

    logits, targets, meta = raw_logits(run_dir)
    counts = meta["class_counts"]
    pi = np.asarray(counts, dtype=np.float64) / sum(counts)
    choice = select_calibration(logits["val"], targets["val"])
    calibrated = compute_metrics(choice.calibration.apply(logits["test"]), targets["test"], counts)
    # A logit adjustment of the balanced logits: z + gamma * rule(pi), with the loss's own rule
    # (log-odds for the BCE family, log pi otherwise). For a model trained at tau, gamma = tau - t
    # is what training at t would have changed; gamma is chosen on val balanced accuracy.
    direction = prior_offset(pi, meta["loss"], 1.0, len(counts), "loss").astype(np.float64)
    val_scores = [
        compute_metrics(logits["val"] + g * direction, targets["val"], counts)["balanced_acc"] for g in GAMMAS
    ]
    best = max(range(len(GAMMAS)), key=lambda i: (val_scores[i], -abs(GAMMAS[i])))
    gamma = float(GAMMAS[best])
    adjusted = compute_metrics(logits["test"] + gamma * direction, targets["test"], counts)
    return {
        "calibration": {
            "method": choice.calibration.method,
            "ece_after": calibrated["ece"],
            "nll_after": calibrated["nll"],
        },
        "posthoc": {
            "gamma": gamma,
            "val_balanced": val_scores[best],
            "test": {k: adjusted[k] for k in ("balanced_acc", "many", "medium", "few")},
            "test_tail3": tail3(adjusted["per_class"], counts),
        },
    }


def raw_logits(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """The raw (balanced, uncalibrated) logits and labels of val and test for a run's best checkpoint."""
    from livt.export.fold import FoldedClassifier
    from livt.export.onnx import run_torch
    from livt.export.source import iter_batches, load_source, open_split

    source = load_source(run_dir)
    model = FoldedClassifier(source.model, np.zeros(source.num_classes, dtype=np.float32))
    logits, targets = {}, {}
    for split in ("val", "test"):
        batches = [(run_torch(model, x)[0], y) for x, y in iter_batches(open_split(source, split))]
        logits[split] = np.concatenate([z for z, _ in batches]).astype(np.float64)
        targets[split] = np.concatenate([y for _, y in batches])
    return logits, targets, source.meta


def tail3(per_class: Sequence[float | None], counts: Sequence[int]) -> float | None:
    from livt.training.metrics import tail_accuracy

    return tail_accuracy(per_class, counts, k=min(3, len(counts)))


# ---------------------------------------------------------------- command line


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
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--recipe", action="append", default=[], metavar="SETTING=RECIPE",
                   help="another recipe for a setting (repeatable), e.g. if100=tiny.yaml")  # fmt: skip
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS), metavar="CELL",
                   help=f"cells to run ({', '.join(CELLS)})")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the same seeds in every cell")
    p.add_argument(
        "--taus",
        type=_tau,
        nargs="+",
        default=list(TAUS),
        help=f"bal-bce tau sweep (must hold {HEADLINE_TAU:g})",
    )
    p.add_argument("--ft-epochs", type=_positive_int, help="fine-tuning epochs (default: the recipe's)")
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
    study = Study(
        runs=args.runs, archive=archive, settings=tuple(args.settings), cells=tuple(args.cells),
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
        from study_report import write_report

        summary = write_report(study, args.results, command=command, machine=args.machine,
                               wall_s=time.monotonic() - started)  # fmt: skip
    except (StudyError, ConfigError, CheckpointError) as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"results": str(args.results), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
