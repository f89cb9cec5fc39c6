"""The paper's ablations at one fine-tuning budget, run through ``livt-train`` (``make study``).

ONE MGP pretraining, then BFT runs: the grid {scratch, MGP} x {ce, bce, bal-ce, bal-bce}, a tau sweep
for MGP + bal-bce (tau chosen on the VAL balanced accuracy, never on test; every bal-bce cell then
uses it) and extra seeds for the two headline cells (MGP + bal-bce, scratch + ce). Each run is an
ordinary run folder under ``--runs``: a finished run is reused, a partial one resumed, so the study
can be stopped and started again. Writes ``docs/results.md`` and its figures.

Calibration: ``livt-train evaluate`` writes the best checkpoint's val and test probabilities; their
logs are the logits up to a per-row constant, which temperature scaling and BCTS ignore (one scale
for every class). The export's own ``select_calibration`` picks one of them on val; it is only
applied to test.

    python benchmarks/study.py --runs runs/study                          # the whole study
    python benchmarks/study.py --ft-epochs 5 --mgp-epochs 10 --dry-run    # print the plan only
    python benchmarks/study.py --only mgp/bal-bce scratch/ce --seeds 0    # a smaller grid
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livt.export.calibration import select_calibration
from livt.training import cli, plots
from livt.training.batchrun import BatchRunError, Command, cli_flags, run_batch
from livt.training.checkpoint import CheckpointError
from livt.training.config import PRECISIONS, ConfigError, build_config, load_run_config
from livt.training.losses import loss_defaults
from livt.training.metrics import compute_metrics, reliability_bins
from livt.training.rundir import RUNTIME_FIELDS, read_history, run_state

LOSSES = ("ce", "bce", "bal-ce", "bal-bce")
INITS = ("scratch", "mgp")
CELLS = tuple(f"{init}/{loss}" for init in INITS for loss in LOSSES)
HEADLINE = ("mgp/bal-bce", "scratch/ce")
SWEPT_LOSS = "bal-bce"
DEFAULT_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
# Placeholder for tau in --dry-run before the sweep has finished.
TAU_PENDING = "BEST_TAU"
# The lead's prose between these markers survives a regeneration of results.md.
VERDICT_START, VERDICT_END = "<!-- verdict:start -->", "<!-- verdict:end -->"
# Issue 6's targets for the default recipe (MGP + bal-bce): balanced, tail-3 (at least), ECE after T (at most).
TARGETS = {"balanced_acc": 0.85, "tail3": 0.88, "ece_after": 0.03}


class StudyError(RuntimeError):
    """A run failed or a run folder holds something the study cannot use."""


@dataclass(frozen=True)
class Spec:
    """One fine-tuning run of the study; ``tau`` None means the recipe's value."""

    init: str
    loss: str
    seed: int
    tau: float | str | None = None

    @property
    def cell(self) -> str:
        return f"{self.init}/{self.loss}"

    @property
    def name(self) -> str:
        tau = (
            "" if self.tau is None else f"-tau{self.tau:g}" if isinstance(self.tau, float) else f"-{self.tau}"
        )
        return f"{self.init}-{self.loss}{tau}-s{self.seed}"


@dataclass(frozen=True)
class _Planned:
    """A ``livt-train`` command still to run and the run folder it writes."""

    argv: list[str]
    run_dir: Path


@dataclass
class Result:
    spec: Spec
    run_dir: Path
    metrics: dict[str, Any]  # the run's metrics.json (test, best checkpoint)
    history: list[dict[str, Any]]
    calibration: dict[str, Any] | None = None


@dataclass
class Study:
    recipe: str
    runs: Path
    cells: tuple[str, ...]
    seeds: tuple[int, ...]
    taus: tuple[float, ...]
    ft_epochs: int | None = None
    mgp_epochs: int | None = None
    quiet: bool = False
    dry_run: bool = False
    jobs: int = 1
    report_only: bool = False  # train and evaluate nothing; report the finished runs as they are
    machine: str | None = None  # where the runs were made, when not here
    runtime: dict[str, Any] = field(default_factory=dict)  # --device/--precision/--workers for every run

    def __post_init__(self) -> None:
        self.commands: list[str] = []

    @property
    def pretrain_dir(self) -> Path:
        return self.runs / "mgp"

    def needs_pretrain(self) -> bool:
        return any(c.startswith("mgp/") or c.endswith("/" + SWEPT_LOSS) for c in self.cells)

    def pretrain(self) -> None:
        if self.report_only:  # its checkpoints may have stayed behind; the report needs none of them
            return
        overrides: dict[str, Any] = {"out": str(self.pretrain_dir)}
        if self.mgp_epochs is not None:
            overrides["epochs"] = self.mgp_epochs
        self._execute([self._plan("pretrain", overrides)])

    def finetune(self, specs: Sequence[Spec]) -> list[Result | None]:
        """Train (or reuse) every spec's run, ``jobs`` at a time; their results (None in a dry run)."""
        self._execute([self._plan("finetune", self._finetune_overrides(spec)) for spec in specs])
        return [self._result(spec) for spec in specs]

    def _finetune_overrides(self, spec: Spec) -> dict[str, Any]:
        overrides: dict[str, Any] = {"out": str(self.runs / spec.name), "loss": spec.loss, "seed": spec.seed}
        if spec.init == "mgp":
            overrides["init"] = str(self.pretrain_dir)
        else:
            overrides["from_scratch"] = True
        if spec.tau is not None:
            overrides["tau"] = spec.tau
        if self.ft_epochs is not None:
            overrides["epochs"] = self.ft_epochs
        return overrides

    def _result(self, spec: Spec) -> Result | None:
        run_dir = self.runs / spec.name
        if not (run_dir / "metrics.json").is_file():
            return None
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        return Result(spec, run_dir, metrics, read_history(run_dir))

    def calibrate(self, results: Sequence[Result]) -> None:
        """ECE of each run's test predictions before and after a temperature fitted on its val predictions."""
        splits = ("val", "test")
        if self.report_only:
            for result in results:
                if not all(_predictions_path(result.run_dir, split).is_file() for split in splits):
                    result.calibration = {
                        "ece_before": result.metrics["ece"],
                        "ece_after": None,
                        "temperature": None,
                    }
            results = [r for r in results if r.calibration is None]
        self._execute([self._plan_predictions(r.run_dir, split) for r in results for split in splits])
        if self.dry_run:
            return
        for result in results:
            z_val, y_val = _read_predictions(_predictions_path(result.run_dir, "val"))
            z_test, y_test = _read_predictions(_predictions_path(result.run_dir, "test"))
            calibration = select_calibration(z_val, y_val, ("temperature", "bcts")).calibration
            counts = result.metrics["train_counts"]
            z_after = calibration.apply(z_test)
            before = compute_metrics(z_test, y_test, counts)
            after = compute_metrics(z_after, y_test, counts)
            probs_before = torch.from_numpy(z_test).softmax(dim=1)
            probs_after = torch.from_numpy(z_after).softmax(dim=1)
            result.calibration = {
                "method": calibration.method,
                "temperature": calibration.temperature,
                "ece_before": before["ece"],
                "ece_after": after["ece"],
                "bins_before": reliability_bins(probs_before, y_test),
                "bins_after": reliability_bins(probs_after, y_test),
            }

    def _plan_predictions(self, run_dir: Path, split: str) -> _Planned | None:
        """``livt-train evaluate --split SPLIT`` writing ``predictions.jsonl`` (None once it exists)."""
        # evaluate's own default for workers would ignore the recipe's setting
        runtime = {"workers": load_run_config(run_dir).workers, **self.runtime}
        argv = ["evaluate", "--run", str(run_dir), "--split", split]
        argv += cli_flags(runtime)
        self._record(argv)
        if _predictions_path(run_dir, split).is_file():
            return None
        return _Planned(argv, run_dir)

    def _plan(self, stage: str, overrides: dict[str, Any]) -> _Planned | None:
        """``livt-train STAGE`` unless its folder holds the finished run (None); resumes a partial one."""
        run_dir = Path(overrides["out"])
        overrides = {**overrides, **self.runtime}
        argv = [stage, "--recipe", self.recipe, *cli_flags(overrides)]
        self._record(argv)
        state = "new" if TAU_PENDING in argv else run_state(stage, run_dir)
        if state == "done":
            self._check_same(stage, run_dir, overrides)
            print(f"  reuse   {run_dir}", flush=True)
            return None
        if self.report_only:
            raise StudyError(f"{run_dir} holds no finished run, and --report-only trains nothing")
        extra = {"partial": ["--resume"], "stale": ["--overwrite"], "new": []}[state]
        return _Planned(argv + extra, run_dir)

    def _execute(self, planned: Sequence[_Planned | None]) -> None:
        """Run the planned commands: in this process one by one, or ``jobs`` processes at a time."""
        todo = [p for p in planned if p is not None]
        for p in todo:
            print(f"  {'plan' if self.dry_run else 'run':<7} livt-train {shlex.join(p.argv)}", flush=True)
        if self.dry_run or not todo:
            return
        if self.jobs > 1:
            logs = [p.run_dir.parent / f"{p.run_dir.name}.{p.argv[0]}.log" for p in todo]
            try:
                run_batch([Command(tuple(p.argv), log) for p, log in zip(todo, logs, strict=True)], self.jobs)
            except BatchRunError as exc:
                raise StudyError(str(exc)) from exc
            return
        for p in todo:
            status = cli.main(p.argv + (["--quiet"] if self.quiet else []))
            if status == 130:
                raise StudyError("interrupted; run the same command again to continue where it stopped")
            if status != 0:
                raise StudyError(f"livt-train {p.argv[0]} for {p.run_dir} failed with status {status}")

    def _record(self, argv: list[str]) -> None:
        command = f"livt-train {shlex.join(argv)}"
        if command not in self.commands:
            self.commands.append(command)

    def _check_same(self, stage: str, run_dir: Path, overrides: dict[str, Any]) -> None:
        """A finished run is only reused when its config is the one the study asks for."""
        try:
            wanted = build_config(stage, recipe=self.recipe, overrides=overrides)
            diffs = load_run_config(run_dir).differences(wanted, RUNTIME_FIELDS)
        except ConfigError as exc:
            raise StudyError(str(exc)) from exc
        if diffs:
            raise StudyError(
                f"{run_dir} holds a finished run with another config ({'; '.join(diffs)}); "
                "delete it or choose another --runs folder"
            )


def _predictions_path(run_dir: Path, split: str) -> Path:
    return run_dir / f"eval-{split}" / "predictions.jsonl"


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and targets of a ``predictions.jsonl``."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    probs = np.array([r["probabilities"] for r in rows], dtype=np.float64)
    # A probability that underflowed to 0 gets the smallest float64 instead of log(0) = -inf.
    return np.log(np.maximum(probs, np.finfo(np.float64).tiny)), np.array([r["target"] for r in rows])


def choose_tau(sweep: dict[float, Result]) -> float:
    """The tau with the best VAL balanced accuracy of the best checkpoint (the first listed wins ties)."""
    return max(sweep, key=lambda tau: sweep[tau].metrics["val"]["balanced_acc"])


def run_study(study: Study) -> tuple[dict[float, Result], float | None, dict[str, list[Result]]]:
    """All runs in order: MGP, the tau sweep, the grid, the extra seeds; then the calibration."""
    base_seed = study.seeds[0]
    if study.needs_pretrain():
        print("== MGP pretraining", flush=True)
        study.pretrain()
    sweep: dict[float, Result] = {}
    tau_star: float | str | None = None
    if any(c.endswith("/" + SWEPT_LOSS) for c in study.cells):
        print(f"== tau sweep: mgp/{SWEPT_LOSS}, seed {base_seed}", flush=True)
        specs = [Spec("mgp", SWEPT_LOSS, base_seed, tau) for tau in study.taus]
        sweep = {s.tau: r for s, r in zip(specs, study.finetune(specs), strict=True) if r is not None}
        tau_star = choose_tau(sweep) if len(sweep) == len(study.taus) else TAU_PENDING
        pending = (
            " (known once the sweep has run; its seed-0 run is then reused)"
            if tau_star == TAU_PENDING
            else ""
        )
        print(f"   tau chosen on val: {tau_star}{pending}", flush=True)
    print("== grid" + (f" and seeds {', '.join(map(str, study.seeds))}" if len(study.seeds) > 1 else ""))
    specs = []
    for cell in study.cells:
        init, loss = cell.split("/")
        seeds = study.seeds if cell in HEADLINE else (base_seed,)
        tau = tau_star if loss == SWEPT_LOSS else None
        specs += [Spec(init, loss, seed, tau) for seed in seeds]
    cells: dict[str, list[Result]] = {cell: [] for cell in study.cells}
    for result in study.finetune(specs):
        if result is not None:
            cells[result.spec.cell].append(result)
    study.calibrate([r for results in cells.values() for r in results])
    return sweep, tau_star if isinstance(tau_star, float) else None, cells


# ---------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _stat(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when a value is missing; std None for one value)."""
    if not values or any(v is None for v in values):
        return None, None
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None


def _cell_value(results: list[Result], key: str) -> tuple[float | None, float | None]:
    calibrated = key in ("ece_before", "ece_after", "temperature")
    return _stat([(r.calibration if calibrated else r.metrics)[key] for r in results])


def _fmt_stat(results: list[Result], key: str) -> str:
    mean, std = _cell_value(results, key)
    if key == "temperature":
        return "-" if mean is None else f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}")
    return _pct(mean) + ("" if std is None else f" ± {_pct(std)}")


def _label(cell: str) -> str:
    init, loss = cell.split("/")
    return f"{'MGP' if init == 'mgp' else 'scratch'} + {loss}"


def _delta(cells: dict[str, list[Result]], a: str, b: str) -> str | None:
    """``A vs B: balanced +x.x points, tail-3 +y.y points`` (means over each cell's seeds)."""
    if not cells.get(a) or not cells.get(b):
        return None
    parts = []
    for key, name in (("balanced_acc", "balanced"), ("tail3", "tail-3")):
        (ma, _), (mb, _) = _cell_value(cells[a], key), _cell_value(cells[b], key)
        parts.append(f"{name} {'-' if ma is None or mb is None else f'{100 * (ma - mb):+.1f} points'}")
    return f"{_label(a)} vs {_label(b)}: {', '.join(parts)}"


def _convergence(result: Result) -> str:
    curve = [r["val"]["balanced_acc"] for r in result.history]
    if not curve:
        return f"{_label(result.spec.cell)}: no val records"
    best = max(curve)
    within = next(i for i, v in enumerate(curve) if v >= best - 0.01)
    return (
        f"{_label(result.spec.cell)} (seed {result.spec.seed}): val balanced {_pct(curve[0])} after epoch 1, "
        f"best {_pct(best)} at epoch {curve.index(best) + 1} of {len(curve)}, "
        f"within 1 point of its best from epoch {within + 1}"
    )


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs ({torch.get_num_threads()} torch threads){gpu}; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"
    )


def _train_minutes(run_dir: Path) -> float:
    return sum(r.get("time", 0.0) for r in read_history(run_dir)) / 60


def write_report(
    study: Study,
    sweep: dict[float, Result],
    tau_star: float | None,
    cells: dict[str, list[Result]],
    *,
    results_path: Path,
    command: str,
    wall_s: float,
) -> None:
    figures = results_path.parent / "figures"
    done = {c: rs for c, rs in cells.items() if rs}
    if not done:
        raise StudyError("no finished fine-tuning run to report")
    first = next(iter(done.values()))[0]
    counts = first.metrics["train_counts"]
    run_cfg = load_run_config(first.run_dir)
    all_runs = [r.run_dir for rs in done.values() for r in rs] + [r.run_dir for r in sweep.values()]
    if study.needs_pretrain():
        all_runs.append(study.pretrain_dir)
    minutes = sum(_train_minutes(d) for d in set(all_runs))
    epochs = sorted({len(r.history) for rs in done.values() for r in rs})

    lines = [
        "# Results: the LiVT ablations",
        "",
        f"Generated by `benchmarks/study.py` on {datetime.date.today().isoformat()}; every number below is "
        "measured by the commands listed at the end. Hyperparameters (best epoch, tau) are chosen on the "
        "balanced VAL split carved from the training images; the test set is only reported.",
        "",
        f"- Data: `{run_cfg.dataset}` (recipe `{study.recipe}`), {len(counts)} classes, "
        f"{sum(counts):,} training images ({max(counts)} down to {min(counts)} per class), "
        f"balanced test set of {first.metrics['num_samples']:,} images.",
        f"- Budget: MGP {_epochs_of(study.pretrain_dir) if study.needs_pretrain() else '-'} epochs (one run, "
        f"seed {study.seeds[0]}, shared by every MGP cell), fine-tuning {'/'.join(map(str, epochs))} epochs; "
        f"model `{run_cfg.model}`.",
        f"- Groups: Many > {run_cfg.many}, Medium {run_cfg.few}-{run_cfg.many}, Few < {run_cfg.few} training "
        "images per class (`-`: no class in the group); tail-3 = mean accuracy of the 3 rarest classes.",
        "- ECE: 15 equal-width bins on the softmax of the raw logits; 'after T' applies to the test logits "
        "the calibrator chosen and fitted on the val predictions (`livt.export.calibration.select_calibration`, "
        "temperature or BCTS).",
        f"- Machine: {study.machine or _machine()}.",
        f"- Time: {minutes:.1f} min of training epochs in all (sum of `metrics.jsonl` epoch times); this "
        f"invocation took {wall_s / 60:.1f} min (finished runs are reused).",
        "",
        "## Table (test split, %, mean ± std over seeds where n > 1)",
        "",
        "| configuration | n | tau | balanced top-1 | Many | Medium | Few | tail-3 | ECE | ECE after T | T |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, results in done.items():
        takes_tau = "tau" in loss_defaults(cell.split("/")[1])
        tau = f"{load_run_config(results[0].run_dir).tau:g}" if takes_tau else "-"
        stats = [_fmt_stat(results, k) for k in ("balanced_acc", "many", "medium", "few", "tail3")]
        calib = [_fmt_stat(results, k) for k in ("ece_before", "ece_after", "temperature")]
        lines.append(f"| {_label(cell)} | {len(results)} | {tau} | {' | '.join(stats + calib)} |")

    if sweep:
        lines += [
            "",
            f"## Tau sweep (MGP + {SWEPT_LOSS}, seed {study.seeds[0]}; tau chosen on val balanced accuracy)",
            "",
            "| tau | val balanced | test balanced | test tail-3 | chosen |",
            "|---|---|---|---|---|",
        ]
        for tau, r in sweep.items():
            chosen = "yes" if tau == tau_star else ""
            lines.append(
                f"| {tau:g} | {_pct(r.metrics['val']['balanced_acc'])} | {_pct(r.metrics['balanced_acc'])} "
                f"| {_pct(r.metrics['tail3'])} | {chosen} |"
            )

    lines += ["", "## Figures", ""]
    for name, caption in _figures(done, figures):
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]

    lines += ["## Comparisons (differences of the means above, test split)", ""]
    pairs = [(f"mgp/{loss}", f"scratch/{loss}") for loss in LOSSES]
    pairs += [(f"{init}/bal-bce", f"{init}/{other}") for init in INITS for other in ("bce", "bal-ce", "ce")]
    pairs.append(("mgp/bal-bce", "scratch/ce"))
    lines += [f"- {d}" for d in (_delta(done, a, b) for a, b in pairs) if d]
    curve_runs = [rs[0] for c, rs in done.items() if c.split("/")[1] in ("ce", "bal-bce")]
    lines += [f"- {_convergence(r)}" for r in curve_runs]
    headline = done.get("mgp/bal-bce")
    if headline:
        lines += ["", "Issue 6's targets for MGP + bal-bce (set for the `fashion-mnist-lt` recipe):", ""]
        for key, target in TARGETS.items():
            value, _ = _cell_value(headline, key)
            at_most = key == "ece_after"
            met = value is not None and (value <= target if at_most else value >= target)
            name = {"balanced_acc": "balanced top-1", "tail3": "tail-3", "ece_after": "ECE after T"}[key]
            lines.append(
                f"- {name}: {_pct(value)} (target {'at most' if at_most else 'at least'} {_pct(target)}): "
                f"{'not measured' if value is None else 'met' if met else 'missed'}"
            )
        lines.append(
            "- reference implementation (issue 6: its MAE code, 40 MGP + 15 bal-bce epochs, 19 min on "
            "2 cores): 80.6 balanced, 88.6 tail-3"
        )

    lines += [
        "",
        "## Which of the paper's claims hold at this scale",
        "",
        _previous_verdict(results_path),
        "",
        "## Commands",
        "",
        "```bash",
        command,
        "# which ran (or reused) these, in order:",
        *study.commands,
        "```",
        "",
    ]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text("\n".join(lines), encoding="utf-8")


def _epochs_of(run_dir: Path) -> int:
    return load_run_config(run_dir).epochs


def _previous_verdict(results_path: Path) -> str:
    """The lead's verdict from the existing results.md (kept across regenerations), or a placeholder."""
    if results_path.is_file():
        text = results_path.read_text(encoding="utf-8")
        start, end = text.find(VERDICT_START), text.find(VERDICT_END)
        if 0 <= start < end:
            return text[start : end + len(VERDICT_END)]
    return f"{VERDICT_START}\n_To be written from the numbers above (kept when the study is re-run)._\n{VERDICT_END}"


def _figures(cells: dict[str, list[Result]], figures: Path) -> list[tuple[str, str]]:
    """Draw the study's figures; return ``(file name, caption)`` of those drawn."""
    drawn = []
    counts = next(iter(cells.values()))[0].metrics["train_counts"]
    headline = {c: cells[c] for c in HEADLINE if c in cells} or dict([next(iter(cells.items()))])
    per_class = {
        # None (a class without test images) becomes NaN, which the plot leaves out
        _label(c): np.array([r.metrics["per_class"] for r in rs], dtype=float).mean(axis=0).tolist()
        for c, rs in headline.items()
    }
    plots.plot_per_class_accuracy(per_class, counts, figures / "study_per_class.png")
    drawn.append(
        ("study_per_class.png", "Test accuracy per class against its training images (mean over seeds)")
    )

    curves = {
        f"{_label(c)} (seed {rs[0].spec.seed})": rs[0].history
        for c, rs in cells.items()
        if c.split("/")[1] in ("ce", "bal-bce")
    }
    if curves:
        plots.plot_val_curves(curves, figures / "study_val_curves.png")
        drawn.append(("study_val_curves.png", "Val balanced accuracy per epoch, ce vs bal-bce"))

    cell, results = next(iter(headline.items()))
    calib = results[0].calibration
    if calib is None or calib["temperature"] is None:  # --report-only without predictions
        return drawn
    for when, title in (
        ("before", "before temperature scaling"),
        ("after", f"after {calib['method']}, T = {calib['temperature']:.2f}"),
    ):
        name = f"study_reliability_{when}.png"
        plots.plot_reliability(calib[f"bins_{when}"], figures / name, title=f"{_label(cell)}: {title}")
        drawn.append((name, f"Reliability of {_label(cell)} (seed {results[0].spec.seed}) on test, {title}"))
    return drawn


def summary(sweep: dict[float, Result], tau_star: float | None, cells: dict[str, list[Result]]) -> dict:
    """The JSON the script prints: per cell the mean test balanced accuracy, tail-3 and ECE after T."""
    return {
        "tau": tau_star,
        "sweep_val_balanced": {f"{t:g}": r.metrics["val"]["balanced_acc"] for t, r in sweep.items()},
        "cells": {
            c: {k: _cell_value(rs, k)[0] for k in ("balanced_acc", "tail3", "ece_after")} | {"n": len(rs)}
            for c, rs in cells.items()
            if rs
        },
    }


# ---------------------------------------------------------------- command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _tau(text: str) -> float:
    value = float(text)
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"tau must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--recipe", default="fashion-mnist-lt", help="livt-train recipe (default fashion-mnist-lt)"
    )
    p.add_argument("--runs", type=Path, default=Path("runs/study"), help="folder of the run folders")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the report (figures/ beside it)")
    p.add_argument("--ft-epochs", type=_positive_int, help="fine-tuning epochs (default: the recipe's)")
    p.add_argument("--mgp-epochs", type=_positive_int, help="MGP epochs (default: the recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the headline cells; the first is used everywhere else")  # fmt: skip
    p.add_argument("--taus", type=_tau, nargs="+", default=[0.5, 1.0, 1.5, 2.0], help="bal-bce tau sweep")
    p.add_argument("--only", nargs="+", choices=CELLS, metavar="CELL",
                   help=f"run only these cells ({', '.join(CELLS)})")  # fmt: skip
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="fine-tuning runs at once, each in its own process (for a GPU or many cores)")  # fmt: skip
    p.add_argument("--device", help="device of every run (livt-train --device)")
    p.add_argument("--precision", choices=PRECISIONS, help="precision of every run (livt-train --precision)")
    p.add_argument("--workers", type=int, help="DataLoader workers of every run")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train and evaluate nothing: report finished runs (e.g. copied back without checkpoints); "
        "ECE after T is left out where a run has no val/test predictions",
    )
    p.add_argument("--machine", help="where the runs were made, for the report (default: this machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs to train, reuse or resume)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("seeds", "taus"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            parser.error(f"--{name} has duplicates: {values}")
    study = Study(
        recipe=args.recipe,
        runs=args.runs,
        cells=tuple(c for c in CELLS if args.only is None or c in args.only),
        seeds=tuple(args.seeds),
        taus=tuple(args.taus),
        ft_epochs=args.ft_epochs,
        mgp_epochs=args.mgp_epochs,
        quiet=args.quiet,
        dry_run=args.dry_run,
        jobs=args.jobs,
        report_only=args.report_only,
        machine=args.machine,
        runtime={
            k: getattr(args, k) for k in ("device", "precision", "workers") if getattr(args, k) is not None
        },
    )
    command = shlex.join(["python", "benchmarks/study.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    try:
        sweep, tau_star, cells = run_study(study)
        if args.dry_run:
            return 0
        write_report(
            study, sweep, tau_star, cells,
            results_path=args.results, command=command, wall_s=time.monotonic() - started,
        )  # fmt: skip
    except (StudyError, ConfigError, CheckpointError) as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"results": str(args.results), **summary(sweep, tau_star, cells)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
