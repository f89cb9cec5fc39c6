"""Output files that are whole or absent, and file names shown as text: torch-free, for every CLI."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Control characters would split a one-line message or a CSV row in two.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` on a temporary sibling, fsync it, then rename: readers never see half a file,
    and a failure (a full disk, an encoding error) leaves the old content in place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def display_name(path: Path | str) -> str:
    """``path`` as printable UTF-8 text: bytes that are not UTF-8 (``\\xff``) and control characters
    escaped, so any file name can be written to a UTF-8 file or a terminal line."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


def _umask() -> int:
    # Reading the umask means setting it; mkstemp's 0600 would hide the file from the group.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
