"""benchmarks/study.py end to end on a shrunken synthetic-tiny recipe: runs, reuse, resume, report."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from livt.training.config import recipe_path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "study.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("livt_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


study = _load_script()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synthetic-tiny at 16 px with fewer images (40 down to 4 per class): a second or two per run."""
    values = yaml.safe_load(recipe_path("synthetic-tiny").read_text())
    values["dataset_options"].update(image_size=16, n_max=40, n_test=10, val_per_class=4)
    values["finetune"].update(many=20, few=8)  # every shot group has classes
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _argv(recipe: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--recipe", str(recipe), "--runs", str(root / "runs"), "--results", str(root / "docs" / "results.md"),
        "--ft-epochs", "1", "--mgp-epochs", "1", "--only", "mgp/bal-bce", "scratch/ce",
        "--taus", "0.5", "1", "--seeds", "0", "1", "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    assert study.main(_argv(recipe, root)) == 0
    return root


def _row(text: str, label: str) -> list[str]:
    match = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", text, re.MULTILINE)
    assert match, f"no table row for {label}"
    return [cell.strip() for cell in match.group(1).split("|")]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_study_writes_the_table_sweep_and_figures(finished: Path) -> None:
    runs, text = finished / "runs", (finished / "docs" / "results.md").read_text()
    sweep = {tau: _metrics(runs / f"mgp-bal-bce-tau{tau}-s0")["val"]["balanced_acc"] for tau in ("0.5", "1")}
    chosen = max(sweep, key=sweep.get)  # ties: the first listed, as the study does

    headline = _row(text, "MGP + bal-bce")
    assert headline[:2] == ["2", chosen]
    assert all("±" in cell for cell in headline[2:]), headline
    ece = [_metrics(runs / f"mgp-bal-bce-tau{chosen}-s{seed}")["ece"] for seed in (0, 1)]
    assert headline[7].startswith(f"{100 * sum(ece) / 2:.1f} ± ")
    scratch = _row(text, "scratch + ce")
    assert scratch[:2] == ["2", "-"]
    accs = [_metrics(runs / f"scratch-ce-s{seed}")["balanced_acc"] for seed in (0, 1)]
    assert scratch[2].startswith(f"{100 * sum(accs) / 2:.1f} ± ")

    for tau in ("0.5", "1"):
        row = _row(text, tau)
        assert row[0] == f"{100 * sweep[tau]:.1f}"
        assert row[-1] == ("yes" if tau == chosen else "")
    assert "MGP + bal-bce vs scratch + ce: balanced" in text
    assert study.VERDICT_START in text and study.VERDICT_END in text
    assert "livt-train pretrain --recipe" in text and "--split test" in text
    for name in ("per_class", "val_curves", "reliability_before", "reliability_after"):
        figure = finished / "docs" / "figures" / f"study_{name}.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](figures/{figure.name})" in text


def test_rerun_reuses_finished_runs_resumes_partial_ones_and_keeps_the_verdict(
    finished: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, results = finished / "runs", finished / "docs" / "results.md"
    results.write_text(
        results.read_text().replace(
            study._previous_verdict(Path("/nonexistent")),
            f"{study.VERDICT_START}\nMGP helps here.\n{study.VERDICT_END}",
        )
    )
    partial = runs / "scratch-ce-s1"
    (partial / "metrics.json").unlink()  # as if stopped after the last epoch, before the test pass
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    pretrain_stamp = (runs / "mgp" / "checkpoints" / "last" / "meta.json").stat().st_mtime_ns

    assert study.main(_argv(recipe, finished)) == 0
    out = capsys.readouterr().out
    assert f"livt-train finetune --recipe {recipe} --out {partial}" in out and "--resume" in out
    assert out.count("reuse") == 6  # MGP, the sweep's two runs, the grid's seed-0 runs and mgp seed 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (runs / "mgp" / "checkpoints" / "last" / "meta.json").stat().st_mtime_ns == pretrain_stamp
    assert (partial / "metrics.json").is_file()
    assert "MGP helps here." in results.read_text()


def test_a_finished_run_with_another_budget_is_refused(
    finished: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(recipe, finished)
    argv[argv.index("--ft-epochs") + 1] = "2"
    assert study.main(argv) == 2
    assert re.search(r"holds a finished run with another config \(epochs: 1 -> 2\)", capsys.readouterr().err)


def test_dry_run_prints_the_plan_and_trains_nothing(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert study.main(_argv(recipe, tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count("plan    livt-train finetune") == 6  # 2 sweep + 2 scratch seeds + 2 at the chosen tau
    assert f"--tau {study.TAU_PENDING}" in out
    assert not tmp_path.joinpath("runs").exists() and not tmp_path.joinpath("docs").exists()


@pytest.mark.parametrize(
    "extra", [["--only", "mgp/nope"], ["--seeds", "1", "1"], ["--taus", "-1"], ["--ft-epochs", "0"]]
)
def test_bad_arguments_exit_with_status_2(extra: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        study.main(["--runs", str(tmp_path), *extra])
    assert exc.value.code == 2


def test_jobs_run_the_same_study_in_parallel_processes(finished: Path, recipe: Path, tmp_path: Path) -> None:
    assert study.main(_argv(recipe, tmp_path, "--jobs", "3")) == 0
    runs = tmp_path / "runs"
    for name in ("mgp-bal-bce-tau0.5-s0", "scratch-ce-s0", "scratch-ce-s1"):
        assert (runs / f"{name}.finetune.log").read_text().startswith("$ livt-train finetune --recipe")
        # same seeds, same single-threaded loading: a separate process trains the same model
        assert _metrics(runs / name)["balanced_acc"] == _metrics(finished / "runs" / name)["balanced_acc"]
    assert (tmp_path / "docs" / "results.md").is_file()


def test_a_failing_parallel_run_names_its_log(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    values = yaml.safe_load(recipe.read_text())
    values["finetune"]["blr"] = "oops"
    bad.write_text(yaml.safe_dump(values))
    argv = _argv(bad, tmp_path, "--jobs", "2", "--only", "scratch/ce")
    assert study.main(argv) == 2
    err = capsys.readouterr().err
    assert "failed with status" in err and "scratch-ce-s0.finetune.log" in err and "blr" in err


def test_report_only_reports_runs_copied_back_without_checkpoints(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    # Run folders record their --init path: train with relative paths, copy to the same relative place.
    small = ["--taus", "1", "--seeds", "0", "--only", "mgp/bal-bce", "scratch/ce"]
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert study.main([*_argv(recipe, Path(".")), *small]) == 0
    shutil.copytree("runs", tmp_path / "b" / "runs", ignore=shutil.ignore_patterns("checkpoints", "eval-*"))
    monkeypatch.chdir(tmp_path / "b")
    argv = [*_argv(recipe, Path(".")), *small, "--report-only", "--machine", "a GPU machine"]
    assert study.main(argv) == 0
    text = (tmp_path / "b" / "docs" / "results.md").read_text()
    assert "- Machine: a GPU machine." in text
    headline = _row(text, "MGP + bal-bce")
    ece = _metrics(tmp_path / "a" / "runs" / "mgp-bal-bce-tau1-s0")["ece"]
    assert headline[7] == f"{100 * ece:.1f}" and headline[8:] == ["-", "-"]  # no predictions: no T
    assert "ECE after T: - (target at most 3.0): not measured" in text
    assert not list((tmp_path / "b" / "runs").glob("*/checkpoints"))  # nothing was trained


def test_report_only_refuses_a_missing_run(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_argv(recipe, tmp_path), "--taus", "1", "--seeds", "0", "--only", "scratch/ce", "--report-only"]
    assert study.main(argv) == 2
    assert "holds no finished run, and --report-only trains nothing" in capsys.readouterr().err
