"""benchmarks/sweep.py on a shrunken synthetic-tiny recipe: parallel runs, ranking on val, best recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from livt.training.config_sources import build_config, load_run_config, recipe_path

from .scripts import BENCHMARKS, load_script

sweep = load_script(BENCHMARKS / "sweep.py")


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    values = yaml.safe_load(recipe_path("synthetic-tiny").read_text())
    values["dataset_options"].update(image_size=16, n_max=40, n_test=10, val_per_class=4)
    values["finetune"].update(many=20, few=8)
    (root / "tiny.yaml").write_text(yaml.safe_dump(values))
    grid = {
        "recipe": str(root / "tiny.yaml"),
        "pretrain": {"p-a": {"epochs": 1, "warmup_epochs": 0, "depth": 1}},
        "finetune": {
            "f-a": {"init": "p-a", "epochs": 2, "blr": 0.02},
            "f-b": {"init": "p-a", "epochs": 1, "blr": 1e-6},  # learns nothing: ranks last
            "f-s": {"from_scratch": True, "epochs": 1},
        },
        "not_chosen": ["f-s"],
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture(scope="module")
def finished(grid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    argv = ["--grid", str(grid), "--runs", str(root / "runs"), "--jobs", "3", "--workers", "0",
            "--best-recipe", str(root / "best.yaml"), "--report", str(root / "report.json")]  # fmt: skip
    assert sweep.main(argv) == 0
    return root


def test_variants_run_in_parallel_and_rank_on_val(finished: Path) -> None:
    report = json.loads((finished / "report.json").read_text())
    rows = {r["variant"]: r for r in report["ranking"]}
    assert set(rows) == {"f-a", "f-b", "f-s"}
    vals = [r["val_balanced"] for r in report["ranking"]]
    assert vals == sorted(vals, reverse=True)
    for name, row in rows.items():
        metrics = json.loads((finished / "runs" / name / "metrics.json").read_text())
        assert row["val_balanced"] == metrics["val"]["balanced_acc"]
        assert (finished / "runs" / f"{name}.log").read_text().startswith("$ livt-train finetune")
    # the fine-tuning runs took the pretraining variant's model size
    assert load_run_config(finished / "runs" / "f-a").depth == 1
    assert rows["f-s"]["chosen_allowed"] is False


def test_best_recipe_is_a_valid_recipe_of_the_best_allowed_variant(finished: Path) -> None:
    report = json.loads((finished / "report.json").read_text())
    allowed = [r for r in report["ranking"] if r["chosen_allowed"]]
    assert report["best"]["variant"] == allowed[0]["variant"]
    best = finished / "best.yaml"
    values = yaml.safe_load(best.read_text())
    assert values["depth"] == 1 and values["pretrain"]["epochs"] == 1
    winner = allowed[0]["overrides"]
    assert values["finetune"]["blr"] == winner["blr"] and values["finetune"]["epochs"] == winner["epochs"]
    cfg = build_config("finetune", recipe=str(best), overrides={"out": "x", "from_scratch": True})
    assert (cfg.depth, cfg.blr) == (1, winner["blr"])


def test_a_rerun_reuses_finished_runs(finished: Path, grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in (finished / "runs").glob("*/metrics.json")}
    assert sweep.main(["--grid", str(grid), "--runs", str(finished / "runs"), "--workers", "0"]) == 0
    assert capsys.readouterr().out.count("  reuse") == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"finetune": {"f": {"init": "nope"}}, "not_chosen": []}, "init 'nope' is not a pretrain variant"),
        ({"finetune": {"f": {"epochs": 1}}, "not_chosen": []}, "needs init"),
        ({"finetune": {"f": {"from_scratch": True, "blr": -1}}, "not_chosen": []}, "blr must be > 0"),
        ({"extra": 1}, "unknown keys"),
        ({"not_chosen": ["f-zzz"]}, "not a finetune variant"),
    ],
)
def test_a_bad_grid_is_refused_before_anything_runs(
    grid: Path, tmp_path: Path, change: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {**yaml.safe_load(grid.read_text()), **change}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    assert sweep.main(["--grid", str(bad), "--runs", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_finished_run_from_another_grid_is_refused(
    finished: Path, grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = yaml.safe_load(grid.read_text())
    values["finetune"]["f-a"]["blr"] = 0.03
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(values))
    assert sweep.main(["--grid", str(changed), "--runs", str(finished / "runs"), "--workers", "0"]) == 2
    assert "holds a finished run with another config (blr: 0.02 -> 0.03)" in capsys.readouterr().err
