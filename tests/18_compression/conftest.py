"""Shared fixtures for the module 18 tests: small trained digits models, kept cheap."""
import os

# One BLAS thread: on a shared 2-core machine multi-threaded BLAS can be 10x slower (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# compression_oracles.py beside this file: input builders the tests share instead of copying
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model  # noqa: E402
from tinytorch.data.loader import digits_loaders  # noqa: E402

# Examples are small but each one may build a model: no per-example deadline, bounded counts.
# No shrinking: with an unfinished exercise every example fails, and shrinking those failures
# would take minutes; the first failing example is reported as generated.
settings.register_profile("tinytorch-18", deadline=None, max_examples=25, print_blob=False,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tinytorch-18")


@pytest.fixture(scope="session")
def _trained_mlp():
    model = digits_mlp(seed=0)
    train_digits_model(model, epochs=4, seed=0)
    return model


@pytest.fixture(scope="session")
def _trained_cnn():
    model = digits_cnn(seed=0)
    train_digits_model(model, epochs=2, seed=0)
    return model


@pytest.fixture
def mlp(_trained_mlp):
    "A briefly trained digits MLP (a fresh copy per test: tests may prune it)."
    return copy.deepcopy(_trained_mlp)


@pytest.fixture
def cnn(_trained_cnn):
    "A briefly trained digits CNN (a fresh copy per test)."
    return copy.deepcopy(_trained_cnn)


@pytest.fixture(scope="session")
def flat_loaders():
    return digits_loaders(batch_size=128, seed=0)


@pytest.fixture(scope="session")
def image_loaders():
    return digits_loaders(batch_size=128, image=True, seed=0)


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
