import pytest

from livt.data.formats import DatasetNotFoundError
from livt.data.formats.lists import read_classnames, read_list


def test_paths_are_relative_to_the_root(tmp_path):
    (tmp_path / "l.txt").write_text("train/a b/x.jpg 3\n\n/places/y.jpg 0\n")
    assert read_list(tmp_path / "l.txt", "/data") == [("/data/train/a b/x.jpg", 3), ("/data/places/y.jpg", 0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [("x.jpg\n", "l.txt:1: expected 'path label'"), ("x.jpg -1\n", "negative label"), ("\n", "no samples")],
)
def test_bad_list_files(tmp_path, text, message):
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_list(tmp_path / "l.txt", tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"list file l\.txt"):
        read_list(tmp_path / "l.txt", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="class names file"):
        read_classnames(tmp_path / "names.txt")


def test_classnames(tmp_path):
    (tmp_path / "names.txt").write_text("tench\ngoldfish\n\n")
    assert read_classnames(tmp_path / "names.txt") == ["tench", "goldfish"]
