"""What every test folder shares: one BLAS thread, the helpers in _shared/, trained digits models.

`tito release` and the grading kit copy this file and _shared/ along with a module's tests
(tito.graded.shared_tests says what they are), so released and graded tests find them too.
"""
import copy
import os
import sys
from pathlib import Path

# One BLAS thread, before anything imports NumPy: importing tinytorch sets it (tito.ONE_BLAS_THREAD
# says why). The processes tito starts have it already; a bare `pytest` gets it here.
import tinytorch  # noqa: F401

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# gradcheck.py and the other helpers: importable by name from any test folder
sys.path.insert(0, str(Path(__file__).resolve().parent / "_shared"))


@pytest.fixture(scope="session")
def trained_digits():
    """trained_digits(kind="mlp", epochs=None) -> (model, history): digits_mlp or digits_cnn
    (kind "cnn") with seed 0, trained by train_digits_model (epochs=None: its default). Each
    kind and epoch count trains once per session; every call returns a fresh copy, so a test
    may prune, quantize or retrain what it gets."""
    trained = {}

    def get(kind: str = "mlp", epochs: int | None = None):
        # imported here, not at the top: `tito test` starts pytest while it exports the package,
        # and a conftest that imported an exported file at start-up would make the run stale
        from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model

        if (kind, epochs) not in trained:
            model = {"mlp": digits_mlp, "cnn": digits_cnn}[kind](seed=0)
            trained[kind, epochs] = model, train_digits_model(model, epochs=epochs, seed=0)
        return copy.deepcopy(trained[kind, epochs])

    return get


# Hypothesis draws the same examples on every run: a regrade must give the same score and CI the
# same verdict, so the examples are derived from each test's own source (derandomize) and no
# example database replays an earlier run's failures. A developer who wants new examples asks for
# them: `TINYTORCH_HYPOTHESIS=explore pytest tests/...` (random draws, the local database).
HYPOTHESIS_MODE = os.environ.get("TINYTORCH_HYPOTHESIS", "deterministic")
if HYPOTHESIS_MODE not in ("deterministic", "explore"):
    raise pytest.UsageError(f"TINYTORCH_HYPOTHESIS must be 'deterministic' or 'explore', got {HYPOTHESIS_MODE!r}")
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=False)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(HYPOTHESIS_MODE)

# Module 18 and 20 tests: examples are small but each one may build a model, so no per-example
# deadline and bounded counts. No shrinking: with an unfinished exercise every example fails, and
# shrinking those failures would take minutes; the first failing example is reported as generated.
# A folder opts in with settings.load_profile("tinytorch-compression"); it keeps the mode above.
settings.register_profile("tinytorch-compression", parent=settings.get_profile(HYPOTHESIS_MODE),
                          deadline=None, max_examples=25,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow])


# A few epochs, not train_digits_model's default: many compression tests start from these.
@pytest.fixture
def mlp(trained_digits):
    "A briefly trained digits MLP (a fresh copy per test: tests may prune it)."
    return trained_digits("mlp", epochs=4)[0]


@pytest.fixture
def cnn(trained_digits):
    "A briefly trained digits CNN (a fresh copy per test)."
    return trained_digits("cnn", epochs=2)[0]


# A fresh pair per test (20 ms): the training loader's shuffle moves on with every epoch, so a
# shared pair would hand each test the batch order that the tests before it left behind.
@pytest.fixture
def flat_loaders():
    from tinytorch.data.loader import digits_loaders

    return digits_loaders(batch_size=128, seed=0)


@pytest.fixture
def image_loaders():
    from tinytorch.data.loader import digits_loaders

    return digits_loaders(batch_size=128, image=True, seed=0)
