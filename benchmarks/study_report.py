"""The report of ``benchmarks/study.py``: tables, paired differences, convergence, tau, the claims.

Every comparison is paired: the two cells share the seed (and, for MGP cells, the MGP run), so
the spread of the per-seed differences, not of each cell alone, says whether a difference is
real. A claim "holds" when the paired difference is positive and a paired t-test (scipy) rejects
"no difference" at 5 %, "does not hold" when it is negative and rejected, and "cannot tell"
otherwise (with three seeds, a difference must be large and steady to be told apart).
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from study_grid import CELLS, HEADLINE_TAU, SWEPT, Run, Study, StudyError, choose_tau

VERDICT_START, VERDICT_END = "<!-- verdict:start -->", "<!-- verdict:end -->"
# The robustness grid's section (study_robust), written by ``study.py --robust`` and kept here.
ROBUST_START, ROBUST_END = "<!-- robust:start -->", "<!-- robust:end -->"
# The claims table, copied into a page kept by hand (docs/results.md) between these markers.
CLAIMS_START, CLAIMS_END = "<!-- study-claims:start -->", "<!-- study-claims:end -->"
GROUPS = ("balanced_acc", "many", "medium", "few", "tail3")
LABELS = {"balanced_acc": "balanced", "many": "Many", "medium": "Medium", "few": "Few", "tail3": "tail-3"}
# (claim, cell a, cell b, metric): "a beats b on metric" is the paper's claim.
CLAIMS = (
    ("MGP beats training from scratch (Bal-BCE)", "mgp/bal-bce", "scratch/bal-bce", "balanced_acc"),
    ("MGP beats training from scratch (CE)", "mgp/ce", "scratch/ce", "balanced_acc"),
    ("Bal-BCE beats CE (from MGP)", "mgp/bal-bce", "mgp/ce", "balanced_acc"),
    ("Bal-BCE beats CE on the Few group (from MGP)", "mgp/bal-bce", "mgp/ce", "few"),
    ("Bal-BCE beats CE (from scratch)", "scratch/bal-bce", "scratch/ce", "balanced_acc"),
    ("Bal-BCE beats Bal-CE (from MGP)", "mgp/bal-bce", "mgp/bal-ce", "balanced_acc"),
    ("Bal-BCE beats BCE (from MGP)", "mgp/bal-bce", "mgp/bce", "balanced_acc"),
    ("LiVT (MGP + Bal-BCE) beats scratch + CE", "mgp/bal-bce", "scratch/ce", "balanced_acc"),
)


# How a run's test metrics are read: as trained, after the post-hoc logit adjustment chosen on val,
# or after the calibrator fitted on val (what ``livt-export --calibrate`` serves).
READINGS = {"raw": "", "posthoc": " (post-hoc adjusted)", "calibration": " (calibrated)"}


def value(result: dict[str, Any], key: str, reading: str = "raw") -> float | None:
    """A test metric of a finished run, in one of the ``READINGS`` (None where the analysis lacks it)."""
    if reading == "raw":
        return result["metrics"][key]
    read = result["analysis"][reading]
    return read.get("test_tail3") if key == "tail3" else read.get("test", {}).get(key)


def paired(
    a: list[dict], b: list[dict], key: str, reading_b: str = "raw", reading_a: str = "raw"
) -> dict[str, Any] | None:
    """Per-seed differences a - b on ``key`` over the seeds both cells have, and a paired t-test."""
    return paired_by_seed(
        {r["run"].seed: value(r, key, reading_a) for r in a},
        {r["run"].seed: value(r, key, reading_b) for r in b},
    )


def paired_by_seed(a: dict[int, float | None], b: dict[int, float | None]) -> dict[str, Any] | None:
    """Differences a - b over the seeds both have a value for, and a paired t-test."""
    pairs = [(a[s], b[s]) for s in sorted(a) if s in b and a[s] is not None and b[s] is not None]
    if not pairs:
        return None
    diffs = np.array([x - y for x, y in pairs])
    p_value = None
    if len(diffs) > 1 and np.std(diffs) > 0:
        from scipy.stats import ttest_rel

        p_value = float(ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
    return {"n": len(diffs), "mean": float(diffs.mean()), "std": float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
            "diffs": diffs.tolist(), "p": p_value}  # fmt: skip


def verdict(diff: dict[str, Any] | None) -> str:
    if diff is None:
        return "cannot tell (not run)"
    if diff["p"] is not None and diff["p"] < 0.05:
        return "holds" if diff["mean"] > 0 else "does not hold"
    return "cannot tell"


def collect(study: Study) -> dict[str, dict[str, list[dict]]]:
    """``{setting: {cell: [results by seed]}}`` of the finished runs; bal-bce cells at the recipe's tau."""
    out: dict[str, dict[str, list[dict]]] = {}
    for setting in study.settings:
        out[setting] = {}
        for cell in study.cells:
            init, loss = cell.split("/")
            tau = HEADLINE_TAU if cell == SWEPT else None
            found = [study.result(Run(setting, init, loss, seed, tau)) for seed in study.seeds]
            out[setting][cell] = [r for r in found if r is not None]
    return out


def val_curve(history: Sequence[dict[str, Any]]) -> list[float]:
    """Val balanced accuracy per epoch of a run's history (epochs without a val pass left out)."""
    return [r["val"]["balanced_acc"] for r in history if r.get("val")]


def converged_epoch(history: Sequence[dict[str, Any]], share: float = 0.95) -> int | None:
    """The first epoch (counted from 1) whose val balanced accuracy reaches ``share`` of the run's best."""
    curve = val_curve(history)
    if not curve:
        return None
    best = max(curve)
    return next(i for i, v in enumerate(curve, 1) if v >= share * best)


def write_report(
    study: Study,
    path: Path,
    *,
    command: str,
    machine: str | None,
    wall_s: float,
    summary_path: Path | None = None,
) -> dict[str, Any]:
    """Write the report (``path``, figures beside it) from the finished runs; return a summary.

    ``summary_path``: a page beside ``path`` whose claims block is rewritten with the claims table.
    """
    cells = collect(study)
    figures = path.parent / "figures"
    lines = [
        "# The study: LiVT's claims on Fashion-MNIST-LT, three seeds a cell",
        "",
        f"Generated by `benchmarks/study.py` on {datetime.date.today().isoformat()} from the finished runs "
        "(this folder's `study/runs/` keeps their configs, metrics, histories and analyses). Every choice "
        "(best epoch, tau, the post-hoc gamma, the calibrator) is made on the balanced VAL split carved from "
        "the training images; the test set is only reported.",
        "",
        f"- Machine: {machine or _machine()}. This invocation took {wall_s / 60:.1f} min (finished runs are reused).",
        "- Groups: Many > 100, Medium 20-100, Few < 20 training images; tail-3: the 3 rarest classes.",
        "- Paired differences: same seed (and same MGP run) in both cells; 'p': paired t-test.",
        "",
    ]
    summary: dict[str, Any] = {}
    for setting, by_cell in cells.items():
        lines += _setting_section(study, setting, by_cell, figures)
        summary[setting] = {
            c: {"n": len(rs), "balanced_acc": _mean([value(r, "balanced_acc") for r in rs])}
            for c, rs in by_cell.items()
        }
    claims = _claims_table(cells)
    lines += ["## Claims", "", *claims, "", "## Verdict", "", _previous_verdict(path), "",
              "## Commands", "", "```bash", command, "# which ran (or reused) these, in order:", *study.commands, "```", ""]  # fmt: skip
    lines += [_kept_block(path, ROBUST_START, ROBUST_END), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    if summary_path is not None:
        block = [f"Generated from the finished runs by `{command}` on {datetime.date.today().isoformat()}; "
                 f"every table, the per-seed numbers and each run's command: [{path.name}]({path.name}).", "",
                 *claims, ""]  # fmt: skip
        for setting, by_cell in cells.items():
            if any(by_cell.values()):
                block += [f"{setting} (test, mean ± std over seeds):", "", *_cells_table(by_cell), ""]
                figure = f"study_convergence_{setting}.png"
                if (figures / figure).is_file():
                    block += [f"![val balanced accuracy per epoch, {setting}]({figures.name}/{figure})", ""]
        _write_block(summary_path, block)
    return summary


def _claims_table(cells: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Every claim of the paper, paired, with its verdict; convergence in epochs and early accuracy."""
    lines = [
        "| claim | setting | paired difference | seeds | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for claim, a, b, key in CLAIMS:
        for setting, by_cell in cells.items():
            if a not in by_cell or b not in by_cell:
                continue
            runs = by_cell[a] + by_cell[b]
            if by_cell[a] and by_cell[b] and all(value(r, key) is None for r in runs):
                # Both cells ran, and the setting has no class in the group (IF 100 has no Few class).
                lines.append(f"| {claim} | {setting} | - | 0 | - | does not apply (no {LABELS[key]} class) |")
            else:
                lines.append(_claim_row(claim, setting, paired(by_cell[a], by_cell[b], key), "points"))
    for setting, by_cell in cells.items():
        ce, bal = by_cell.get("mgp/ce", []), by_cell.get("mgp/bal-bce", [])
        # CE minus Bal-BCE: positive when Bal-BCE gets there first.
        epochs = paired_by_seed(
            {r["run"].seed: converged_epoch(r["history"]) for r in ce},
            {r["run"].seed: converged_epoch(r["history"]) for r in bal},
        )
        claim = "Bal-BCE converges faster than CE: epochs to 95 % of its best val (CE minus Bal-BCE)"
        lines.append(_claim_row(claim, setting, epochs, "epochs"))
        early = min((len(r["history"]) for r in ce + bal), default=0) // 3
        if early:
            claim = f"Bal-BCE converges faster than CE: val balanced after epoch {early} (Bal-BCE minus CE)"
            diff = paired_by_seed(
                {r["run"].seed: _val_at(r["history"], early) for r in bal},
                {r["run"].seed: _val_at(r["history"], early) for r in ce},
            )
            lines.append(_claim_row(claim, setting, diff, "points"))
    return lines


def _claim_row(claim: str, setting: str, diff: dict[str, Any] | None, unit: str) -> str:
    shown = "-" if diff is None else f"{_diff(diff, scale=100 if unit == 'points' else 1)} {unit}"
    return f"| {claim} | {setting} | {shown} | {diff['n'] if diff else 0} | {_p(diff)} | {verdict(diff)} |"


def _val_at(history: Sequence[dict[str, Any]], epoch: int) -> float | None:
    curve = val_curve(history)
    return curve[epoch - 1] if 0 < epoch <= len(curve) else None


def _write_block(path: Path, lines: list[str]) -> None:
    """Replace what lies between the study markers in ``path`` (a hand-written page) with ``lines``."""
    if not path.is_file():
        raise StudyError(f"{path} (the page for the study's claims) does not exist; pass --summary none")
    text = path.read_text(encoding="utf-8")
    start, end = text.find(CLAIMS_START), text.find(CLAIMS_END)
    if not 0 <= start < end:
        raise StudyError(f"{path} has no {CLAIMS_START} ... {CLAIMS_END} block for the study's claims")
    block = "\n".join([CLAIMS_START, *lines, CLAIMS_END])
    path.write_text(text[:start] + block + text[end + len(CLAIMS_END) :], encoding="utf-8")


def _setting_section(study: Study, setting: str, by_cell: dict[str, list[dict]], figures: Path) -> list[str]:
    first = next((rs[0] for rs in by_cell.values() if rs), None)
    lines = [f"## {setting} (recipe `{study.recipes[setting]}`)", ""]
    if first is None:
        return [*lines, "No finished run yet.", ""]
    counts = first["metrics"]["train_counts"]
    lines += [
        f"{sum(counts):,} training images, {max(counts)} down to {min(counts)} per class ({', '.join(map(str, counts))}); "
        f"balanced test set of {first['metrics']['num_samples']:,} images.",
        "",
        *_cells_table(by_cell),
    ]
    lines += ["", "Paired differences (points, mean ± std over seeds):", "",
              "| comparison | balanced | Many | Medium | Few | tail-3 |", "|---|---|---|---|---|---|"]  # fmt: skip
    # (cell a, its reading, cell b, its reading)
    pairs = [(a, "raw", b, "raw") for _, a, b, k in CLAIMS if k == "balanced_acc"]
    pairs += [
        ("mgp/bal-bce", "raw", "mgp/ce", "posthoc"),
        ("mgp/bal-bce", "calibration", "mgp/ce", "calibration"),
    ]
    for a, reading_a, b, reading_b in pairs:
        if a not in by_cell or b not in by_cell:
            continue
        diffs = [_diff(paired(by_cell[a], by_cell[b], k, reading_b, reading_a)) for k in GROUPS]
        lines.append(
            f"| {_label(a)}{READINGS[reading_a]} vs {_label(b)}{READINGS[reading_b]} | {' | '.join(diffs)} |"
        )
    lines += ["", *_tau_section(study, setting, by_cell), *_convergence_section(setting, by_cell, figures)]
    return lines


def _cells_table(by_cell: dict[str, list[dict]]) -> list[str]:
    """One row per cell: test accuracy by group, as trained, post-hoc adjusted and calibrated."""
    lines = [
        "| cell | n | balanced | Many | Medium | Few | tail-3 | balanced, post-hoc adjusted | gamma | "
        "balanced, calibrated | ECE | ECE calibrated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in CELLS:
        results = by_cell.get(cell, [])
        if not results:
            continue
        stats = [_stat([value(r, k) for r in results]) for k in GROUPS]
        adjusted = _stat([value(r, "balanced_acc", "posthoc") for r in results])
        gammas = [r["analysis"]["posthoc"]["gamma"] for r in results]
        ece = _stat([r["metrics"]["ece"] for r in results])
        ece_after = _stat([r["analysis"]["calibration"]["ece_after"] for r in results])
        calibrated = _stat([value(r, "balanced_acc", "calibration") for r in results])
        lines.append(f"| {_label(cell)} | {len(results)} | {' | '.join(stats)} | {adjusted} | "
                     f"{', '.join(f'{g:+.2f}' for g in gammas)} | {calibrated} | {ece} | {ece_after} |")  # fmt: skip
    return lines


def _tau_section(study: Study, setting: str, by_cell: dict[str, list[dict]]) -> list[str]:
    """The sweep on the first seed, then: retrained at the best tau vs post-hoc adjusting the tau 1 model."""
    if SWEPT not in by_cell:
        return []
    seed0 = study.seeds[0]
    sweep = {t: study.result(Run(setting, "mgp", "bal-bce", seed0, t)) for t in study.taus}
    lines = [f"Tau (MGP + bal-bce, seed {seed0}; chosen on val balanced accuracy):", "",
             "| tau | val balanced | test balanced | test Few | test tail-3 |", "|---|---|---|---|---|"]  # fmt: skip
    for tau, r in sweep.items():
        if r is not None:
            lines.append(f"| {tau:g} | {_pct(r['metrics']['val']['balanced_acc'])} | {_pct(r['metrics']['balanced_acc'])} "
                         f"| {_pct(r['metrics']['few'])} | {_pct(r['metrics']['tail3'])} |")  # fmt: skip
    best = choose_tau(study, setting, seed0)
    lines.append("")
    if best is None:
        return [*lines, "The sweep has not finished.", ""]
    retrained = [r for r in (study.result(Run(setting, "mgp", "bal-bce", s, best)) for s in study.seeds) if r]
    base = by_cell[SWEPT]
    lines.append(f"Best tau on val: **{best:g}**. Post-hoc adjustment of the tau {HEADLINE_TAU:g} model "
                 "(`z + gamma * log-odds(pi)`, gamma chosen on val) against the model retrained at the best tau:")  # fmt: skip
    lines += ["", "| | n | balanced | Few | tail-3 |", "|---|---|---|---|---|",
              f"| tau {HEADLINE_TAU:g}, as trained | {len(base)} | " + " | ".join(_stat([value(r, k) for r in base]) for k in ("balanced_acc", "few", "tail3")) + " |",
              f"| tau {HEADLINE_TAU:g} + post-hoc gamma | {len(base)} | " + " | ".join(_stat([value(r, k, "posthoc") for r in base]) for k in ("balanced_acc", "few", "tail3")) + " |",
              f"| retrained at tau {best:g} | {len(retrained)} | " + " | ".join(_stat([value(r, k) for r in retrained]) for k in ("balanced_acc", "few", "tail3")) + " |"]  # fmt: skip
    if retrained and best != HEADLINE_TAU:
        diff = paired(retrained, base, "balanced_acc", "posthoc")
        lines.append(f"\nRetrained minus post-hoc (balanced, paired): {_diff(diff)} points, p {_p(diff)}.")
    return [*lines, ""]


def _convergence_section(setting: str, by_cell: dict[str, list[dict]], figures: Path) -> list[str]:
    """Val balanced accuracy per epoch, mean and spread over seeds, CE against Bal-BCE from MGP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {c: by_cell.get(c, []) for c in ("mgp/ce", "mgp/bal-bce", "scratch/ce", "scratch/bal-bce")}
    curves = {c: rs for c, rs in curves.items() if rs}
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = ["| cell | epoch reaching 95 % of its best (per seed) | best val balanced |", "|---|---|---|"]
    for cell, results in curves.items():
        per_seed = [val_curve(res["history"]) for res in results]
        length = min(map(len, per_seed))
        arr = np.array([curve[:length] for curve in per_seed], dtype=float)
        epochs = np.arange(1, arr.shape[1] + 1)
        mean = arr.mean(axis=0)
        line = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{_label(cell)} (n={len(results)})")[0]
        if len(results) > 1:
            ax.fill_between(epochs, arr.min(axis=0), arr.max(axis=0), color=line.get_color(), alpha=0.2)
        reached = [converged_epoch(res["history"]) for res in results]
        rows.append(f"| {_label(cell)} | {', '.join(map(str, reached))} | {_stat(list(arr.max(axis=1)))} |")
    ax.set(
        xlabel="fine-tuning epoch",
        ylabel="val balanced accuracy",
        title=f"{setting}: mean over seeds (band: min-max)",
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    figures.mkdir(parents=True, exist_ok=True)
    name = f"study_convergence_{setting}.png"
    fig.tight_layout()
    fig.savefig(figures / name, dpi=120)
    plt.close(fig)
    return [f"![convergence, {setting}](figures/{name})", "", *rows, ""]


def _stat(values: Sequence[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = 100 * float(np.mean(values))
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * float(np.std(values, ddof=1)):.1f}"


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _diff(diff: dict[str, Any] | None, scale: float = 100) -> str:
    """``mean ± std`` of a paired difference, in points (``scale`` 100) or in its own units (1)."""
    if diff is None:
        return "-"
    mean = f"{scale * diff['mean']:+.1f}"
    return mean if diff["std"] is None else f"{mean} ± {scale * diff['std']:.1f}"


def _p(diff: dict[str, Any] | None) -> str:
    if diff is None or diff["p"] is None:
        return "-"
    return "< 0.001" if diff["p"] < 0.0005 else f"{diff['p']:.3f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _label(cell: str) -> str:
    init, loss = cell.split("/")
    return f"{'MGP' if init == 'mgp' else 'scratch'} + {loss}"


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def _previous_verdict(path: Path) -> str:
    """The lead's verdict kept from the existing report across regenerations, or a placeholder."""
    placeholder = "_To be written from the numbers above (kept when the study is re-run)._"
    return _kept_block(path, VERDICT_START, VERDICT_END) or f"{VERDICT_START}\n{placeholder}\n{VERDICT_END}"


def _kept_block(path: Path, start_marker: str, end_marker: str) -> str:
    """The block between two markers of the existing report, markers included ("" where there is none)."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        start, end = text.find(start_marker), text.find(end_marker)
        if 0 <= start < end:
            return text[start : end + len(end_marker)]
    return ""
