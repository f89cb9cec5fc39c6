import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import PILToTensor

from livt.data import DatasetNotFoundError, build_dataset, dataset_options, infer_options, list_datasets
from livt.data.datasets import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from livt.data.formats import DATA_ROOT_ENV, idx

from .writers import write_cifar, write_fashion_mnist, write_png

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def _ids(ds) -> set[int]:
    """The id each writer encodes in the first pixel(s) of an image."""
    out = set()
    for i in range(len(ds)):
        px = np.asarray(ds.load(i))
        first = px[0, :2] if px.ndim == 2 else px[0, :2, 0]
        out.add(int(first[0]) + 256 * int(first[1]))
    return out


# registry -------------------------------------------------------------------------------------


def test_registered_names():
    assert list_datasets() == sorted(
        [
            "fashion-mnist-lt",
            "cifar10-lt",
            "cifar100-lt",
            "imagenet-lt",
            "places-lt",
            "inat2018",
            "imagefolder",
            "synthetic",
        ]
    )


def test_unknown_name_split_and_option_name_the_valid_choices():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; valid names: cifar10-lt"):
        build_dataset("mnist")
    with pytest.raises(ValueError, match="unknown split 'dev'; valid splits: train, val, test"):
        build_dataset("synthetic", "dev")
    with pytest.raises(ValueError, match=r"no option\(s\) imbalance; valid options: num_classes"):
        build_dataset("synthetic", imbalance=10)


def test_common_option_defaults():
    for name in ("fashion-mnist-lt", "cifar10-lt", "cifar100-lt"):
        opts = dataset_options(name)
        assert (opts["imbalance_factor"], opts["profile"], opts["seed"], opts["val_per_class"]) == (
            100.0,
            "exp",
            0,
            0,
        )


# fashion-mnist-lt -----------------------------------------------------------------------------


@needs_fashion_mnist
def test_fashion_mnist_lt_if100_seed0_real_data(no_system_data, monkeypatch):
    monkeypatch.setattr(idx, "SYSTEM_DIRS", (DEBIAN_FASHION_MNIST,))
    train = build_dataset("fashion-mnist-lt", "train")
    assert len(train) == 14_886
    assert train.class_counts == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert train.classes[:2] == ["T-shirt/top", "Trouser"] and train.classes[-1] == "Ankle boot"
    test = build_dataset("fashion-mnist-lt", "test")
    assert test.class_counts == [1000] * 10
    image, target = train[0]
    assert image.mode == "L" and image.size == (28, 28) and target == train.targets[0]
    assert (train.channels, train.image_size) == (1, 28)


@needs_fashion_mnist
def test_fashion_mnist_normalisation_constants_match_the_data():
    pixels = idx.load_fashion_mnist(DEBIAN_FASHION_MNIST)["train_images"].astype(np.float64) / 255
    assert pixels.shape == (60_000, 28, 28)
    assert pixels.mean() == pytest.approx(FASHION_MNIST_MEAN[0], abs=1e-4)
    assert pixels.std() == pytest.approx(FASHION_MNIST_STD[0], abs=1e-4)


@pytest.mark.parametrize("layout", ["direct", "torchvision"])
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_root_layouts(tmp_path, no_system_data, layout, gz):
    folder = tmp_path if layout == "direct" else tmp_path / "FashionMNIST" / "raw"
    write_fashion_mnist(folder, per_class=30, gz=gz)
    train = build_dataset("fashion-mnist-lt", data_root=tmp_path, imbalance_factor=10)
    # n_max = 30, IF = 10: floor(30 * 0.1 ** (c / 9))
    assert train.class_counts == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert len(build_dataset("fashion-mnist-lt", "test", data_root=tmp_path)) == 30


def test_fashion_mnist_from_env_root(tmp_path, no_system_data, monkeypatch):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert len(build_dataset("fashion-mnist-lt", "test")) == 30


def test_fashion_mnist_records_the_folder_it_read(tmp_path, no_system_data, monkeypatch):
    write_fashion_mnist(tmp_path / "root" / "FashionMNIST" / "raw")
    assert build_dataset("fashion-mnist-lt", data_root=tmp_path / "root").source_dir == (
        tmp_path / "root" / "FashionMNIST" / "raw"
    )
    write_fashion_mnist(tmp_path / "system")
    monkeypatch.setattr(idx, "SYSTEM_DIRS", (tmp_path / "system",))
    assert build_dataset("fashion-mnist-lt", "test").source_dir == tmp_path / "system"
    assert build_dataset("synthetic").source_dir is None  # generated, no files


def test_an_explicit_root_without_fashion_mnist_never_falls_back(tmp_path, no_system_data, monkeypatch):
    write_fashion_mnist(tmp_path / "system")
    monkeypatch.setattr(idx, "SYSTEM_DIRS", (tmp_path / "system",))
    write_fashion_mnist(tmp_path / "env")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("fashion-mnist-lt", data_root=tmp_path / "nonexistent")
    message = str(info.value)
    assert "\n" not in message and f"data_root {tmp_path / 'nonexistent'}" in message
    assert str(tmp_path / "env") not in message and str(tmp_path / "system") not in message
    # $LIVT_DATA_ROOT is a root given too: one without the data does not fall back to the system copy
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match=r"\$LIVT_DATA_ROOT .*empty"):
        build_dataset("fashion-mnist-lt")


def test_fashion_mnist_val_is_balanced_and_disjoint_from_train(tmp_path, no_system_data):
    write_fashion_mnist(tmp_path, per_class=30)
    opts = {"data_root": tmp_path, "imbalance_factor": 10, "val_per_class": 5, "seed": 3}
    train, val = build_dataset("fashion-mnist-lt", **opts), build_dataset("fashion-mnist-lt", "val", **opts)
    # class 0 keeps all 30 of its images, so its 5 val images are carved from them
    assert val.class_counts == [5] * 10
    assert train.class_counts[0] == 25
    assert not _ids(train) & _ids(val)
    # the test images (ids from 0 again in the test files) are a separate array: val ids all < 300
    assert max(_ids(val)) < 300


def test_fashion_mnist_missing_lists_places_and_how_to_get_it(tmp_path, no_system_data):
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("fashion-mnist-lt", data_root=tmp_path / "empty")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw") in message and "download=true" in message
    assert "no-system-data" not in message  # a root given is the only place looked in
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("fashion-mnist-lt")
    message = str(info.value)
    assert "no-system-data" in message and "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_download_needs_a_root(no_system_data):
    with pytest.raises(ValueError, match="download=True needs data_root"):
        build_dataset("fashion-mnist-lt", download=True)


# cifar ----------------------------------------------------------------------------------------


def test_an_explicit_root_without_cifar_never_falls_back_to_the_env_root(
    tmp_path, no_system_data, monkeypatch
):
    folder = write_cifar(tmp_path / "env", num_classes=10, per_class=2, n_batches=5)
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "env"))
    assert build_dataset("cifar10-lt", "test").source_dir == folder
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("cifar10-lt", data_root=tmp_path / "nonexistent")
    assert "\n" not in str(info.value) and f"data_root {tmp_path / 'nonexistent'}" in str(info.value)
    monkeypatch.delenv(DATA_ROOT_ENV)
    with pytest.raises(DatasetNotFoundError, match=r"pass data_root or set \$LIVT_DATA_ROOT"):
        build_dataset("cifar10-lt")


def test_cifar10_lt_splits_and_pixel_layout(tmp_path, no_system_data):
    write_cifar(tmp_path, num_classes=10, per_class=20, n_batches=5)
    opts = {"data_root": tmp_path, "imbalance_factor": 10, "val_per_class": 2}
    train = build_dataset("cifar10-lt", **opts)
    assert train.class_counts == [18, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert train.classes == [f"c{k}" for k in range(10)]
    image, _ = train[0]
    assert image.mode == "RGB" and image.size == (32, 32)
    assert image.getpixel((5, 5)) == (0, 100, 200)
    val = build_dataset("cifar10-lt", "val", **opts)
    assert val.class_counts == [2] * 10
    assert not _ids(train) & _ids(val)
    test = build_dataset("cifar10-lt", "test", **opts)
    assert test.class_counts == [2] * 10 and min(_ids(test)) == 10_000


def test_cifar100_lt_uses_fine_labels(tmp_path, no_system_data):
    write_cifar(tmp_path, num_classes=100, per_class=3, n_batches=1)
    train = build_dataset("cifar100-lt", data_root=tmp_path / "cifar-100-python", imbalance_factor=1)
    assert train.class_counts == [3] * 100 and len(train.classes) == 100
    assert train.targets[:7] == list(range(7))


def test_val_split_needs_val_per_class(tmp_path, no_system_data):
    write_cifar(tmp_path, num_classes=10, per_class=5, n_batches=5)
    with pytest.raises(ValueError, match="no official val split: pass val_per_class"):
        build_dataset("cifar10-lt", "val", data_root=tmp_path, imbalance_factor=1)
    # without subsampling every val image is carved from train
    opts = {"data_root": tmp_path, "imbalance_factor": 1, "val_per_class": 2}
    train, val = build_dataset("cifar10-lt", **opts), build_dataset("cifar10-lt", "val", **opts)
    assert train.class_counts == [3] * 10 and val.class_counts == [2] * 10


def test_cifar_missing(tmp_path, no_system_data):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        build_dataset("cifar10-lt", data_root=tmp_path)


# list-file sets -------------------------------------------------------------------------------


def _write_list_set(root: Path, prefix: str, splits=("train", "val", "test")) -> None:
    """3 classes; train 3/2/1 images, val and test one image per class."""
    layout = {"train": [0, 0, 0, 1, 1, 2], "val": [0, 1, 2], "test": [0, 1, 2]}
    for split in splits:
        lines = []
        for i, label in enumerate(layout[split]):
            rel = f"{split}/n{label}/img_{i}.png"
            write_png(root / rel, value=10 * i + label, mode="L" if i == 0 else "RGB")
            lines.append(f"{rel} {label}")
        (root / f"{prefix}_{split}.txt").write_text("\n".join(lines) + "\n")


def test_imagenet_lt_lists(tmp_path):
    _write_list_set(tmp_path, "ImageNet_LT")
    train = build_dataset("imagenet-lt", data_root=tmp_path)
    assert train.class_counts == [3, 2, 1] and train.classes == ["0", "1", "2"]
    image, target = train[0]
    assert image.mode == "RGB" and image.size == (12, 10) and target == 0  # an "L" PNG made RGB
    assert train.samples[0] == (str(tmp_path / "train/n0/img_0.png"), 0)
    assert (train.image_size, train.channels) == (224, 3)
    assert build_dataset("imagenet-lt", "val", data_root=tmp_path).class_counts == [1, 1, 1]


def test_list_options_and_classnames(tmp_path):
    _write_list_set(tmp_path, "Places_LT")
    (tmp_path / "Places_LT_train.txt").rename(tmp_path / "mine.txt")
    (tmp_path / "names.txt").write_text("abbey\nairport\nalley\n")
    ds = build_dataset(
        "places-lt", data_root=tmp_path, train_list=tmp_path / "mine.txt", classnames=tmp_path / "names.txt"
    )
    assert ds.classes == ["abbey", "airport", "alley"] and len(ds) == 6
    with pytest.raises(DatasetNotFoundError, match=r"Places_LT_train\.txt"):
        build_dataset("places-lt", "test", data_root=tmp_path)


def test_inat2018_test_split_is_the_val_list(tmp_path):
    _write_list_set(tmp_path, "iNaturalist18", splits=("train", "val"))
    test = build_dataset("inat2018", "test", data_root=tmp_path)
    assert [p for p, _ in test.samples] == [
        p for p, _ in build_dataset("inat2018", "val", data_root=tmp_path).samples
    ]


def test_list_label_outside_training_classes(tmp_path):
    _write_list_set(tmp_path, "ImageNet_LT")
    (tmp_path / "ImageNet_LT_val.txt").write_text("val/n0/img_0.png 7\n")
    with pytest.raises(ValueError, match="label 7 is not a class of the training list"):
        build_dataset("imagenet-lt", "val", data_root=tmp_path)


def test_list_sets_need_a_data_root():
    with pytest.raises(ValueError, match="'imagenet-lt' needs data_root"):
        build_dataset("imagenet-lt")


# imagefolder ----------------------------------------------------------------------------------


def _write_image_folder(root: Path) -> None:
    for split, per_class in (("train", {"cat": 8, "dog": 4, "eel": 2}), ("val", {"cat": 1, "dog": 1})):
        for name, n in per_class.items():
            for i in reversed(range(n)):
                write_png(root / split / name / f"{i:02d}.png", value=i)


def test_imagefolder_splits_sorted_samples_and_subsampling(tmp_path):
    _write_image_folder(tmp_path)
    train = build_dataset("imagefolder", data_root=tmp_path)
    assert train.classes == ["cat", "dog", "eel"] and train.class_counts == [8, 4, 2]
    assert [Path(p).name for p, _ in train.samples[:3]] == ["00.png", "01.png", "02.png"]
    sub = build_dataset("imagefolder", data_root=tmp_path, imbalance_factor=4)
    assert sub.class_counts == [8, 4, 2]  # profile [8, 4, 2] for n_max 8, IF 4
    sub = build_dataset("imagefolder", data_root=tmp_path, imbalance_factor=8)
    assert sub.class_counts == [8, 2, 1]
    val = build_dataset("imagefolder", "val", data_root=tmp_path)
    assert val.class_counts == [1, 1, 0]


def test_imagefolder_grey_and_size_options(tmp_path):
    _write_image_folder(tmp_path)
    ds = build_dataset("imagefolder", data_root=tmp_path, channels=1, image_size=64)
    assert ds[0][0].mode == "L" and (ds.channels, ds.image_size) == (1, 64) and len(ds.mean) == 1


def test_imagefolder_classes_option_fixes_the_label_space(tmp_path):
    _write_image_folder(tmp_path)
    shutil.rmtree(tmp_path / "train")  # given classes, no train split is needed
    val = build_dataset("imagefolder", "val", data_root=tmp_path, classes=["ant", "cat", "dog"])
    assert val.classes == ["ant", "cat", "dog"] and val.targets == [1, 2]
    with pytest.raises(ValueError, match=r"\['cat', 'dog'\] are not among"):
        build_dataset("imagefolder", "val", data_root=tmp_path, classes=["ant"])
    for bad in ([], ["cat", "cat"]):
        with pytest.raises(ValueError, match="distinct names"):
            build_dataset("imagefolder", "val", data_root=tmp_path, classes=bad)


def test_imagefolder_missing_split_is_an_error(tmp_path):
    _write_image_folder(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="split 'test'"):
        build_dataset("imagefolder", "test", data_root=tmp_path)


# synthetic ------------------------------------------------------------------------------------


def test_synthetic_counts_and_formats():
    train = build_dataset("synthetic", n_max=40, imbalance_factor=10, num_classes=4, image_size=16)
    assert train.class_counts == [40, 18, 8, 4]
    assert train[0][0].mode == "RGB" and train[0][0].size == (16, 16)
    grey = build_dataset("synthetic", "test", channels=1, n_test=3, num_classes=4)
    assert grey.class_counts == [3] * 4 and grey[0][0].mode == "L"
    assert build_dataset("synthetic", "val", val_per_class=5).class_counts == [5] * 10


def test_synthetic_deterministic_per_seed_and_splits_differ():
    a = build_dataset("synthetic", "val", seed=1, val_per_class=4)
    b = build_dataset("synthetic", "val", seed=1, val_per_class=4)
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, build_dataset("synthetic", "val", seed=2, val_per_class=4).images)
    test = build_dataset("synthetic", "test", seed=1, n_test=4)
    assert not np.array_equal(a.images, test.images)


def test_transform_is_applied():
    ds = build_dataset("synthetic", "test", n_test=1, transform=PILToTensor())
    image, target = ds[3]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32) and target == 3
    assert isinstance(build_dataset("synthetic", "test", n_test=1)[0][0], Image.Image)


def test_imagefolder_reads_its_format_from_the_training_images(tmp_path, caplog):
    rng = np.random.default_rng(0)
    pixels = {}
    for name, sizes in (("cat", [(30, 40), (30, 30), (50, 30)]), ("dog", [(30, 30), (31, 31)])):
        for i, (w, h) in enumerate(sizes):
            arr = rng.integers(0, 256, (h, w), dtype=np.uint8)
            pixels[name, i] = arr
            path = tmp_path / "train" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)  # mode "L"
    with caplog.at_level("INFO", logger="livt"):
        assert infer_options("synthetic") == {}
        found = infer_options("imagefolder", tmp_path)
    everything = np.concatenate([a.ravel() / 255 for a in pixels.values()])
    assert found["channels"] == 1 and found["image_size"] == 30  # the median shorter side
    assert found["mean"] == [pytest.approx(everything.mean(), abs=1e-4)]
    assert found["std"] == [pytest.approx(everything.std(), abs=1e-4)]
    assert "channels 1" in caplog.text and "from 5 train images" in caplog.text
    train = build_dataset("imagefolder", data_root=tmp_path)
    assert (train.channels, train.image_size, list(train.mean)) == (1, 30, found["mean"])
    assert train[0][0].mode == "L"
    # given options win and are not looked for; one colour image makes the folder RGB
    assert (
        infer_options("imagefolder", tmp_path, channels=3, image_size=64, mean=[0.5] * 3, std=[0.2] * 3) == {}
    )
    Image.fromarray(rng.integers(0, 256, (500, 900, 3), dtype=np.uint8)).save(
        tmp_path / "train" / "dog" / "x.jpg"
    )
    assert infer_options("imagefolder", tmp_path, mean=[0.5] * 3, std=[0.2] * 3) == {
        "image_size": 30,
        "channels": 3,
    }


def test_imagefolder_of_large_images_trains_at_224(tmp_path, caplog):
    for i in range(3):
        write_png(tmp_path / "train" / "a" / f"{i}.png", 100 + i, size=(400, 300))
    with caplog.at_level("INFO", logger="livt"):
        found = infer_options("imagefolder", tmp_path)
    assert found["image_size"] == 224 and found["channels"] == 3
    assert "median shorter side 300 px, capped at 224" in caplog.text
    assert min(found["std"]) >= round(1 / 255, 4)  # a constant image: one grey level, not zero
