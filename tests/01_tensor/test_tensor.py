"""Module 01: Tensor forward operations, checked against NumPy and hand-computed values."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.core.tensor import Tensor, get_rng, manual_seed

FAST = settings(max_examples=40, deadline=None, derandomize=True)


def floats_for(shape):
    return hnp.arrays(np.float32, shape, elements=st.floats(-10, 10, width=32))


# -- creation and attributes -------------------------------------------------------------

def test_creation_defaults_to_float32_and_keeps_shape():
    t = Tensor([[1, 2, 3], [4, 5, 6]])
    assert t.dtype == np.float32 and isinstance(t.data, np.ndarray)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert t.data.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert t.grad is None and t.requires_grad is False and t.mask is None


def test_dtype_argument_and_tensor_unwrapping():
    t = Tensor([1, 2], dtype=np.float64)
    assert t.dtype == np.float64
    assert Tensor(t).dtype == np.float32, "the dtype argument wins over the wrapped tensor's"
    same = Tensor(np.arange(3, dtype=np.float32))
    assert Tensor(same).data is same.data
    assert Tensor(3).shape == () and Tensor(3).item() == 3.0
    assert Tensor([1.0], requires_grad=True).requires_grad is True


def test_float32_array_is_shared_not_copied():
    a = np.zeros(3, dtype=np.float32)
    t = Tensor(a)
    assert t.data is a and t.numpy() is a


@pytest.mark.parametrize("bad", ["hello", b"bytes", None, {"a": 1}, [[1, 2], [3]], [1, "x"]])
def test_non_numeric_data_is_rejected_naming_what_arrived(bad):
    with pytest.raises(TypeError, match="got"):
        Tensor(bad)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        Tensor([1, 2], dtype=np.int64, requires_grad=True)


def test_item_len_and_repr():
    assert Tensor([[2.5]]).item() == 2.5
    with pytest.raises(ValueError, match=r"\(2,\)"):
        Tensor([1.0, 2.0]).item()
    with pytest.raises(TypeError):
        len(Tensor(1.0))
    text = repr(Tensor([1.0, 2.0], requires_grad=True))
    assert text.startswith("Tensor([1., 2.]") and "requires_grad=True" in text
    assert "float64" in repr(Tensor([1.0], dtype=np.float64))


def test_mask_must_be_boolean_of_the_tensor_shape():
    t = Tensor(np.ones((2, 3)))
    t.mask = np.ones((2, 3), dtype=bool)
    assert t.mask.shape == (2, 3)
    t.mask = None
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        t.mask = np.ones((3, 2), dtype=bool)
    with pytest.raises(TypeError, match="float64"):
        t.mask = np.ones((2, 3))


# -- arithmetic ---------------------------------------------------------------------------

def test_arithmetic_hand_computed():
    a = Tensor([1.0, 2.0, 4.0])
    assert (a + 1).data.tolist() == [2, 3, 5]
    assert (1 + a).data.tolist() == [2, 3, 5]
    assert (a - 1).data.tolist() == [0, 1, 3]
    assert (10 - a).data.tolist() == [9, 8, 6]
    assert (a * 3).data.tolist() == [3, 6, 12]
    assert (3 * a).data.tolist() == [3, 6, 12]
    assert (a / 2).data.tolist() == [0.5, 1, 2]
    assert (8 / a).data.tolist() == [8, 4, 2]
    assert (-a).data.tolist() == [-1, -2, -4]
    assert (a ** 2).data.tolist() == [1, 4, 16]
    assert (a ** 0.5).data.tolist() == [1, np.float32(np.sqrt(2)), 2]


def test_ndarray_and_list_operands_on_both_sides_give_tensors():
    a = Tensor([1.0, 2.0])
    arr = np.array([10.0, 20.0])  # float64: converted to the tensor's float32
    for result, expected in [(a + arr, [11, 22]), (arr + a, [11, 22]), (arr - a, [9, 18]),
                             (arr / a, [10, 10]), (arr * a, [10, 40]), (a * [2, 3], [2, 6])]:
        assert isinstance(result, Tensor)
        assert result.dtype == np.float32
        assert result.data.tolist() == expected


def test_operations_return_new_tensors():
    a = Tensor([1.0, 2.0])
    b = a + 0
    b.data[0] = 99
    assert a.data[0] == 1.0


def test_float64_tensors_stay_float64():
    a = Tensor([1.0, 2.0], dtype=np.float64)
    assert (a * 2).dtype == np.float64 and (a @ a).dtype == np.float64 and a.exp().dtype == np.float64


def test_unsupported_operands_raise_type_error():
    a = Tensor([1.0])
    with pytest.raises(TypeError):
        a + "x"
    with pytest.raises(TypeError):
        "x" * a
    with pytest.raises(TypeError, match="Tensor"):
        a ** Tensor([2.0])


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2,\)"):
        Tensor(np.ones((2, 3))) * Tensor(np.ones(2))


@FAST
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4), st.data())
def test_broadcasting_matches_numpy(shapes, data):
    x = data.draw(floats_for(shapes.input_shapes[0]))
    y = data.draw(floats_for(shapes.input_shapes[1])) + np.float32(20)  # keep division away from 0
    tx, ty = Tensor(x), Tensor(y)
    for ours, theirs in [(tx + ty, x + y), (tx - ty, x - y), (tx * ty, x * y), (tx / ty, x / y)]:
        assert ours.shape == shapes.result_shape
        np.testing.assert_allclose(ours.data, theirs, rtol=1e-6)


# -- matmul -------------------------------------------------------------------------------

def test_matmul_hand_computed():
    A = Tensor([[1.0, 2.0], [3.0, 4.0]])
    B = Tensor([[5.0, 6.0], [7.0, 8.0]])
    assert (A @ B).data.tolist() == [[19, 22], [43, 50]]
    assert A.matmul(B).data.tolist() == [[19, 22], [43, 50]]
    assert (A @ Tensor([1.0, 1.0])).data.tolist() == [3, 7]
    assert (Tensor([1.0, 1.0]) @ A).data.tolist() == [4, 6]
    assert (np.eye(2) @ A).data.tolist() == A.data.tolist()


@FAST
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.data())
def test_batched_matmul_matches_numpy(batch, n, k, m, data):
    a = data.draw(floats_for((batch, n, k)))
    b = data.draw(floats_for((k, m)))
    np.testing.assert_allclose((Tensor(a) @ Tensor(b)).data, a @ b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("left, right", [((2, 3), (4, 5)), ((3,), (2,)), ((2, 3), (2,)),
                                         ((2, 2, 3), (3, 3, 2))])
def test_matmul_shape_mismatch_names_shapes(left, right):
    with pytest.raises(ValueError, match="matmul") as info:
        Tensor(np.ones(left)) @ Tensor(np.ones(right))
    assert str(left) in str(info.value) and str(right) in str(info.value)


def test_matmul_rejects_scalars():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        Tensor(2.0) @ Tensor([1.0])
    with pytest.raises(TypeError):
        Tensor([1.0]).matmul(2.0)


# -- shapes and indexing ------------------------------------------------------------------

def test_reshape_forms_and_errors():
    t = Tensor(np.arange(12))
    assert t.reshape(3, 4).shape == (3, 4)
    assert t.reshape((2, 6)).shape == (2, 6)
    assert t.reshape([4, -1]).shape == (4, 3)
    np.testing.assert_array_equal(t.reshape(2, 2, 3).data, np.arange(12).reshape(2, 2, 3))
    with pytest.raises(ValueError, match=r"\(12,\).*\(5, 2\)"):
        t.reshape(5, 2)
    with pytest.raises(ValueError, match="-1"):
        t.reshape(-1, -1)
    with pytest.raises(ValueError):
        t.reshape(5, -1)
    with pytest.raises(TypeError):
        t.reshape(2.5, 2)


def test_transpose_and_T():
    x = np.arange(24.0).reshape(2, 3, 4)
    t = Tensor(x)
    np.testing.assert_array_equal(t.transpose().data, np.swapaxes(x, -2, -1))
    np.testing.assert_array_equal(t.transpose(0, 2).data, np.swapaxes(x, 0, 2))
    m = Tensor([[1.0, 2.0, 3.0]])
    assert m.T.shape == (3, 1) and m.T.data.tolist() == [[1], [2], [3]]
    v = Tensor([1.0, 2.0])
    assert v.T.data.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"out of range.*\(2,\)"):
        v.transpose()


def test_indexing_matches_numpy():
    x = np.arange(20.0).reshape(4, 5)
    t = Tensor(x)
    rows, cols = np.array([0, 2, 2]), np.array([1, 4, 4])
    for key in [1, -1, (2, 3), slice(1, 3), (slice(None), slice(None, None, 2)), (Ellipsis, 0),
                (rows, cols), np.array([3, 0, 3]), x[:, 0] > 5, (None, 1)]:
        np.testing.assert_array_equal(t[key].data, x[key])
    assert t[[0, 1]].shape == (2, 5)
    assert t[Tensor([0.0, 3.0])].data.tolist() == [x[0].tolist(), x[3].tolist()]
    with pytest.raises(IndexError):
        t[Tensor([0.5])]


# -- reductions and elementwise math -------------------------------------------------------

@FAST
@given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), st.data())
def test_reductions_match_numpy(shape, data):
    x = data.draw(floats_for(shape))
    t = Tensor(x)
    axes = [None] + list(range(-len(shape), len(shape))) + ([(0, len(shape) - 1)] if len(shape) > 1 else [])
    for axis in axes:
        for keepdims in (False, True):
            for ours, theirs in [(t.sum, np.sum), (t.mean, np.mean), (t.max, np.max)]:
                got = ours(axis=axis, keepdims=keepdims)
                want = theirs(x, axis=axis, keepdims=keepdims)
                assert isinstance(got, Tensor) and got.shape == np.shape(want)
                np.testing.assert_allclose(got.data, want, rtol=1e-5, atol=1e-4)


def test_reductions_hand_computed():
    m = Tensor([[1.0, 5.0], [3.0, 2.0]])
    assert m.sum().item() == 11 and m.mean().item() == 2.75 and m.max().item() == 5
    assert m.sum(axis=[0, 1]).item() == 11
    assert m.max(axis=0).data.tolist() == [3, 5]
    assert m.mean(axis=1, keepdims=True).data.tolist() == [[3], [2.5]]


def test_elementwise_math_matches_numpy():
    x = np.array([0.5, 1.0, 2.0, 3.0], dtype=np.float32)
    t = Tensor(x)
    np.testing.assert_allclose(t.exp().data, np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(t.log().data, np.log(x), rtol=1e-6)
    np.testing.assert_allclose(t.sqrt().data, np.sqrt(x), rtol=1e-6)
    assert t.exp().dtype == np.float32


# -- the random generator -----------------------------------------------------------------

def test_manual_seed_reproduces_draws():
    manual_seed(123)
    first = get_rng().normal(size=5)
    manual_seed(123)
    again = get_rng().normal(size=5)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, np.random.default_rng(123).normal(size=5))
    assert manual_seed(7) is get_rng()


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_manual_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        manual_seed(bad)


def test_numpy_scalars_do_not_upcast_float32():
    a = Tensor([1.0, 4.0])
    for result in [a * np.float64(2), np.float64(2) * a, a / np.sqrt(4.0), a - np.float64(1),
                   a ** np.float64(2), a + np.int64(1)]:
        assert result.dtype == np.float32
    assert (a / np.sqrt(4.0)).data.tolist() == [0.5, 2.0]
