"""benchmarks/study.py end to end on a shrunken synthetic-tiny recipe: plan, runs, archive, reuse, report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import study  # benchmarks/ is a script folder on pytest's pythonpath, not a package
import study_grid
import study_report
import study_robust
import yaml

from livt.training.config_sources import recipe_path

CELLS = ["mgp/bal-bce", "mgp/ce", "scratch/ce"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synthetic-tiny at 16 px with fewer images (40 down to 4 per class): a second or two per run."""
    values = yaml.safe_load(recipe_path("synthetic-tiny").read_text())
    values["dataset_options"].update(image_size=16, n_max=40, n_test=10, val_per_class=4)
    values["finetune"].update(many=20, few=8)
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _argv(recipe: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--recipe", f"if100={recipe}", "--settings", "if100", "--runs", str(root / "runs"),
        "--archive", str(root / "archive"), "--results", str(root / "docs" / "study.md"), "--summary", "none",
        "--ft-epochs", "2", "--mgp-epochs", "1", "--cells", *CELLS, "--taus", "0.5", "1", "--seeds", "0", "1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    assert study.main(_argv(recipe, root)) == 0
    return root


def test_every_cell_has_every_seed_with_one_mgp_run_per_seed(finished: Path) -> None:
    runs = finished / "runs" / "if100"
    names = {p.name for p in runs.iterdir() if p.is_dir()}
    assert {"mgp-s0", "mgp-s1", "mgp-bal-bce-tau1-s0", "mgp-bal-bce-tau1-s1", "mgp-ce-s0", "mgp-ce-s1",
            "scratch-ce-s0", "scratch-ce-s1", "mgp-bal-bce-tau0.5-s0"} <= names  # fmt: skip
    for seed in (0, 1):
        config = yaml.safe_load((runs / f"mgp-ce-s{seed}" / "config.yaml").read_text())
        assert config["init"] == str(runs / f"mgp-s{seed}") and config["seed"] == seed


def test_analysis_holds_the_calibration_and_the_posthoc_adjustment(finished: Path) -> None:
    analysis = json.loads((finished / "runs" / "if100" / "mgp-ce-s0" / "analysis.json").read_text())
    assert analysis["calibration"]["method"] in ("none", "temperature", "bcts", "vector")
    assert analysis["version"] == study_grid.ANALYSIS_VERSION
    assert 0 <= analysis["calibration"]["test"]["balanced_acc"] <= 1
    posthoc = analysis["posthoc"]
    assert -1.5 <= posthoc["gamma"] <= 1.5 and 0 <= posthoc["test"]["balanced_acc"] <= 1
    # gamma 0 is among the candidates: the chosen one is at least as good on val as the model as trained.
    metrics = json.loads((finished / "runs" / "if100" / "mgp-ce-s0" / "metrics.json").read_text())
    assert posthoc["val_balanced"] >= metrics["val"]["balanced_acc"] - 1e-9


def test_an_older_analysis_is_written_again_where_the_weights_are(finished: Path, recipe: Path) -> None:
    run = finished / "runs" / "if100" / "mgp-ce-s0"
    current = json.loads((run / "analysis.json").read_text())
    old = {k: v for k, v in current.items() if k != "version"}
    old["calibration"] = {k: v for k, v in old["calibration"].items() if k not in ("test", "test_tail3")}
    (run / "analysis.json").write_text(json.dumps(old))
    assert study.main(_argv(recipe, finished, "--report-only")) == 0
    assert json.loads((run / "analysis.json").read_text()) == current
    archived = json.loads((finished / "archive" / "if100" / "mgp-ce-s0" / "analysis.json").read_text())
    assert archived == current


def test_the_report_has_the_tables_the_paired_claims_and_the_figure(finished: Path) -> None:
    text = (finished / "docs" / "study.md").read_text()
    row = re.search(r"^\| MGP \+ bal-bce \| 2 \|(.*)\|$", text, re.MULTILINE)
    assert row, text
    runs = finished / "runs" / "if100"
    accs = [
        json.loads((runs / f"mgp-bal-bce-tau1-s{s}" / "metrics.json").read_text())["balanced_acc"]
        for s in (0, 1)
    ]
    assert row.group(1).split("|")[0].strip().startswith(f"{100 * sum(accs) / 2:.1f} ± ")
    assert "| Bal-BCE beats CE (from MGP) | if100 |" in text
    assert "MGP + bal-bce vs MGP + ce" in text and "Best tau on val" in text
    figure = finished / "docs" / "figures" / "study_convergence_if100.png"
    assert (
        figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](figures/study_convergence_if100.png)" in text
    )
    assert study_report.VERDICT_START in text and "livt-train pretrain --recipe" in text


def test_the_claims_table_is_copied_into_the_summary_page_between_its_markers(
    finished: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = finished / "docs" / "results.md"
    page.write_text(
        f"# Results\n\nbefore\n{study_report.CLAIMS_START}\nold\n{study_report.CLAIMS_END}\nafter\n"
    )
    assert study.main(_argv(recipe, finished, "--report-only", "--summary", str(page))) == 0
    text = page.read_text()
    assert text.startswith("# Results\n\nbefore\n") and text.endswith(f"{study_report.CLAIMS_END}\nafter\n")
    assert "old" not in text and "| Bal-BCE beats CE (from MGP) | if100 |" in text
    assert (
        "| Bal-BCE converges faster than CE: epochs to 95 % of its best val (CE minus Bal-BCE) | if100 |"
        in text
    )
    assert "| MGP + bal-bce | 2 |" in text and "](figures/study_convergence_if100.png)" in text
    page.write_text("# Results without a block\n")
    assert study.main(_argv(recipe, finished, "--report-only", "--summary", str(page))) == 2
    assert "has no <!-- study-claims:start -->" in capsys.readouterr().err


def test_archived_runs_are_reused_without_weights_and_report_only_trains_nothing(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later session: the run folders are gone, the archive (no weights) came with the checkout.

    Run folders record their --init path, so both sessions use the same relative --runs, as the
    default does.
    """
    small = ["--cells", "mgp/ce", "scratch/ce", "--seeds", "0"]
    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    assert study.main([*_argv(recipe, Path(".")), *small]) == 0
    shutil.copytree("archive", tmp_path / "later" / "archive")
    monkeypatch.chdir(tmp_path / "later")
    assert not list(Path("archive").rglob("*.safetensors"))
    capsys.readouterr()
    assert study.main([*_argv(recipe, Path(".")), *small]) == 0
    out = capsys.readouterr().out
    assert "run     livt-train" not in out and out.count("reuse") == 2
    assert not Path("runs").exists()  # not even the MGP run: no fine-tuning needed its weights
    assert "| MGP + ce | 1 |" in Path("docs/study.md").read_text()
    assert study.main([*_argv(recipe, tmp_path / "empty", "--report-only"), *small]) == 0


def test_a_finished_run_with_another_budget_is_refused(
    finished: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(recipe, finished)
    argv[argv.index("--ft-epochs") + 1] = "3"
    assert study.main(argv) == 2
    assert re.search(r"holds a finished run with another config \(epochs: 2 -> 3\)", capsys.readouterr().err)


def test_dry_run_prints_the_plan_and_trains_nothing(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert study.main(_argv(recipe, tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count("plan    livt-train pretrain") == 2 and out.count("plan    livt-train finetune") == 7
    assert not tmp_path.joinpath("runs").exists() and not tmp_path.joinpath("docs").exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--cells", "mgp/nope"],
        ["--seeds", "1", "1"],
        ["--taus", "0.5"],
        ["--recipe", "x"],
        ["--ft-epochs", "0"],
    ],
)
def test_bad_arguments_exit_with_status_2(extra: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        study.main(["--runs", str(tmp_path), *extra])
    assert exc.value.code == 2


def test_paired_verdicts() -> None:
    def res(seed: int, acc: float) -> dict:
        return {"run": study_grid.Run("if100", "mgp", "ce", seed), "metrics": {"balanced_acc": acc}}

    a = [res(s, v) for s, v in enumerate((0.80, 0.82, 0.81))]
    better = [res(s, v) for s, v in enumerate((0.85, 0.871, 0.859))]
    mixed = [res(s, v) for s, v in enumerate((0.79, 0.83, 0.815))]
    assert study_report.verdict(study_report.paired(better, a, "balanced_acc")) == "holds"
    assert study_report.verdict(study_report.paired(a, better, "balanced_acc")) == "does not hold"
    assert study_report.verdict(study_report.paired(mixed, a, "balanced_acc")) == "cannot tell"
    diff = study_report.paired(better, a[:2], "balanced_acc")
    assert diff["n"] == 2 and diff["diffs"] == pytest.approx([0.05, 0.051])
    # Convergence is paired the same way, in epochs: the seeds both cells have, Nones left out.
    epochs = study_report.paired_by_seed({0: 6, 1: 7, 2: None}, {0: 8, 1: 8, 2: 9, 3: 9})
    assert epochs["n"] == 2 and epochs["diffs"] == [-2, -1]


def test_a_claim_on_a_group_no_class_falls_in_does_not_apply() -> None:
    def res(loss: str, seed: int, acc: float) -> dict:
        run = study_grid.Run("if100", "mgp", loss, seed)
        return {"run": run, "metrics": {"balanced_acc": acc, "few": None}, "history": []}

    cells = {"if100": {"mgp/ce": [res("ce", 0, 0.8)], "mgp/bal-bce": [res("bal-bce", 0, 0.84)]}}
    rows = {row.split(" | ")[0].lstrip("| "): row for row in study_report._claims_table(cells)[2:]}
    assert rows["Bal-BCE beats CE on the Few group (from MGP)"].endswith("does not apply (no Few class) |")
    assert rows["Bal-BCE beats CE (from MGP)"].endswith("| 1 | - | cannot tell |")


def test_the_loss_claim_is_also_paired_from_scratch_and_can_fail() -> None:
    def res(loss: str, seed: int, acc: float) -> dict:
        return {"run": study_grid.Run("if1000", "scratch", loss, seed), "metrics": {"balanced_acc": acc}}

    ce, bal = (0.476, 0.510, 0.477), (0.415, 0.426, 0.424)
    cells = {"if1000": {"scratch/ce": [res("ce", s, a) for s, a in enumerate(ce)],
                        "scratch/bal-bce": [res("bal-bce", s, a) for s, a in enumerate(bal)]}}  # fmt: skip
    rows = [row for row in study_report._claims_table(cells) if "(from scratch)" in row]
    assert rows == [
        "| Bal-BCE beats CE (from scratch) | if1000 | -6.6 ± 1.6 points | 3 | 0.019 | does not hold |"
    ]


def _robust_argv(recipe: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--robust", "--recipe", f"if100={recipe}", "--recipe", f"if100-step={recipe}", "--runs", str(root / "runs"),
        "--archive", str(root / "archive"), "--results", str(root / "docs" / "study.md"),
        "--ft-epochs", "2", "--mgp-epochs", "1", "--seeds", "0", "1", *extra,
    ]  # fmt: skip


def test_the_robustness_grid_shares_the_mgp_and_ce_runs_and_reports_raw_and_calibrated(
    finished: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert study.main(_robust_argv(recipe, finished, "--settings", "if100", "if100-step")) == 0
    out = capsys.readouterr().out
    # if100: the claims grid's MGP and CE runs are reused; only the two prior-smoothed cells train.
    assert not re.search(r"run +livt-train pretrain .*/if100/mgp-s", out)
    assert re.search(r"run +livt-train pretrain .*/if100-step/mgp-s0", out)
    assert "reuse   " + str(finished / "runs" / "if100" / "mgp-ce-s0") in out
    runs = finished / "runs"
    for seed in (0, 1):
        for name in (f"mgp-bal-bce-prior-s{seed}", f"mgp-bal-ce-prior-s{seed}"):
            config = yaml.safe_load((runs / "if100" / name / "config.yaml").read_text())
            assert config["smoothing_toward"] == "prior" and config["init"] == str(
                runs / "if100" / f"mgp-s{seed}"
            )
        step = yaml.safe_load((runs / "if100-step" / f"mgp-ce-s{seed}" / "config.yaml").read_text())
        assert step["dataset_options"]["profile"] == "step" and step["smoothing_toward"] == "uniform"
    assert (finished / "archive" / "if100-step" / "mgp-bal-bce-prior-s1" / "analysis.json").is_file()
    text = (finished / "docs" / "study.md").read_text()
    assert text.count(study_robust.ROBUST_START) == 1
    rows = {
        tuple(c.strip() for c in line.split("|")[1:3]): line
        for line in text.splitlines()
        if line.startswith("| if100")
    }
    row = rows[("if100", study_robust.LABELS["mgp/bal-bce"] + ", *recipe*")]  # what synthetic-tiny ships
    metrics = [
        json.loads((runs / "if100" / f"mgp-bal-bce-prior-s{s}" / "metrics.json").read_text()) for s in (0, 1)
    ]
    mean = 100 * sum(m["balanced_acc"] for m in metrics) / 2
    assert row.split("|")[3].strip() == "2" and row.split("|")[5].strip().startswith(f"{mean:.1f} ± ")
    paired = [line for line in text.splitlines() if line.startswith("| if100 | ") and "(p " in line]
    assert [line.split("|")[3].strip() for line in paired] == [study_robust.LABELS["mgp/ce"],
                                                               study_robust.LABELS["mgp/bal-ce"]]  # fmt: skip
    bar_row = next(
        line
        for line in text.splitlines()
        if re.match(r"\| if100-step \|.* [+-][\d.]+ / [+-][\d.]+ \|$", line)
    )
    recipe_margin, paper = (float(m) for m in bar_row.rstrip(" |").rsplit("|", 1)[1].split(" / "))
    assert recipe_margin > 0 and paper > 0  # the tiny recipe's counts (IF 10) cross with neither smoothing
    figure = finished / "docs" / "figures" / study_robust.FIGURE
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"](figures/{study_robust.FIGURE})" in text
    # The claims report, written again, keeps the robustness section.
    assert study.main(_argv(recipe, finished, "--report-only")) == 0
    again = (finished / "docs" / "study.md").read_text()
    assert again.count(study_robust.ROBUST_START) == 1 and row in again and "## Claims" in again


def test_the_robustness_helpers_read_the_setting_the_best_cell_and_vals_pick() -> None:
    assert study_robust.imbalance("if1000") == (1000.0, "exp")
    assert study_robust.imbalance("if100-step") == (100.0, "step")

    def res(cell: str, seed: int, raw: float, calibrated: float, val: float = 0.5) -> dict:
        run = study_grid.robust_run("if100", cell, seed)
        return {"run": run, "metrics": {"balanced_acc": raw, "val": {"balanced_acc": val}},
                "analysis": {"calibration": {"test": {"balanced_acc": calibrated}}}}  # fmt: skip

    by_cell = {"mgp/bal-bce": [res("mgp/bal-bce", 0, 0.80, 0.84, val=0.81)],
               "mgp/ce": [res("mgp/ce", 0, 0.70, 0.86, val=0.72)], "mgp/bal-ce": []}  # fmt: skip
    assert study_robust.best_reading(by_cell) == ("mgp/ce", "calibration", 0.86)
    # Val picks by its own accuracy, not by the test split's best reading.
    assert study_robust.val_pick(by_cell) == ("mgp/bal-bce", 0.81)
    assert study_robust.val_pick({"mgp/bal-bce": [], "mgp/ce": [], "mgp/bal-ce": []}) is None
    assert study_grid.robust_run("if10", "mgp/bal-bce", 2).name == "mgp-bal-bce-prior-s2"
    assert study_grid.robust_run("if10", "mgp/ce", 2).name == "mgp-ce-s2"  # the claims cell's run


def _recipe_with(tmp_path: Path, **finetune: str) -> str:
    values = yaml.safe_load(recipe_path("fashion-mnist-lt").read_text())
    values["finetune"].update(finetune)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(values))
    return str(tmp_path / "r.yaml")


@pytest.mark.parametrize(
    ("finetune", "cell"),
    [({"loss": "bal-bce"}, "mgp/bal-bce"), ({"loss": "bal-ce"}, "mgp/bal-ce"),
     ({"loss": "ce", "smoothing_toward": "prior"}, "mgp/ce"), ({"loss": "ce", "smoothing_toward": "uniform"}, "mgp/ce")],
)  # fmt: skip
def test_the_recipes_cell_is_read_from_its_loss_and_smoothing(
    tmp_path: Path, finetune: dict, cell: str
) -> None:
    assert study_grid.recipe_cell(_recipe_with(tmp_path, **finetune)) == cell


def test_a_recipe_whose_loss_is_no_cell_is_named(tmp_path: Path) -> None:
    # Bal-BCE toward uniform is a claims cell, not one of the grid's.
    recipe = _recipe_with(tmp_path, loss="bal-bce", smoothing_toward="uniform")
    with pytest.raises(
        study_grid.StudyError, match=r"fine-tunes with \('bal-bce', 'uniform'\), which is none"
    ):
        study_grid.recipe_cell(recipe)
