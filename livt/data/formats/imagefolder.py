"""Image folders: ``root/<split>/<class>/<image>``, classes named by the training folders."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from livt.data.formats import missing


def scan_classes(root: str | Path, split: str = "train") -> list[str]:
    """Sorted class folder names of ``root/<split>``; those of train define every split's labels."""
    folder = Path(root) / split
    if not folder.is_dir():
        what = "image folder training split" if split == "train" else f"image folder split {split!r}"
        raise missing(what, [folder], f"expected root/{split}/<class>/<image>")
    classes, _ = find_classes(folder)
    return classes


def scan_split(root: str | Path, split: str, classes: list[str]) -> list[tuple[str, int]]:
    """``(path, label)`` samples of ``root/<split>``, files in sorted order within each class."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise missing(f"image folder split {split!r}", [folder], f"expected root/{split}/<class>/<image>")
    unknown = sorted(set(find_classes(folder)[0]) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown} are not among the training classes")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    # Every training class needs images; val/test may leave a class out.
    samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=split != "train")
    if not samples:
        raise missing(f"images in {folder}", [folder], f"supported extensions: {', '.join(IMG_EXTENSIONS)}")
    return samples
