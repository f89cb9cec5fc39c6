import numpy as np
import pytest

from livt.data.formats.idx import fashion_mnist_dirs, read_idx

from ..writers import write_idx


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images-idx3-ubyte", array, gz=gz)
    assert path.suffix == (".gz" if gz else "")
    assert np.array_equal(read_idx(path), array)


def test_rejects_bad_magic_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    path = write_idx(tmp_path / "short", np.zeros((4, 2), dtype=np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"declares shape \(4, 2\) but holds 7 bytes"):
        read_idx(path)


def test_the_first_root_given_is_the_only_place_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVT_DATA_ROOT", str(tmp_path / "env"))
    assert fashion_mnist_dirs(tmp_path / "root") == [
        tmp_path / "root",
        tmp_path / "root" / "FashionMNIST" / "raw",
    ]
    assert fashion_mnist_dirs(None) == [tmp_path / "env", tmp_path / "env" / "FashionMNIST" / "raw"]
    monkeypatch.delenv("LIVT_DATA_ROOT")
    assert [str(d) for d in fashion_mnist_dirs(None)] == ["/usr/share/datasets/fashion-mnist"]
