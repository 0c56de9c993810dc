"""Sparse inference and fair timing (tasks csr-matmul, benchmark-inference)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.compression.inference import benchmark_inference, csr_matmul
from tinytorch.compression.sparse import SparseLinear, measure_speedup, to_sparse
from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Dropout, Linear, Sequential
from tinytorch.core.tensor import Tensor
from tinytorch.core.training import evaluate
from compression_oracles import oracle_prune


def csr_of(W):
    "A hand-rolled CSR encoding (data, int32 column indices, int32 row offsets): inputs that do not call csr-encode."
    W = np.asarray(W)
    rows, cols = np.nonzero(W)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=W.shape[0])))).astype(np.int32)
    return W[rows, cols], cols.astype(np.int32), indptr


@pytest.mark.task("csr-matmul")
def test_csr_matmul_hand_computed():
    W = np.array([[0, 2.0, 0], [0, 0, 0], [1.0, 0, 3.0], [0, 0, 0]], dtype=np.float32)
    x = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]], dtype=np.float32)
    out = csr_matmul(*csr_of(W), x)
    assert out.shape == (2, 4) and out.tolist() == [[20.0, 0.0, 301.0, 0.0], [40.0, 0.0, 602.0, 0.0]]
    assert csr_matmul(*csr_of(np.zeros((3, 3), np.float32)), x).tolist() == [[0.0] * 3] * 2


def test_given_check_rejects_x_that_is_not_a_batch():
    with pytest.raises(ValueError, match="batch"):
        csr_matmul(*csr_of(np.eye(3)), np.ones(3))


@pytest.mark.task("csr-matmul")
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 9)),
                  elements=st.sampled_from([0.0, 0.0, 0.0, 1.0, -2.5, 0.5])),
       st.integers(1, 5), st.integers(1, 50))
def test_csr_matmul_equals_dense_product(W, batch, max_elements):
    x = np.random.default_rng(batch).normal(size=(batch, W.shape[1]))
    expected = x @ W.T
    assert np.allclose(csr_matmul(*csr_of(W), x), expected)
    assert np.allclose(csr_matmul(*csr_of(W), x, max_elements=max_elements), expected)   # chunked


@pytest.mark.task("csr-matmul")
def test_csr_matmul_matches_scipy():
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    W = (rng.normal(size=(64, 48)) * (rng.random((64, 48)) < 0.05)).astype(np.float32)
    x = rng.normal(size=(17, 48)).astype(np.float32)
    assert np.allclose(csr_matmul(*csr_of(W), x), (sparse.csr_matrix(W) @ x.T).T, atol=1e-5)


@pytest.mark.task("csr-matmul")
def test_sparse_model_reproduces_pruned_model(mlp, flat_loaders):
    _, test = flat_loaders
    oracle_prune(mlp, 0.9)
    sparse = to_sparse(mlp)
    assert all(isinstance(sparse[i], SparseLinear) for i in (0, 2, 4))
    assert sparse[2].nnz == np.count_nonzero(mlp[2].weight.data)
    x = Tensor(np.random.default_rng(0).random((9, 64)).astype(np.float32))
    assert np.allclose(sparse(x).data, mlp(x).data, atol=1e-5)
    assert evaluate(sparse, test) == evaluate(mlp, test)
    single = SparseLinear.from_linear(mlp[0])
    assert single(Tensor(x.data[0])).shape == (256,)
    assert np.allclose(single(Tensor(x.data[0])).data, mlp[0](x).data[0], atol=1e-5)


class FakeClock:
    "A clock that only moves when the model runs: each call takes the next of `durations`."

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0
        self.grad_enabled = []

    def __call__(self):
        return self.now

    def model(self, x):
        self.grad_enabled.append(is_grad_enabled())
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


@pytest.mark.task("benchmark-inference")
def test_warmup_repeats_and_median():
    clock = FakeClock([50.0, 50.0, 50.0, 3.0, 1.0, 9.0, 2.0, 100.0])    # three warm-up calls are not timed
    result = benchmark_inference(clock.model, np.zeros(2), warmup=3, repeats=5, number=1, timer=clock)
    assert clock.calls == 8
    assert result["median"] == 3.0 and result["min"] == 1.0 and result["q1"] == 2.0 and result["q3"] == 9.0
    assert result["repeats"] == 5 and result["number"] == 1
    assert not any(clock.grad_enabled), "timing runs under no_grad"


@pytest.mark.task("benchmark-inference")
def test_number_per_group_and_autorange():
    clock = FakeClock([0.5])
    result = benchmark_inference(clock.model, np.zeros(2), warmup=0, repeats=4, number=10, timer=clock)
    assert clock.calls == 40 and result["median"] == pytest.approx(0.5) and result["number"] == 10
    clock = FakeClock([3e-4])
    result = benchmark_inference(clock.model, np.zeros(2), warmup=0, repeats=2, min_time=0.01, timer=clock)
    assert result["number"] == 64                                     # 32 calls = 9.6 ms < 10 ms <= 64 calls
    assert result["median"] == pytest.approx(3e-4)


@pytest.mark.task("benchmark-inference")
def test_benchmark_real_model_restores_training_mode():
    model = Sequential(Linear(8, 8, rng=0), ReLU(), Dropout(0.5, rng=0))
    model.train()
    result = benchmark_inference(model, np.ones((4, 8), np.float32), warmup=1, repeats=3)
    assert result["median"] > 0 and result["q1"] <= result["median"] <= result["q3"]
    assert model.training and model[2].training


def test_given_parts_of_benchmark_inference():
    model = Sequential(Linear(8, 8, rng=0), ReLU())
    assert measure_speedup(model, model, np.ones((4, 8), np.float32), warmup=0, repeats=3) > 0
    with pytest.raises(ValueError, match="repeats"):
        benchmark_inference(model, np.ones((4, 8)), repeats=0)
