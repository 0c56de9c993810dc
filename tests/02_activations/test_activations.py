"""Activations: forward values vs NumPy, stability for large inputs, gradients vs finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinytorch.core.activations import ReLU, Sigmoid, Softmax, Tanh
from tinytorch.core.tensor import Tensor
from gradcheck import numerical_grad

ACTIVATIONS = [ReLU(), Sigmoid(), Tanh(), Softmax(), Softmax(dim=0)]


def numpy_oracle(act, x):
    "Independent float64 reference implementations."
    x = np.asarray(x, dtype=np.float64)
    if isinstance(act, ReLU):
        return np.maximum(x, 0.0)
    if isinstance(act, Sigmoid):
        return np.exp(-np.logaddexp(0.0, -x))           # 1/(1+exp(-x)) in log space
    if isinstance(act, Tanh):
        return np.tanh(x)
    z = x - x.max(axis=act.dim, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=act.dim, keepdims=True)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_forward_matches_numpy(act):
    x = np.random.default_rng(0).normal(0, 3, size=(4, 5))
    got = act(Tensor(x, dtype=np.float64)).data
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, numpy_oracle(act, x), rtol=1e-12, atol=1e-12)


def test_hand_computed_values():
    x = Tensor([-1.0, 0.0, 2.0])
    assert ReLU()(x).data.tolist() == [0.0, 0.0, 2.0]
    np.testing.assert_allclose(Sigmoid()(x).data, [0.26894142, 0.5, 0.88079708], atol=1e-7)
    np.testing.assert_allclose(Tanh()(x).data, [-0.76159416, 0.0, 0.96402758], atol=1e-7)
    # softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6
    np.testing.assert_allclose(Softmax()(Tensor([0.0, np.log(2), np.log(3)])).data, [1 / 6, 2 / 6, 3 / 6], atol=1e-7)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_float32_stays_float32(act):
    out = act(Tensor(np.ones((2, 3))))
    assert isinstance(out, Tensor) and out.data.dtype == np.float32 and out.shape == (2, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_inputs_do_not_overflow(dtype):
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sig = Sigmoid()(Tensor(x, dtype=dtype)).data
        tanh = Tanh()(Tensor(x, dtype=dtype)).data
        soft = Softmax()(Tensor(x, dtype=dtype)).data
    np.testing.assert_allclose(sig, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(tanh, [[-1.0, -1.0, 0.0, 1.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(soft, [[0.0, 0.0, 0.0, 0.0, 1.0]], atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (3, 4), elements=st.floats(-1e6, 1e6)))
def test_softmax_is_a_distribution_and_shift_invariant(x):
    p = Softmax()(Tensor(x, dtype=np.float64)).data
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    shifted = Softmax()(Tensor(x + 123.0, dtype=np.float64)).data
    np.testing.assert_allclose(shifted, p, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (6,), elements=st.floats(-1e5, 1e5)))
def test_sigmoid_and_tanh_symmetries(x):
    s = Sigmoid()(Tensor(x, dtype=np.float64)).data
    s_neg = Sigmoid()(Tensor(-x, dtype=np.float64)).data
    np.testing.assert_allclose(s + s_neg, 1.0, atol=1e-12)
    t = Tanh()(Tensor(x, dtype=np.float64)).data
    np.testing.assert_allclose(t, np.tanh(x), atol=1e-12)
    np.testing.assert_allclose(t, 2 * Sigmoid()(Tensor(2 * x, dtype=np.float64)).data - 1, atol=1e-12)


# -- gradients (need Module 05's autograd) -------------------------------------------------

@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_gradient_matches_finite_differences(act):
    pytest.importorskip("tinytorch.core.autograd")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, size=(3, 4))
    x[np.abs(x) < 0.05] = 0.3                           # keep ReLU's kink out of the FD stencil
    weights = rng.normal(size=(3, 4))                   # a random projection tests every output

    t = Tensor(x, requires_grad=True, dtype=np.float64)
    (act(t) * weights).sum().backward()
    expected = numerical_grad(lambda v: float((numpy_oracle(act, v) * weights).sum()), x.copy())
    np.testing.assert_allclose(t.grad, expected, rtol=1e-6, atol=1e-8)


def test_gradients_at_zero_and_far_out():
    pytest.importorskip("tinytorch.core.autograd")
    x = Tensor([-1000.0, 0.0, 1000.0], requires_grad=True, dtype=np.float64)
    Sigmoid()(x).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.25, 0.0], atol=1e-12)
    x = Tensor([-1000.0, 0.0, 1000.0], requires_grad=True, dtype=np.float64)
    Tanh()(x).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 1.0, 0.0], atol=1e-12)
    assert np.all(np.isfinite(x.grad))


def test_softmax_gradient_is_jacobian_product():
    pytest.importorskip("tinytorch.core.autograd")
    x = np.array([0.2, -1.0, 3.0])
    w = np.array([1.0, 2.0, -1.0])
    t = Tensor(x, requires_grad=True, dtype=np.float64)
    (Softmax()(t) * w).sum().backward()
    p = np.exp(x) / np.exp(x).sum()
    jacobian = np.diag(p) - np.outer(p, p)
    np.testing.assert_allclose(t.grad, jacobian @ w, atol=1e-12)


# -- interface and errors ----------------------------------------------------------------

def test_interface():
    for act in ACTIVATIONS:
        assert act.parameters() == []
    assert repr(ReLU()) == "ReLU()" and repr(Softmax(dim=1)) == "Softmax(dim=1)"


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="expects a Tensor"):
        ReLU()(np.ones(3))
    with pytest.raises(TypeError, match="dim must be an int"):
        Softmax(dim=1.5)
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        Softmax(dim=2)(Tensor(np.ones((2, 2))))
