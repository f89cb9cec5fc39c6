"""How a stage shows its progress: tqdm bars on a terminal, the per-epoch log line elsewhere.

A bar redraws itself with carriage returns, which a terminal overwrites and a log file keeps: a
redirected run wrote thousands of updates. ``auto`` draws bars only when stderr is a terminal;
``line`` never does (the per-epoch line that ``train.log`` has is what shows progress); ``none``
also keeps the per-epoch lines off the console (``train.log`` still has them); ``bar`` always draws.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

PROGRESS_MODES = ("auto", "bar", "line", "none")
# ``extra`` of the per-epoch log lines, which ``none`` keeps off the console.
EPOCH_LINE = {"epoch_line": True}


def _not_an_epoch_line(record: logging.LogRecord) -> bool:
    return not getattr(record, "epoch_line", False)


@contextlib.contextmanager
def console_progress(mode: str) -> Iterator[bool]:
    """Set the console up for ``mode``; yields whether to draw progress bars."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, got {mode!r}")
    handlers = logging.getLogger().handlers if mode == "none" else []
    for handler in handlers:
        handler.addFilter(_not_an_epoch_line)
    try:
        yield mode == "bar" or (mode == "auto" and sys.stderr.isatty())
    finally:
        for handler in handlers:
            handler.removeFilter(_not_an_epoch_line)
