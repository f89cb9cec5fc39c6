"""Output files that are whole or absent, and file names shown as text: torch-free, for every CLI."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# Control characters would split a one-line message or a CSV row in two.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp_path)`` on a temporary sibling, fsync it, then rename:
    readers never see half a file, and a failure (a full disk, an encoding error) leaves the old
    content in place. The folder is made where missing, and the rename is made durable too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file 0600 (and a writer may make its own file anew): outputs are for the
        # group to read, as open() would have made them.
        os.chmod(tmp, _new_file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if (
            isinstance(exc, OSError) and exc.errno is not None and exc.filename is None
        ):  # write() names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write`` of UTF-8 text, newlines as given."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


def display_name(path: Path | str) -> str:
    """``path`` as printable UTF-8 text: bytes that are not UTF-8 (``\\xff``) and control characters
    escaped, so any file name can be written to a UTF-8 file or a terminal line."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


@functools.cache
def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process umask (read once: setting it is
    the only way to read it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
