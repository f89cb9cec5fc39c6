import pytest

from livt.data.formats import DatasetNotFoundError
from livt.data.formats.imagefolder import scan_classes, scan_split

from ..writers import write_png


def test_sorted_classes_and_files(tmp_path):
    for name in ("b/2.png", "b/10.png", "a/z.jpg", "a/notes.txt"):
        path = tmp_path / "train" / name
        if path.suffix == ".txt":
            path.write_text("not an image")
        else:
            write_png(path, 0)
    classes = scan_classes(tmp_path)
    assert classes == ["a", "b"]
    samples = scan_split(tmp_path, "train", classes)
    assert [(p.split("train/")[1], t) for p, t in samples] == [
        ("a/z.jpg", 0),
        ("b/10.png", 1),
        ("b/2.png", 1),
    ]


def test_val_class_must_be_a_training_class(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png", 0)
    write_png(tmp_path / "val" / "zebra" / "0.png", 0)
    with pytest.raises(ValueError, match=r"class folders \['zebra'\] are not among the training classes"):
        scan_split(tmp_path, "val", ["a"])


def test_missing_train_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="image folder training split"):
        scan_classes(tmp_path)
