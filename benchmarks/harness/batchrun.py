"""Run several ``livt-train`` commands at once, each in its own process with its own log file.

Small models leave most of a GPU (or a many-core CPU) idle, so the study and the recipe sweep run their
independent runs side by side. Each command runs as ``python -m livt.training.cli ARGV`` with its
output in its log file (progress bars off), so a failure names its log and the log's last lines. A
command can wait for earlier ones (a fine-tuning run for the pretraining it starts from); one whose
prerequisite failed is skipped.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BatchRunError(RuntimeError):
    """One or more commands of a batch failed."""


# Status of a command skipped because a command it needs failed.
SKIPPED = -1


@dataclass(frozen=True)
class Command:
    """``livt-train ARGV``, its output going to ``log``, started once the commands ``after`` succeeded.

    ``after`` holds indices of EARLIER commands of the same batch.
    """

    argv: tuple[str, ...]
    log: Path
    after: tuple[int, ...] = ()


def cli_flags(overrides: dict[str, Any]) -> list[str]:
    """``livt-train`` flags for config overrides: ``{"drop_path": 0.1, "from_scratch": True}`` ->
    ``["--drop-path", "0.1", "--from-scratch"]``; None and False are left out."""
    out = []
    for key, value in overrides.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return out


def run_batch(commands: Sequence[Command], jobs: int, *, tail_lines: int = 15) -> None:
    """Run ``commands``, at most ``jobs`` at a time; raise once all have ended if any failed."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    for i, command in enumerate(commands):
        if any(not 0 <= j < i for j in command.after):
            raise ValueError(f"command {i} may only wait for earlier commands, got after={command.after}")
    # The pool starts tasks in submission order, so a command's prerequisites have all started (or
    # ended) before it waits for them: waiting cannot deadlock the pool.
    futures: list[Future[int]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for command in commands:
            needs = [futures[j] for j in command.after]
            futures.append(pool.submit(_run_after, command, needs))
    statuses = [f.result() for f in futures]
    failures = [(c, s) for c, s in zip(commands, statuses, strict=True) if s != 0]
    if failures:
        raise BatchRunError("\n".join(_describe(c, s, tail_lines) for c, s in failures))


def _run_after(command: Command, needs: list[Future[int]]) -> int:
    if any(f.result() != 0 for f in needs):
        return SKIPPED
    return _run_one(command)


def _describe(command: Command, status: int, tail_lines: int) -> str:
    if status == SKIPPED:
        return f"livt-train {' '.join(command.argv)} skipped: a run it starts from failed"
    return (
        f"livt-train {' '.join(command.argv)} failed with status {status}; "
        f"log {command.log}:\n{_tail(command.log, tail_lines)}"
    )


def _run_one(command: Command) -> int:
    command.log.parent.mkdir(parents=True, exist_ok=True)
    argv = [*command.argv]
    if "--quiet" not in argv:
        argv.append("--quiet")
    with command.log.open("a", encoding="utf-8") as log:
        log.write(f"$ livt-train {' '.join(argv)}\n")
        log.flush()
        return subprocess.run(
            [sys.executable, "-m", "livt.training.cli", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"  (log unreadable: {exc})"
    return "\n".join("  " + line for line in text[-lines:])
