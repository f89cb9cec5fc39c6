"""The image files a command line names: files, folders (searched recursively) and glob patterns."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

# Suffixes of the formats the server accepts (livt.inference.preprocess.ALLOWED_FORMATS).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def collect_images(specs: Sequence[str]) -> list[Path]:
    """Every image file named by ``specs``, in the order given (folders and globs sorted), once each.

    A file named explicitly is taken whatever its suffix; folders and globs contribute files with an
    image suffix. A spec that matches nothing is an error naming it (``FileNotFoundError``).
    """
    found: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            found.update(dict.fromkeys(_images_under(path)))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            images = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            images += [f for m in matches if m.is_dir() for f in _images_under(m)]
            if not images:
                raise FileNotFoundError(f"no image files match {spec!r}")
            found.update(dict.fromkeys(images))
        else:
            raise FileNotFoundError(f"{spec}: no such file or folder")
    return list(found)


def _images_under(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    return files
