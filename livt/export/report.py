"""The export report (``export_report.json``) and the tables ``livt-export`` prints from it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "export_report.json"


@dataclass
class ExportReport:
    """What one export did and measured; filled in the order the pipeline runs."""

    run: str
    checkpoint: str
    format: str
    prior: dict[str, Any]
    calibration: dict[str, Any] | None
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def evaluation_table(report: dict[str, Any]) -> str:
    """The per-variant accuracy table of an export report (empty string without an evaluation)."""
    evaluation = report.get("evaluation")
    if not evaluation:
        return ""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    versus = any("agreement_fp32" in m for m in evaluation["variants"].values())
    lines = [
        f"{evaluation['split']} split, {evaluation['samples']} images ({evaluation['split_labels']} labels), "
        f"scored under the folded prior '{evaluation['prior']}'",
        f"{'variant':<20} {'top1':>7} {'bal.acc':>7} {'many':>7} {'medium':>7} {'few':>7} {'ECE':>7} {'agree':>7}"
        + (f" {'vs fp32':>7}" if versus else ""),
    ]
    for name, m in evaluation["variants"].items():
        agree = report["parity"].get(name, {}).get("top1_agreement")
        lines.append(
            f"{name:<20} {pct(m['top1']):>7} {pct(m['balanced_acc']):>7} {pct(m['many']):>7} "
            f"{pct(m['medium']):>7} {pct(m['few']):>7} {pct(m['ece']):>7} {pct(agree):>7}"
            + (f" {pct(m.get('agreement_fp32')):>7}" if versus else "")
        )
    if versus:
        lines.append(
            "(agree: top-1 agreement with PyTorch on the parity images; vs fp32: with onnx-fp32 here)"
        )
    return "\n".join(lines)


def calibration_table(report: dict[str, Any]) -> str:
    """What the calibration minimised and each candidate's scores (empty without a calibration)."""
    cal = report.get("calibration")
    if not cal:
        return ""
    params = cal["params"]
    t = "" if params["temperature"] is None else f", T = {params['temperature']:.4f}"
    lines = [
        f"calibration: {cal['method']}{t} ({cal['selection']}; {cal['criterion']}, {cal['images']} images)",
        f"{'candidate':<12} {'val NLL':>8} {'val ECE':>8} {'test NLL':>9} {'test ECE':>9}",
    ]
    for method, scores in cal["candidates"].items():
        test = scores.get("test", {})
        lines.append(
            f"{method:<12} {scores['val_cv']['nll']:>8.4f} {100 * scores['val_cv']['ece']:>7.2f}% "
            + (f"{test['nll']:>9.4f} {100 * test['ece']:>8.2f}%" if test else f"{'-':>9} {'-':>9}")
        )
    lines.append("(val: held-out folds; test: balanced test split, fitted on all of val; balanced prior)")
    return "\n".join(lines)
