"""Module 05: every operation's gradient against central finite differences in float64."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.core.autograd import Function, is_grad_enabled, no_grad
from tinytorch.core.tensor import Tensor
from gradcheck import numerical_grad

FAST = settings(max_examples=25, deadline=None, derandomize=True)

def T64(a, requires_grad=False):
    return Tensor(a, dtype=np.float64, requires_grad=requires_grad)


def check_gradients(fn, *arrays, seed=0, rtol=1e-5, atol=1e-7):
    """fn maps Tensors to a Tensor. Compare backward(R) with the finite-difference gradient of
    sum(fn(...) * R) for a random R, so every output entry's gradient path is exercised."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    out_shape = fn(*[T64(a) for a in arrays]).shape
    weights = np.random.default_rng(seed).normal(size=out_shape)

    def scalar(*arrs):
        with no_grad():
            return float(np.sum(fn(*[T64(a) for a in arrs]).data * weights))

    inputs = [T64(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*inputs)
    assert out.requires_grad
    out.backward(weights)
    for i, t in enumerate(inputs):
        assert t.grad is not None, f"input {i} got no gradient"
        assert t.grad.shape == t.shape and t.grad.dtype == np.float64
        # numerical_grad nudges arrays[i] in place, so scalar(*arrays) sees each nudge
        numeric = numerical_grad(lambda _nudged: scalar(*arrays), arrays[i])
        np.testing.assert_allclose(t.grad, numeric, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")


def arrays_of(shape, low=-2.0, high=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high))


# -- elementwise binary ops with broadcasting ------------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("name", list(BINARY))
@FAST
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       data=st.data())
def test_binary_ops_with_broadcasting(name, shapes, data):
    a = data.draw(arrays_of(shapes.input_shapes[0]))
    b = data.draw(arrays_of(shapes.input_shapes[1], 0.5, 2.0))  # away from 0 for division
    check_gradients(BINARY[name], a, b)


@pytest.mark.parametrize("fn", [
    lambda a: a + 2.0, lambda a: 2.0 + a, lambda a: a - 3.0, lambda a: 3.0 - a,
    lambda a: a * 1.5, lambda a: 1.5 * a, lambda a: a / 4.0, lambda a: 4.0 / a,
    lambda a: a * np.array([1.0, -2.0, 3.0]), lambda a: np.array([1.0, -2.0, 3.0]) - a,
    lambda a: np.array([[1.0], [2.0]]) / a,
], ids=["t+c", "c+t", "t-c", "c-t", "t*c", "c*t", "t/c", "c/t", "t*arr", "arr-t", "arr/t"])
def test_ops_with_constants_on_either_side(fn):
    check_gradients(fn, np.array([[0.7, 1.3, 2.0], [1.1, 0.6, 1.9]]))


def test_neg():
    check_gradients(lambda a: -a, np.array([[1.0, -2.0], [0.5, 3.0]]))


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1, -2.5, 1, 0])
def test_pow(exponent):
    check_gradients(lambda a: a ** exponent, np.array([[0.5, 1.7], [2.2, 0.9]]))


# -- matmul ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape_a, shape_b", [
    ((3, 4), (4, 2)),             # matrix @ matrix
    ((2, 3, 4), (4, 5)),          # batched @ shared matrix
    ((2, 3, 4), (2, 4, 5)),       # batched @ batched
    ((2, 1, 3, 4), (5, 4, 2)),    # broadcast batch dimensions
    ((4,), (4, 3)),               # vector @ matrix
    ((3, 4), (4,)),               # matrix @ vector
    ((4,), (4,)),                 # dot product
    ((4,), (2, 4, 3)),            # vector @ batched
    ((2, 3, 4), (4,)),            # batched @ vector
])
def test_matmul(shape_a, shape_b):
    rng = np.random.default_rng(1)
    check_gradients(lambda a, b: a @ b, rng.normal(size=shape_a), rng.normal(size=shape_b))


def test_matmul_with_constant_and_transpose_like_a_linear_layer():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3))
    check_gradients(lambda w, b: x @ w.T + b, rng.normal(size=(4, 3)), rng.normal(size=4))


# -- shapes and indexing --------------------------------------------------------------------

def test_reshape():
    check_gradients(lambda a: a.reshape(3, -1), np.arange(12.0).reshape(2, 6) / 7)
    check_gradients(lambda a: a.reshape((2, 2, 3)), np.arange(12.0) / 5)


@pytest.mark.parametrize("dims", [(), (0, 1), (0, 2), (-1, -3)])
def test_transpose(dims):
    check_gradients(lambda a: a.transpose(*dims), np.random.default_rng(3).normal(size=(2, 3, 4)))


def test_T():
    check_gradients(lambda a: a.T, np.random.default_rng(4).normal(size=(2, 3)))


X45 = np.random.default_rng(5).normal(size=(4, 5))


@pytest.mark.parametrize("key", [
    1, -1, (2, 3), slice(1, 3), (slice(None), slice(None, None, 2)), (Ellipsis, 0), (None, 1),
    np.array([3, 0, 3, 3]),                                   # repeated rows
    (np.array([0, 2, 2]), np.array([1, 4, 4])),               # repeated entries
    (np.arange(4), np.array([1, 0, 1, 4])),                   # the cross-entropy pattern
    X45[:, 0] > 0,                                            # boolean mask
    [1, 1],
], ids=lambda k: type(k).__name__)
def test_getitem(key):
    check_gradients(lambda a: a[key], X45)


def test_getitem_repeated_index_adds_up():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[np.array([0, 0, 0, 2])].sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]


# -- reductions ------------------------------------------------------------------------------

def reduction_cases(ndim):
    axes = [None] + list(range(-ndim, ndim))
    if ndim > 1:
        axes.append((0, ndim - 1))
    return [(axis, keepdims) for axis in axes for keepdims in (False, True)]


@pytest.mark.parametrize("name", ["sum", "mean"])
@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), data=st.data())
def test_sum_and_mean(name, shape, data):
    x = data.draw(arrays_of(shape))
    for axis, keepdims in reduction_cases(len(shape)):
        check_gradients(lambda a: getattr(a, name)(axis=axis, keepdims=keepdims), x)


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), seed=st.integers(0, 2**16))
def test_max_with_distinct_values(shape, seed):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    x = (rng.permutation(size) * 0.1 + rng.uniform(0, 0.01, size)).reshape(shape)
    for axis, keepdims in reduction_cases(len(shape)):
        check_gradients(lambda a: a.max(axis=axis, keepdims=keepdims), x)


def test_max_splits_ties_evenly():
    x = Tensor([[1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 0.0, 1.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0, 0]])
    y = Tensor([5.0, 5.0], requires_grad=True)
    y.max().backward()
    assert y.grad.tolist() == [0.5, 0.5]


# -- elementwise math ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["exp", "log", "sqrt"])
@FAST
@given(x=arrays_of(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), 0.3, 3.0))
def test_exp_log_sqrt(name, x):
    check_gradients(lambda a: getattr(a, name)(), x)


def test_composite_expression():
    rng = np.random.default_rng(6)
    targets = np.array([2, 0, 1])

    def cross_entropy(logits, w):
        z = logits @ w
        shifted = z - z.max(axis=1, keepdims=True)
        log_probs = shifted - shifted.exp().sum(axis=1, keepdims=True).log()
        return -log_probs[np.arange(3), targets].mean() + (w * w).sum().sqrt() * 0.1

    check_gradients(cross_entropy, rng.normal(size=(3, 4)), rng.normal(size=(4, 3)))


# -- the backward pass itself ------------------------------------------------------------------

def test_scalar_backward_defaults_to_ones_and_matches_hand_values():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]
    assert x.grad.dtype == np.float32


def test_gradients_accumulate_across_calls_and_paths():
    x = Tensor([3.0], requires_grad=True)
    y = x * x + x          # two paths into x: 2x + 1 = 7
    y.backward()
    assert x.grad.tolist() == [7.0]
    (x * 2).backward()
    assert x.grad.tolist() == [9.0]


def test_shared_subexpression_is_visited_once():
    x = Tensor([2.0], requires_grad=True)
    h = x * 3                       # used by both branches below
    (h * h + h).backward()          # d/dx (9x^2 + 3x) = 18x + 3 = 39
    assert x.grad.tolist() == [39.0]


def test_leaf_grad_is_a_writable_copy():
    x = Tensor([1.0, 2.0], requires_grad=True)
    g = np.array([5.0, 6.0], dtype=np.float32)
    x.backward(g)
    assert x.grad.tolist() == [5.0, 6.0] and x.grad is not g
    x.grad[0] = 0.0                 # optimizers zero masked entries in place
    assert g[0] == 5.0
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    w.sum().backward()              # the sum's gradient is a broadcast view internally
    w.grad[0, 0] = 0.0
    assert w.grad.sum() == 5.0


def test_only_tensors_that_require_grad_get_gradients():
    x = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([3.0, 4.0])
    y = x * c
    (y * y).sum().backward()
    assert c.grad is None and y.grad is None, "constants and intermediate results keep no .grad"
    np.testing.assert_allclose(x.grad, 2 * x.data * c.data ** 2)


def test_backward_errors():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar.*\(2,\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="requires grad"):
        Tensor([1.0]).sum().backward()
    (x * 2).backward(Tensor([1.0, 1.0]))
    assert x.grad.tolist() == [2.0, 2.0]


class Probe(Function):
    "Identity that records the dtype of the gradient the next operation sends back."
    seen = []

    def forward(self, a):
        return a

    def backward(self, grad_output):
        Probe.seen.append(grad_output.dtype)
        return (grad_output,)


@pytest.mark.parametrize("fn", [
    lambda a: a + 1, lambda a: 2 - a, lambda a: a * np.float64(3), lambda a: 1 / a, lambda a: -a,
    lambda a: a ** 2, lambda a: a ** np.float64(0.5), lambda a: a @ a.T, lambda a: a.reshape(-1),
    lambda a: a.T, lambda a: a[np.array([0, 0])], lambda a: a.sum(axis=0), lambda a: a.mean(),
    lambda a: a.max(axis=1), lambda a: a.exp(), lambda a: a.log(), lambda a: a.sqrt(),
    lambda a: a * np.ones(3) / np.sqrt(3.0),
])
def test_float32_graphs_keep_float32_gradients(fn):
    x = Tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    Probe.seen.clear()
    out = fn(Probe.apply(x))
    assert out.dtype == np.float32
    out.sum().backward()
    assert Probe.seen == [np.float32] and x.grad.dtype == np.float32


def test_deep_chain_has_no_recursion_limit():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-3)
    del y  # freeing a 10k-deep graph must not crash either


def test_training_sized_mlp_step_is_fast():
    """64-256-128-10 MLP, one epoch of 23 batches. Measured ~0.02 s alone; the bound is loose
    because other processes share the cores, and only catches pathological overhead (Python
    loops over elements, copies of whole graphs)."""
    rng = np.random.default_rng(0)
    sizes = [64, 256, 128, 10]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [Tensor(rng.uniform(-0.1, 0.1, (n_out, n_in)), requires_grad=True),
                   Tensor(np.zeros(n_out), requires_grad=True)]
    X = rng.normal(size=(1437, 64)).astype(np.float32)
    y = rng.integers(0, 10, 1437)
    start = time.perf_counter()
    for i in range(0, 1437, 64):
        h = Tensor(X[i:i + 64])
        for j in range(0, 6, 2):
            h = h @ params[j].T + params[j + 1]
            if j < 4:
                h = h * (h.data > 0)
        z = h - h.max(axis=1, keepdims=True)
        loss = (z.exp().sum(axis=1).log() - z[np.arange(len(z)), y[i:i + 64]]).mean()
        loss.backward()
        for p in params:
            p.data -= 0.01 * p.grad
            p.grad = None
    assert time.perf_counter() - start < 5.0


# -- grad mode and detach -----------------------------------------------------------------------

def test_no_grad_builds_no_graph_and_restores_mode():
    x = Tensor([1.0], requires_grad=True)
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        y = x * 2
    assert is_grad_enabled()
    assert not y.requires_grad
    with pytest.raises(RuntimeError):
        y.backward()
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("boom")
    assert is_grad_enabled(), "an exception inside no_grad must restore grad mode"


def test_no_grad_as_decorator():
    @no_grad()
    def evaluate(t):
        return t * 2, is_grad_enabled()

    out, enabled = evaluate(Tensor([1.0], requires_grad=True))
    assert not enabled and not out.requires_grad and is_grad_enabled()


def test_detach_stops_gradient_but_shares_data():
    x = Tensor([2.0], requires_grad=True)
    d = (x * 3).detach()
    assert not d.requires_grad and d._ctx is None
    (x * d).backward()             # d counts as the constant 6
    assert x.grad.tolist() == [6.0]
    x2 = Tensor([1.0, 2.0], requires_grad=True)
    assert x2.detach().data is x2.data


# -- user-defined Functions ------------------------------------------------------------------------

class Cube(Function):
    def forward(self, a):
        self.a = a
        return a ** 3

    def backward(self, grad_output):
        return (grad_output * 3 * self.a ** 2,)


class ScaledAdd(Function):
    "a + scale * b, with a keyword setting; skips gradients nobody needs."

    def forward(self, a, b, scale=1.0):
        self.scale = scale
        return a + scale * b

    def backward(self, grad_output):
        need_a, need_b = self.needs_input_grad
        return (grad_output if need_a else None, grad_output * self.scale if need_b else None)


def test_function_subclass_gradients():
    check_gradients(lambda a: Cube.apply(a), np.array([[0.5, -1.2], [2.0, 0.3]]))
    check_gradients(lambda a, b: ScaledAdd.apply(a, b, scale=-2.5), np.ones((2, 3)), np.full((2, 3), 0.5))


def test_function_records_graph_only_when_needed():
    w = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([1.0, 1.0])
    out = ScaledAdd.apply(c, w, scale=2.0)
    assert out.requires_grad and isinstance(out._ctx, ScaledAdd)
    assert out._ctx.needs_input_grad == (False, True)
    out.sum().backward()
    assert w.grad.tolist() == [2.0, 2.0] and c.grad is None
    assert ScaledAdd.apply(c, c)._ctx is None
    assert Cube.apply(np.array([2.0])).data.tolist() == [8.0], "plain arrays are constants"


def test_function_backward_mistakes_are_reported():
    class WrongShape(Function):
        def forward(self, a):
            return a.sum()

        def backward(self, grad_output):
            return (np.ones(7),)

    class WrongCount(Function):
        def forward(self, a):
            return a * 1

        def backward(self, grad_output):
            return (grad_output, grad_output)

    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"WrongShape.*\(7,\).*\(2,\)"):
        WrongShape.apply(x).backward()
    with pytest.raises(RuntimeError, match="WrongCount.*2 gradients for 1 inputs"):
        WrongCount.apply(x).sum().backward()
    with pytest.raises(NotImplementedError):
        Function.apply(x)


def test_forward_errors_survive_autograd():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 3\)"):
        a @ a
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        a + np.ones(4)
    with pytest.raises(ValueError, match=r"\(6 elements\)"):
        a.reshape(4, 2)
    with pytest.raises(TypeError):
        a ** a
