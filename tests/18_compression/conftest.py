"""Module 18 test helpers: the oracles beside this file and a tiny learnable problem.

One BLAS thread, the trained models and the loaders come from tests/conftest.py."""
import sys
from pathlib import Path

# compression_oracles.py beside this file: input builders the tests share instead of copying
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.load_profile("tinytorch-compression")  # tests/conftest.py


def _small_batches(n: int = 96, features: int = 6, seed: int = 0, batch: int = 32):
    from tinytorch.core.tensor import Tensor

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return [(Tensor(X[i:i + batch]), y[i:i + batch]) for i in range(0, n, batch)]


@pytest.fixture
def small_batches():
    "A function making a tiny, learnable 2-class problem as a list of (X, y) batches."
    return _small_batches
