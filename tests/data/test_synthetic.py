import numpy as np
import pytest

from livt.data.synthetic import NORM_STATS, synthetic_images


@pytest.mark.parametrize("channels", [1, 3])
def test_classes_are_learnable_from_their_mean_images(channels):
    # A nearest-class-mean classifier (fitted on train, scored on test) is far above chance (10%):
    # the class structure survives the per-image jitter and noise.
    train, train_y = synthetic_images([200] * 10, 32, channels, seed=0, split="train")
    test, test_y = synthetic_images([30] * 10, 32, channels, seed=0, split="test")
    flat = train.reshape(len(train), -1).astype(np.float64)
    means = np.stack([flat[train_y == k].mean(0) for k in range(10)])
    dist = ((test.reshape(len(test), 1, -1) - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == test_y).mean() > 0.7


def test_shapes_labels_and_determinism():
    images, labels = synthetic_images([3, 2], 16, 3, seed=5, split="val")
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1]
    again, _ = synthetic_images([3, 2], 16, 3, seed=5, split="val")
    assert np.array_equal(images, again)
    assert not np.array_equal(images, synthetic_images([3, 2], 16, 3, seed=6, split="val")[0])
    assert not np.array_equal(images, synthetic_images([3, 2], 16, 3, seed=5, split="test")[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_normalisation_constants_describe_the_images(channels):
    images, _ = synthetic_images([100] * 10, 32, channels, seed=1, split="train")
    pixels = images.reshape(-1, channels) / 255
    mean, std = NORM_STATS[channels]
    assert np.allclose(pixels.mean(0), mean, atol=0.01)
    assert np.allclose(pixels.std(0), std, atol=0.01)


def test_bad_arguments():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        synthetic_images([1], 16, 2, seed=0, split="train")
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        synthetic_images([1], 16, 1, seed=0, split="dev")
