"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``livt-train finetune --recipe synthetic-tiny --from-scratch``: vit_micro, 10 synthetic classes, 32 px.

    A real trained classifier (the export tests export it; the serving tests serve it).
    """
    import torch

    from livt.training.cli import main as train_main

    run = tmp_path_factory.mktemp("export-run") / "run"
    # One intra-op thread: on a small shared CPU, OpenMP threads contending with other processes make
    # this run several times slower (measured 10 s vs 50 s on 2 busy cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["finetune", "--recipe", "synthetic-tiny", "--from-scratch", "--quiet", "--out", str(run)]
        assert train_main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End with what was skipped and the command that runs it: a skip in the scroll-back is easy to miss."""
    groups: dict[tuple[str, str], list[str]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        key = (report.nodeid.split("::")[0], reason.removeprefix("Skipped: "))
        groups.setdefault(key, []).append(report.nodeid)
    if not groups:
        return
    terminalreporter.section("skipped, and the command that runs it")
    for (path, reason), nodeids in sorted(groups.items()):
        terminalreporter.write_line(f"{path}: {reason} ({len(nodeids)} test(s))")
        terminalreporter.write_line(f"  .venv/bin/pytest {path if len(nodeids) > 2 else ' '.join(nodeids)}")
