"""harness.report.write_json: the printed text, also written into a folder made for it."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report import write_json


def test_the_report_is_written_where_asked_and_returned_as_printed(tmp_path: Path):
    report = {"rows": [{"what": "p50_ms", "measured": 1.5}], "met": True}
    path = tmp_path / "new" / "folder" / "report.json"
    text = write_json(report, path)
    assert path.read_text(encoding="utf-8") == text + "\n" and json.loads(text) == report
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary file left
    assert write_json(report, None) == text
