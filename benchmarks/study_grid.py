"""The study's grid: its settings, cells and runs, each run's state, and what is kept of a finished run.

``Study.execute`` trains what is missing (resuming what was interrupted, reusing what is done here or
in the archive); ``Study.result`` reads a finished run for the report (``study_report``), and
``analyse_run`` computes what the report needs of a run once, from its best checkpoint. The command
line is ``benchmarks/study.py``.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from harness.batchrun import BatchRunError, Command, cli_flags, run_batch
from harness.runs import check_reusable, run_state

from livt.training import cli
from livt.training.config import ConfigError, FinetuneConfig
from livt.training.config_sources import build_config
from livt.training.rundir import read_history

# Setting -> recipe, and the data options that cut the recipe's data set at the setting's imbalance.
SETTINGS = {
    "if100": "fashion-mnist-lt",
    "if1000": "fashion-mnist-lt-if1000",
    "if10": "fashion-mnist-lt",
    "if50": "fashion-mnist-lt",
    "if100-step": "fashion-mnist-lt",
}
SETTING_DATA: dict[str, dict[str, Any]] = {
    "if10": {"imbalance_factor": 10.0},
    "if50": {"imbalance_factor": 50.0},
    "if100-step": {"profile": "step"},
}
CLAIM_SETTINGS = ("if100", "if1000")  # the paper's claims, at a medium and a high imbalance
ROBUST_SETTINGS = ("if10", "if50", "if100", "if1000", "if100-step")
CELLS = ("mgp/ce", "mgp/bce", "mgp/bal-ce", "mgp/bal-bce", "scratch/ce", "scratch/bal-bce")
# The claims cells smooth toward uniform, as the paper does and as they were run. The robustness grid
# (--robust): the paper's Bal-BCE, CE and Bal-CE from the same MGP runs under the setting's recipe,
# cell -> (loss, smoothing_toward); the cell the recipe itself ships (``recipe_cell``) is the one the
# others are measured against. CE adds no prior, so both of its smoothings are one loss: "uniform"
# keeps the claims cells' CE runs reusable.
ROBUST_CELLS = {
    "mgp/bal-bce": ("bal-bce", "prior"),
    "mgp/ce": ("ce", "uniform"),
    "mgp/bal-ce": ("bal-ce", "prior"),
}
SWEPT = "mgp/bal-bce"
TAUS = (0.5, 1.0, 1.5, 2.0)
HEADLINE_TAU = 1.0  # the recipe's tau: the cell the other cells and the post-hoc adjustment compare with
# Every cell fine-tunes for 15 epochs, not the recipe's 25: the length the archived runs have, so runs
# from every session stay comparable and reusable.
FT_EPOCHS = 15
GAMMAS = np.round(np.arange(-1.5, 1.5001, 0.05), 2)
ANALYSIS = "analysis.json"
# 2: the calibrated model's test accuracies too. An older analysis of a run whose best checkpoint is
# still there is written again; an archived one (no weights) is kept, and reports "-" for them.
ANALYSIS_VERSION = 2
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
    smoothing: str = "uniform"  # what label smoothing goes toward (--smoothing-toward)

    @property
    def cell(self) -> str:
        return f"{self.init}/{self.loss}"

    @property
    def name(self) -> str:
        tau = "" if self.tau is None else f"-tau{self.tau:g}"
        toward = "" if self.smoothing == "uniform" else f"-{self.smoothing}"
        return f"{self.init}-{self.loss}{tau}{toward}-s{self.seed}"


def robust_run(setting: str, cell: str, seed: int) -> Run:
    """The run of a robustness-grid cell (``ROBUST_CELLS``); every cell starts from the MGP run."""
    loss, smoothing = ROBUST_CELLS[cell]
    return Run(setting, "mgp", loss, seed, smoothing=smoothing)


@functools.cache
def recipe_finetune(recipe: str) -> FinetuneConfig:
    """The fine-tuning config a recipe ships (read once per process; callers only read it)."""
    return build_config("finetune", recipe=recipe, overrides={"init": "mgp"})


def recipe_cell(recipe: str) -> str:
    """The robustness cell that a recipe's own fine-tuning is (its loss and smoothing)."""
    cfg = recipe_finetune(recipe)
    ship = (cfg.loss, cfg.smoothing_toward)
    for cell, (loss, smoothing) in ROBUST_CELLS.items():
        # CE's smoothing has no prior to go toward: either setting is the same loss.
        if loss == ship[0] and (smoothing == ship[1] or loss == "ce"):
            return cell
    raise StudyError(f"recipe {recipe!r} fine-tunes with {ship}, which is none of the cells {ROBUST_CELLS}")


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
    robust: bool = False  # the robustness grid (ROBUST_CELLS) instead of the claims cells
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
        if self.robust:
            return [
                robust_run(s, cell, seed)
                for s in self.settings
                for cell in ROBUST_CELLS
                if cell in self.cells
            ]
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
            if seed == self.seeds[0] and not self.robust:
                tau_star = {s: choose_tau(self, s, seed) for s in self.settings}

    def _train(self, seed: int, runs: list[Run]) -> None:
        """The runs still to train, each MGP run first where a fine-tuning run still needs it."""
        todo: list[tuple[list[str], Path, Path | None]] = []  # argv, run folder, the MGP run it needs
        recorded = len(self.commands)
        for run in runs:
            overrides: dict[str, Any] = {
                "out": str(self.run_dir(run)),
                "loss": run.loss,
                "seed": run.seed,
                "tau": run.tau,
                "smoothing_toward": run.smoothing,
                "epochs": self.ft_epochs,
                "dataset_options": SETTING_DATA.get(run.setting),
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
        needed = {mgp for _, _, mgp in todo if mgp is not None}
        pretrain = []
        for mgp in sorted({self.mgp_dir(r.setting, r.seed) for r in runs if r.init == "mgp"}):
            setting = mgp.parent.name
            overrides = {
                "out": str(mgp), "seed": seed, "epochs": self.mgp_epochs, "dataset_options": SETTING_DATA.get(setting)
            }  # fmt: skip
            if mgp not in needed:  # still a command the reported runs rest on, once it has run
                if run_state("pretrain", mgp) == "done" or self.archived(setting, mgp.name) is not None:
                    self._record(self._argv("pretrain", setting, self._with_runtime(overrides)))
                continue
            planned = self._plan("pretrain", setting, overrides, mgp.name)
            if planned is not None:
                pretrain.append((planned, mgp, None))
        todo = pretrain + todo
        # The report lists the commands in the order they run: this seed's MGP runs first.
        mine = self.commands[recorded:]
        self.commands[recorded:] = sorted(mine, key=lambda c: not c.startswith("livt-train pretrain"))
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
        overrides = self._with_runtime(overrides)
        run_dir = Path(overrides["out"])
        argv = self._argv(stage, setting, overrides)
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
            self._record(argv)
            return None
        if self.report_only:
            return None
        self._record(argv)
        return argv + {"partial": ["--resume"], "stale": ["--overwrite"], "new": []}[state]

    def _with_runtime(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """A run's config overrides with the study's runtime options (device, precision, workers)."""
        return {k: v for k, v in {**overrides, **self.runtime}.items() if v is not None}

    def _argv(self, stage: str, setting: str, overrides: dict[str, Any]) -> list[str]:
        """``livt-train``'s arguments for a run of ``setting``: the recipe, then the overrides as flags.

        The data options are the flags of the same names (``--imbalance-factor``, ``--profile``).
        """
        flags = {k: v for k, v in overrides.items() if k != "dataset_options"}
        return [
            stage,
            "--recipe",
            self.recipes[setting],
            *cli_flags({**flags, **overrides.get("dataset_options", {})}),
        ]

    def _record(self, argv: list[str]) -> None:
        command = f"livt-train {shlex.join(argv)}"
        if command not in self.commands:
            self.commands.append(command)

    # ------------------------------------------------------------ analysis and results

    def analyse(self, run: Run) -> None:
        """Write ``analysis.json`` of a finished run (once a version), then archive the run's small files."""
        folder = self.run_dir(run)
        if (folder / "metrics.json").is_file() and _analysis_version(folder) < ANALYSIS_VERSION:
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


def _analysis_version(folder: Path) -> int:
    """The version of a run's analysis: 0 for none, and the newest when there are no weights to redo it."""
    if not (folder / ANALYSIS).is_file():
        return 0
    if not (folder / "checkpoints" / "best").is_dir():
        return ANALYSIS_VERSION
    return int(json.loads((folder / ANALYSIS).read_text(encoding="utf-8")).get("version", 1))


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
    from livt.metrics import compute_metrics
    from livt.prior import prior_offset

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
        "version": ANALYSIS_VERSION,
        "calibration": {
            "method": choice.calibration.method,
            "ece_after": calibrated["ece"],
            "nll_after": calibrated["nll"],
            # What livt-export --calibrate serves under the balanced prior: a per-class bias (vector
            # scaling) can move the decision, not only the confidence.
            "test": {k: calibrated[k] for k in ("balanced_acc", "many", "medium", "few")},
            "test_tail3": tail3(calibrated["per_class"], counts),
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
    from livt.metrics import tail_accuracy

    return tail_accuracy(per_class, counts, k=min(3, len(counts)))
