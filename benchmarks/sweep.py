"""Choose a recipe on the VAL split: run a grid of pretraining and fine-tuning variants side by side.

The grid is a YAML file: a base recipe, named pretraining variants and named fine-tuning variants,
each a set of ``livt-train`` overrides. A fine-tuning variant starts from a pretraining variant
(``init: NAME``) and inherits its model-size overrides, or trains ``from_scratch``. Every variant
is an ordinary run folder under ``--runs``; a finished one is reused. The ranking uses the best
epoch's VAL balanced accuracy only (the test split is never read); ``--best-recipe`` writes the
winner as a recipe file that ``livt-train`` and ``benchmarks/study.py`` take as ``--recipe``::

    python benchmarks/sweep.py --grid benchmarks/sweeps/fashion-mnist-lt.yaml --runs runs/sweep \\
        --jobs 8 --workers 1 --device cuda --precision fp32 --best-recipe runs/sweep/best.yaml

Grid variants listed under ``not_chosen`` run for information (a budget the recipe cannot afford,
say) and are ranked, but never written as the best recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from harness.batchrun import BatchRunError, Command, cli_flags, run_batch
from harness.report import write_json
from harness.runs import check_reusable, run_state

from livt.host import host_info
from livt.metrics import tail_accuracy
from livt.training.config import MODEL_SIZE_FIELDS, PRECISIONS, ConfigError
from livt.training.config_sources import build_config, recipe_path
from livt.training.rundir import read_history

_GRID_KEYS = {"recipe", "pretrain", "finetune", "not_chosen"}


class SweepError(RuntimeError):
    """A grid that cannot be run."""


def load_grid(path: Path) -> dict[str, Any]:
    """The grid file, checked: known keys, unique names, every ``init`` names a pretraining variant."""
    try:
        grid = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(f"cannot read grid {path}: {exc}") from exc
    unknown = set(grid) - _GRID_KEYS
    if unknown:
        raise SweepError(f"grid {path}: unknown keys {sorted(unknown)}; allowed: {sorted(_GRID_KEYS)}")
    if "recipe" not in grid or not grid.get("finetune"):
        raise SweepError(f"grid {path} needs a recipe and at least one finetune variant")
    grid.setdefault("pretrain", {})
    grid.setdefault("not_chosen", [])
    shared = set(grid["pretrain"]) & set(grid["finetune"])
    if shared:
        raise SweepError(
            f"grid {path}: names used by both a pretrain and a finetune variant: {sorted(shared)}"
        )
    for name, overrides in grid["finetune"].items():
        init = overrides.get("init")
        if init is None and not overrides.get("from_scratch"):
            raise SweepError(f"finetune variant {name!r} needs init: PRETRAIN_VARIANT or from_scratch: true")
        if init is not None and init not in grid["pretrain"]:
            raise SweepError(f"finetune variant {name!r}: init {init!r} is not a pretrain variant")
    for name in grid["not_chosen"]:
        if name not in grid["finetune"]:
            raise SweepError(f"not_chosen names {name!r}, which is not a finetune variant")
    return grid


def plan(grid: dict[str, Any], runs: Path, runtime: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(stage, name, overrides)`` for every variant, pretraining first; configs are built to check them."""
    out = []
    for name, overrides in grid["pretrain"].items():
        out.append(("pretrain", name, {**overrides, **runtime, "out": str(runs / name)}))
    for name, overrides in grid["finetune"].items():
        overrides = dict(overrides)
        init = overrides.pop("init", None)
        if init is not None:
            sizes = {k: v for k, v in grid["pretrain"][init].items() if k in MODEL_SIZE_FIELDS}
            overrides = {**sizes, **overrides, "init": str(runs / init)}
        out.append(("finetune", name, {**overrides, **runtime, "out": str(runs / name)}))
    for stage, name, overrides in out:
        try:
            build_config(stage, recipe=grid["recipe"], overrides=overrides)
        except ConfigError as exc:
            raise SweepError(f"{stage} variant {name!r}: {exc}") from exc
    return out


def run(grid: dict[str, Any], runs: Path, runtime: dict[str, Any], jobs: int) -> None:
    """Train every variant without a finished run folder (fine-tuning waits for its pretraining)."""
    todo = []
    for stage, name, overrides in plan(grid, runs, runtime):
        run_dir = Path(overrides["out"])
        if run_state(stage, run_dir) != "done":
            todo.append((stage, name, overrides))
            continue
        check_reusable(stage, run_dir, grid["recipe"], overrides)
        print(f"  reuse   {run_dir}", flush=True)
    position = {name: i for i, (_, name, _) in enumerate(todo)}
    commands = []
    for stage, name, overrides in todo:
        argv = (stage, "--recipe", str(grid["recipe"]), *cli_flags(overrides), "--overwrite")
        print(f"  run     livt-train {' '.join(argv)}", flush=True)
        init = grid["finetune"][name].get("init") if stage == "finetune" else None
        after = (position[init],) if init in position else ()
        commands.append(Command(argv, runs / f"{name}.log", after))
    if not commands:
        return
    try:
        run_batch(commands, jobs)
    except BatchRunError as exc:
        raise SweepError(str(exc)) from exc


def rank(grid: dict[str, Any], runs: Path) -> list[dict[str, Any]]:
    """One row per finished fine-tuning variant, best VAL balanced accuracy first."""
    rows = []
    for name, overrides in grid["finetune"].items():
        metrics_path = runs / name / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        val = metrics["val"]
        history = read_history(runs / name)
        rows.append(
            {
                "variant": name,
                "overrides": overrides,
                "pretrain": grid["pretrain"].get(overrides.get("init"), None),
                "val_balanced": val["balanced_acc"],
                "val_tail3": tail_accuracy(val["per_class"], metrics["train_counts"]),
                "best_epoch": metrics["best_epoch"] + 1,
                "epochs": len(history),
                "train_minutes": round(sum(r.get("time", 0.0) for r in history) / 60, 2),
                "chosen_allowed": name not in grid["not_chosen"],
            }
        )
    return sorted(rows, key=lambda r: -r["val_balanced"])


def best_recipe(grid: dict[str, Any], rows: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The best allowed variant and its recipe: the base recipe with the variant's overrides.

    Model sizes go to the top level (both stages need them); everything else to its stage's section.
    """
    allowed = [r for r in rows if r["chosen_allowed"]]
    if not allowed:
        raise SweepError("no finished variant may be chosen")
    winner = allowed[0]
    recipe = yaml.safe_load(recipe_path(str(grid["recipe"])).read_text(encoding="utf-8"))
    finetune = {k: v for k, v in winner["overrides"].items() if k not in ("init", "from_scratch")}
    init = winner["overrides"].get("init")
    pretrain = dict(grid["pretrain"][init]) if init is not None else {}
    for stage, overrides in (("pretrain", pretrain), ("finetune", finetune)):
        recipe.update({k: overrides.pop(k) for k in list(overrides) if k in MODEL_SIZE_FIELDS})
        recipe[stage] = {**recipe.get(stage, {}), **overrides}
    return winner["variant"], recipe


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=Path, required=True, help="the grid YAML file")
    p.add_argument("--runs", type=Path, default=Path("runs/sweep"), help="folder of the run folders")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--device", help="device of every run")
    p.add_argument("--precision", choices=PRECISIONS, help="precision of every run")
    p.add_argument("--workers", type=int, help="DataLoader workers of every run")
    p.add_argument("--best-recipe", type=Path, help="write the best allowed variant as a recipe file here")
    p.add_argument("--report", type=Path, help="also write the JSON report to this file")
    p.add_argument("--dry-run", action="store_true", help="check the grid and print the plan")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    runtime = {
        k: getattr(args, k) for k in ("device", "precision", "workers") if getattr(args, k) is not None
    }
    try:
        grid = load_grid(args.grid)
        if args.dry_run:
            for stage, name, overrides in plan(grid, args.runs, runtime):
                print(f"  plan    {name}: livt-train {stage} {' '.join(cli_flags(overrides))}")
            return 0
        run(grid, args.runs, runtime, args.jobs)
        rows = rank(grid, args.runs)
        report: dict[str, Any] = {"grid": str(args.grid), "host": host_info(), "ranking": rows}
        if args.best_recipe is not None:
            variant, recipe = best_recipe(grid, rows)
            args.best_recipe.parent.mkdir(parents=True, exist_ok=True)
            header = f"# Chosen on val by benchmarks/sweep.py --grid {args.grid}: variant {variant}\n"
            args.best_recipe.write_text(header + yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
            for stage, extra in (("pretrain", {}), ("finetune", {"from_scratch": True})):
                build_config(stage, recipe=str(args.best_recipe), overrides={"out": "check", **extra})
            init = grid["finetune"][variant].get("init")
            report["best"] = {"variant": variant, "pretrain_variant": init, "recipe": str(args.best_recipe)}
    except (SweepError, ConfigError) as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    print(write_json(report, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
