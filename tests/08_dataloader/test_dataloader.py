"""Module 08: datasets, the DataLoader and the shipped digits."""
import hashlib
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.data.loader import DataLoader, Dataset, TensorDataset, digits_loaders, load_digits

# The first row of scikit-learn's digits.csv.gz (pixels, then the label), copied by hand.
FIRST_IMAGE = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
               0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0,
               0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
# Images per digit 0..9 in the UCI test set (scikit-learn's documentation of load_digits).
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
# Fingerprint of the fixed test split: changing the split changes every accuracy in the course.
TEST_SPLIT_SHA256 = "7eaa79ced419244cc69512cf54e2e4f7492f3a41043962cf41169baf320a0233"


def raw_digits():
    with resources.as_file(resources.files("tinytorch.data") / "digits.npz") as path:
        with np.load(path) as data:
            return data["pixels"], data["labels"]


def split_fingerprint(X, y) -> str:
    pixels = np.rint(X * 16).astype(np.uint8)
    return hashlib.sha256(pixels.tobytes() + y.astype(np.uint8).tobytes()).hexdigest()


# -- the shipped data ------------------------------------------------------------------

def test_shipped_file_is_the_uci_digits():
    pixels, labels = raw_digits()
    assert pixels.shape == (1797, 64) and pixels.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert pixels.max() == 16 and pixels.min() == 0
    assert np.bincount(labels).tolist() == CLASS_COUNTS
    assert pixels[0].tolist() == FIRST_IMAGE and labels[0] == 0


def test_shapes_dtypes_and_counts():
    X_train, y_train = load_digits("train")
    X_test, y_test = load_digits("test")
    assert X_train.shape == (1437, 64) and y_train.shape == (1437,)
    assert X_test.shape == (360, 64) and y_test.shape == (360,)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0
    images, labels = load_digits("train", image=True)
    assert images.shape == (1437, 1, 8, 8)
    np.testing.assert_array_equal(images.reshape(1437, 64), X_train)
    np.testing.assert_array_equal(labels, y_train)


def test_pixels_are_counts_over_16():
    X, _ = load_digits("test")
    counts = X * 16
    np.testing.assert_array_equal(counts, np.rint(counts))


def test_split_partitions_the_dataset():
    # train + test, as (pixels, label) rows, is exactly the shipped data: disjoint and complete.
    pixels, labels = raw_digits()
    parts = [load_digits(split) for split in ("train", "test")]
    rows = np.concatenate([np.column_stack([np.rint(X * 16), y]) for X, y in parts]).astype(np.int64)
    raw = np.column_stack([pixels, labels]).astype(np.int64)
    order = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(order(rows), order(raw))


def test_split_is_stratified():
    _, y_train = load_digits("train")
    _, y_test = load_digits("test")
    share = np.array(CLASS_COUNTS) * 360 / 1797
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - share) < 1)
    assert (np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)).tolist() == CLASS_COUNTS


def test_split_is_fixed_and_calls_return_copies():
    X_test, y_test = load_digits("test")
    assert split_fingerprint(X_test, y_test) == TEST_SPLIT_SHA256
    X_test[:] = 0  # a caller scribbling on its copy must not change the next call
    X_again, y_again = load_digits("test")
    assert split_fingerprint(X_again, y_again) == TEST_SPLIT_SHA256


def test_bad_split_name():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")


# -- datasets ----------------------------------------------------------------------------

def test_tensor_dataset_unwraps_tensors_and_casts_labels():
    ds = TensorDataset(Tensor(np.ones((3, 2))), np.array([0, 1, 2], dtype=np.int32))
    assert len(ds) == 3 and isinstance(ds.X, np.ndarray)
    assert ds.y.dtype == np.int64
    floats = TensorDataset(np.ones((2, 1)), np.array([0.5, 1.5]))
    assert floats.y.dtype == np.float64  # regression targets stay floats


def test_tensor_dataset_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 and 4"):
        TensorDataset(np.zeros((3, 2)), np.zeros(4))


class Squares(Dataset):
    "A dataset that only knows single samples: exercises the generic get_batch."
    def __len__(self):
        return 7

    def __getitem__(self, i):
        return np.array([i, i * i], dtype=np.float32), i


def test_generic_dataset_batches_like_tensor_dataset():
    i = np.arange(7)
    reference = TensorDataset(np.column_stack([i, i * i]).astype(np.float32), i)
    for (Xa, ya), (Xb, yb) in zip(DataLoader(Squares(), 3, shuffle=True, seed=1),
                                  DataLoader(reference, 3, shuffle=True, seed=1)):
        np.testing.assert_array_equal(Xa.data, Xb.data)
        np.testing.assert_array_equal(ya, yb)


def test_base_dataset_is_abstract():
    with pytest.raises(NotImplementedError):
        len(Dataset())


# -- the loader ----------------------------------------------------------------------------

def indexed(n: int) -> TensorDataset:
    "Sample i is (i, i), so batches reveal exactly which samples they hold."
    return TensorDataset(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))


def test_batches_are_tensor_and_int64():
    X, y = next(iter(DataLoader(indexed(5), batch_size=2)))
    assert isinstance(X, Tensor) and X.shape == (2, 1) and X.data.dtype == np.float32
    assert isinstance(y, np.ndarray) and y.dtype == np.int64
    assert not X.requires_grad


def test_no_shuffle_keeps_order():
    labels = [y.tolist() for _, y in DataLoader(indexed(7), batch_size=3)]
    assert labels == [[0, 1, 2], [3, 4, 5], [6]]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), batch_size=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_shuffle_covers_every_sample_once_per_epoch(n, batch_size, seed):
    loader = DataLoader(indexed(n), batch_size=batch_size, shuffle=True, seed=seed)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // batch_size)
        y = np.concatenate([yb for _, yb in batches])
        X = np.concatenate([Xb.data[:, 0] for Xb, _ in batches])
        assert sorted(y.tolist()) == list(range(n))
        np.testing.assert_array_equal(X, y)  # inputs and labels stay paired


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), batch_size=st.integers(1, 70), shuffle=st.booleans())
def test_drop_last(n, batch_size, shuffle):
    loader = DataLoader(indexed(n), batch_size=batch_size, shuffle=shuffle, seed=0, drop_last=True)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == len(sizes) == n // batch_size
    assert all(size == batch_size for size in sizes)
    kept = DataLoader(indexed(n), batch_size=batch_size)
    assert sum(len(y) for _, y in kept) == n


def epochs(loader, count=3):
    return [np.concatenate([y for _, y in loader]).tolist() for _ in range(count)]


def test_same_seed_same_sequence_of_epochs():
    first = epochs(DataLoader(indexed(50), batch_size=8, shuffle=True, seed=42))
    second = epochs(DataLoader(indexed(50), batch_size=8, shuffle=True, seed=42))
    assert first == second
    assert first[0] != first[1] != first[2]  # each epoch reshuffles
    assert first != epochs(DataLoader(indexed(50), batch_size=8, shuffle=True, seed=43))


def test_unseeded_shuffle_follows_manual_seed():
    manual_seed(11)
    first = epochs(DataLoader(indexed(30), batch_size=4, shuffle=True), count=2)
    manual_seed(11)
    assert epochs(DataLoader(indexed(30), batch_size=4, shuffle=True), count=2) == first


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8", None])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(indexed(4), batch_size=batch_size)


def test_bad_seed():
    with pytest.raises(TypeError, match="seed"):
        DataLoader(indexed(4), seed=1.5)


# -- digits loaders ------------------------------------------------------------------------

def test_digits_loaders():
    train, test = digits_loaders(batch_size=100, image=True, seed=0)
    assert len(train) == 15 and len(test) == 4
    X, y = next(iter(train))
    assert X.shape == (100, 1, 8, 8) and y.shape == (100,)
    X_test, y_test = load_digits("test", image=True)
    np.testing.assert_array_equal(np.concatenate([Xb.data for Xb, _ in test]), X_test)  # in order
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in test]), y_test)


def test_digits_loaders_seeded():
    same = [epochs(digits_loaders(seed=5)[0], 2) for _ in range(2)]
    assert same[0] == same[1]
    assert epochs(digits_loaders(seed=6)[0], 2) != same[0]
