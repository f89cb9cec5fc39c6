"""List-file data sets (ImageNet-LT, Places-LT, iNaturalist 2018): ``relative/path label`` per line."""

from __future__ import annotations

from pathlib import Path

from livt.data.formats import missing


def read_list(path: str | Path, root: str | Path) -> list[tuple[str, int]]:
    """``(absolute path, label)`` samples of a list file; image paths are relative to ``root``."""
    path = Path(path)
    if not path.is_file():
        raise missing(f"list file {path.name}", [path.parent], "pass its location with the *_list option")
    samples = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            # Split on the last whitespace: image paths may contain spaces, labels never do.
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: expected 'path label', got {line.strip()!r}")
            label = int(parts[1])
            if label < 0:
                raise ValueError(f"{path}:{lineno}: negative label {label}")
            # Some published lists start paths with "/" though they are relative to the data root.
            samples.append((str(Path(root) / parts[0].lstrip("/")), label))
    if not samples:
        raise ValueError(f"{path}: list file has no samples")
    return samples


def read_classnames(path: str | Path) -> list[str]:
    """Class names, one per line in label order (line ``i`` names label ``i``)."""
    path = Path(path)
    if not path.is_file():
        raise missing(f"class names file {path.name}", [path.parent], "")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: class names file is empty")
    return names
