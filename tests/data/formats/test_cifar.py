import pickle

import numpy as np
import pytest

from livt.data.formats.cifar import CIFAR10, CIFAR100, find_cifar, read_cifar_classes, read_cifar_split

from ..writers import write_cifar


def test_channel_major_rows_become_hwc_images(tmp_path):
    folder = write_cifar(tmp_path, num_classes=10, per_class=2, n_batches=5)
    images, labels = read_cifar_split(folder, CIFAR10, train=True)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert images[7, 0, 0, 0] == 7 and (images[:, 5, 5] == [0, 100, 200]).all()
    assert labels.tolist() == list(range(10)) * 2
    assert not images.flags.writeable  # cached arrays are shared between builds
    assert read_cifar_classes(folder, CIFAR10) == [f"c{k}" for k in range(10)]


def test_find_accepts_the_parent_or_the_release_folder(tmp_path):
    folder = write_cifar(tmp_path, num_classes=100, per_class=1, n_batches=1)
    assert find_cifar(CIFAR100, tmp_path) == folder
    assert find_cifar(CIFAR100, folder) == folder


def test_missing_label_key(tmp_path):
    folder = write_cifar(tmp_path, num_classes=100, per_class=1, n_batches=1)
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(ValueError, match="missing key b'fine_labels'"):
        read_cifar_split(folder, CIFAR100, train=False)
