"""The image files a command line names: files, folders (searched recursively) and glob patterns."""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Suffixes of the formats the server accepts (livt.inference.preprocess.ALLOWED_FORMATS).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass
class Sources:
    """The image files found, and the named or found entries that cannot be read, with the reason."""

    files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def collect_images(specs: Sequence[str]) -> Sources:
    """Every image file named by ``specs``, in the order given (folders and globs sorted), once each.

    A file named explicitly is taken whatever its suffix; folders and globs contribute files with an
    image suffix. An entry that is not a regular file (a FIFO, a dangling symbolic link, a link
    loop) is listed as unreadable rather than read (a FIFO would block) or skipped silently. A spec
    that matches nothing is an error naming it (``FileNotFoundError``).
    """
    found: dict[Path, None] = {}
    sources = Sources()
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            found.update(dict.fromkeys(_images_under(path, sources)))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            images = _image_files(matches, sources)
            images += [f for m in matches if m.is_dir() for f in _images_under(m, sources)]
            if not images and not sources.unreadable:
                raise FileNotFoundError(f"no image files match {spec!r}")
            found.update(dict.fromkeys(images))
        elif (reason := not_a_file(path)) is not None:
            sources.unreadable.append((path, reason))
        else:
            raise FileNotFoundError(f"{spec}: no such file or folder")
    sources.files = list(found)
    return sources


def not_a_file(path: Path) -> str | None:
    """Why an existing entry is not a regular file to read, or None (a file, a folder or nothing)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to a missing file" if path.is_symlink() else None
    except OSError as exc:
        return "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{kind}, not a regular file"


def _image_files(entries: list[Path], sources: Sources) -> list[Path]:
    images = []
    for entry in entries:
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if entry.is_file():
            images.append(entry)
        elif (reason := not_a_file(entry)) is not None:
            sources.unreadable.append((entry, reason))
    return images


def _images_under(folder: Path, sources: Sources) -> list[Path]:
    before = len(sources.unreadable)
    files = _image_files(sorted(folder.rglob("*")), sources)
    if not files and len(sources.unreadable) == before:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    return files
