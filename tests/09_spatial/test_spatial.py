"""Module 09: Conv2d and MaxPool2d against loop oracles and central finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.core.tensor import Tensor
from tinytorch.core.spatial import (Conv2d, MaxPool2d, col2im, conv2d, conv_output_shape, im2col)
from gradcheck import numerical_grad


# -- oracles: plain loops, written independently of the implementation -----------------------

def conv_loops(x, w, b, stride, padding):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    out = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    out[n, o, i, j] = np.sum(window * w[o]) + (b[o] if b is not None else 0.0)
    return out


def maxpool_loops(x, kernel, stride):
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = np.zeros((N, C, Ho, Wo))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, c, i, j] = x[n, c, i * sh:i * sh + kh, j * sw:j * sw + kw].max()
    return out


conv_cases = st.fixed_dictionaries({
    "N": st.integers(1, 2), "C": st.integers(1, 3), "O": st.integers(1, 3),
    "H": st.integers(3, 7), "W": st.integers(3, 7),
    "kh": st.integers(1, 3), "kw": st.integers(1, 3),
    "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "ph": st.integers(0, 2), "pw": st.integers(0, 2),
    "bias": st.booleans(), "seed": st.integers(0, 1000),
})


def make_case(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    w = rng.standard_normal((case["O"], case["C"], case["kh"], case["kw"])).astype(dtype)
    b = rng.standard_normal(case["O"]).astype(dtype) if case["bias"] else None
    return x, w, b, (case["sh"], case["sw"]), (case["ph"], case["pw"])


# -- im2col / col2im ----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(case=conv_cases)
def test_col2im_is_the_adjoint_of_im2col(case):
    x, w, _, stride, padding = make_case(case)
    kernel = w.shape[2:]
    cols = im2col(x, kernel, stride, padding)
    c = np.random.default_rng(1).standard_normal(cols.shape)
    back = col2im(c, x.shape, kernel, stride, padding)
    assert back.shape == x.shape
    assert np.isclose(np.sum(cols * c), np.sum(x * back))


def test_conv_output_shape():
    assert conv_output_shape(8, 8, 3) == (6, 6)
    assert conv_output_shape(8, 8, 3, padding=1) == (8, 8)
    assert conv_output_shape(7, 9, (3, 2), stride=(2, 3), padding=(1, 0)) == (4, 3)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv_output_shape(2, 2, 3)


# -- Conv2d forward --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(case=conv_cases)
def test_conv2d_forward_matches_loops(case):
    x, w, b, stride, padding = make_case(case)
    out = conv2d(Tensor(x, dtype=np.float64), Tensor(w, dtype=np.float64),
                 None if b is None else Tensor(b, dtype=np.float64), stride, padding)
    np.testing.assert_allclose(out.data, conv_loops(x, w, b, stride, padding), rtol=1e-10, atol=1e-12)


def test_conv2d_layer_forward_float32():
    layer = Conv2d(2, 3, 3, stride=2, padding=1, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 2, 8, 8)).astype(np.float32)
    out = layer(Tensor(x))
    assert out.shape == (4, 3, 4, 4) and out.data.dtype == np.float32
    expected = conv_loops(x, layer.weight.data, layer.bias.data, (2, 2), (1, 1))
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


# -- Conv2d backward ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    dict(N=2, C=2, O=3, H=5, W=4, kh=3, kw=2, sh=1, sw=1, ph=1, pw=0, bias=True, seed=0),
    dict(N=1, C=3, O=2, H=6, W=6, kh=3, kw=3, sh=2, sw=2, ph=1, pw=1, bias=True, seed=1),
    dict(N=2, C=1, O=2, H=5, W=7, kh=2, kw=3, sh=3, sw=2, ph=2, pw=1, bias=False, seed=2),
])
def test_conv2d_gradients_match_finite_differences(case):
    x, w, b, stride, padding = make_case(case)
    R = np.random.default_rng(99).standard_normal(conv_loops(x, w, b, stride, padding).shape)
    xt = Tensor(x, requires_grad=True, dtype=np.float64)
    wt = Tensor(w, requires_grad=True, dtype=np.float64)
    bt = None if b is None else Tensor(b, requires_grad=True, dtype=np.float64)
    out = conv2d(xt, wt, bt, stride, padding)
    out.backward(R)

    def loss(_nudged):
        # the same weighted sum, recomputed from the arrays the finite differences nudge in place
        return float(np.sum(conv2d(Tensor(x, dtype=np.float64), Tensor(w, dtype=np.float64),
                                   None if b is None else Tensor(b, dtype=np.float64),
                                   stride, padding).data * R))

    np.testing.assert_allclose(xt.grad, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(wt.grad, numerical_grad(loss, w), rtol=1e-6, atol=1e-7)
    if b is not None:
        np.testing.assert_allclose(bt.grad, numerical_grad(loss, b), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(bt.grad, R.sum(axis=(0, 2, 3)), rtol=1e-10)


def test_conv2d_layer_gradients_reach_parameters():
    layer = Conv2d(1, 2, 3, padding=1, rng=np.random.default_rng(0))
    out = layer(Tensor(np.ones((2, 1, 4, 4))))
    out.backward(np.ones(out.shape, dtype=np.float32))
    assert layer.weight.grad.shape == (2, 1, 3, 3) and layer.bias.grad.shape == (2,)
    # all-ones image and gradient: dL/dw[o, 0, a, b] counts the outputs whose window puts offset
    # (a, b) on a real (unpadded) pixel: 3, 4, 3 per axis, times the batch of 2
    np.testing.assert_allclose(layer.weight.grad[0, 0], 2 * np.array([[9, 12, 9], [12, 16, 12], [9, 12, 9]]))
    np.testing.assert_allclose(layer.bias.grad, [32, 32])


# -- Conv2d layer: init and validation ------------------------------------------------------------

def test_conv2d_init_is_pytorch_uniform():
    layer = Conv2d(4, 8, 3, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(4 * 3 * 3)
    assert layer.weight.shape == (8, 4, 3, 3) and layer.weight.requires_grad
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.9 * bound  # spread over the whole range
    assert layer.weight.data.dtype == np.float32


def test_conv2d_seeded_and_named():
    a = Conv2d(1, 3, 2, rng=np.random.default_rng(5))
    b = Conv2d(1, 3, 2, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert [name for name, _ in a.named_parameters()] == ["weight", "bias"]
    no_bias = Conv2d(1, 3, 2, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_conv2d_rejects_bad_input():
    layer = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 1, 8, 8\)"):
        layer(Tensor(np.ones((2, 1, 8, 8))))
    with pytest.raises(ValueError, match="shape"):
        layer(Tensor(np.ones((3, 8, 8))))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer(Tensor(np.ones((1, 3, 2, 2))))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=3, stride=0),
                                    dict(kernel_size=3, padding=-1), dict(kernel_size=(3, 3, 3)),
                                    dict(kernel_size=2.5)])
def test_conv2d_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        Conv2d(1, 2, **kwargs)


# -- MaxPool2d --------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(2, 7), W=st.integers(2, 7),
       k=st.integers(1, 3), s=st.integers(1, 3), seed=st.integers(0, 1000))
def test_maxpool_forward_matches_loops(N, C, H, W, k, s, seed):
    k = min(k, H, W)
    x = np.random.default_rng(seed).standard_normal((N, C, H, W))
    out = MaxPool2d(k, stride=s)(Tensor(x, dtype=np.float64))
    np.testing.assert_array_equal(out.data, maxpool_loops(x, (k, k), (s, s)))


def test_maxpool_default_stride_is_kernel_size():
    assert MaxPool2d(2).stride == (2, 2)
    assert MaxPool2d(2)(Tensor(np.ones((1, 1, 8, 8)))).shape == (1, 1, 4, 4)
    assert MaxPool2d(2)(Tensor(np.ones((1, 1, 5, 5)))).shape == (1, 1, 2, 2)  # last row/column dropped


def test_maxpool_routes_gradient_to_the_maximum():
    x = np.array([[[[1., 8., 2., 3.],
                    [4., 0., 9., 1.],
                    [5., 6., 0., 2.],
                    [7., 3., 4., 6.5]]]])
    xt = Tensor(x, requires_grad=True, dtype=np.float64)
    out = MaxPool2d(2)(xt)
    np.testing.assert_array_equal(out.data[0, 0], [[8, 9], [7, 6.5]])
    out.backward(np.array([[[[1., 2.], [3., 4.]]]]))
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 2], expected[3, 0], expected[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(xt.grad[0, 0], expected)


def test_maxpool_overlapping_windows_accumulate():
    # the centre (9) wins all four 2x2 windows of a 3x3 input at stride 1
    x = np.array([[[[1., 2., 3.], [4., 9., 5.], [6., 7., 8.]]]])
    xt = Tensor(x, requires_grad=True, dtype=np.float64)
    out = MaxPool2d(2, stride=1)(xt)
    np.testing.assert_array_equal(out.data[0, 0], [[9, 9], [9, 9]])
    out.backward(np.array([[[[1., 2.], [3., 4.]]]]))
    expected = np.zeros((3, 3))
    expected[1, 1] = 10
    np.testing.assert_array_equal(xt.grad[0, 0], expected)


def test_maxpool_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.permutation(2 * 3 * 5 * 5).reshape(2, 3, 5, 5) / 10.0  # distinct values: max is smooth
    R = rng.standard_normal((2, 3, 2, 2))
    xt = Tensor(x, requires_grad=True, dtype=np.float64)
    MaxPool2d(3, stride=2)(xt).backward(R)
    loss = lambda _nudged: float(np.sum(MaxPool2d(3, stride=2)(Tensor(x, dtype=np.float64)).data * R))
    np.testing.assert_allclose(xt.grad, numerical_grad(loss, x, h=1e-4), rtol=1e-6, atol=1e-8)


def test_maxpool_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        MaxPool2d(2)(Tensor(np.ones((8, 8))))
    with pytest.raises(ValueError, match="larger than the padded input"):
        MaxPool2d(3)(Tensor(np.ones((1, 1, 2, 2))))
    with pytest.raises(ValueError, match="kernel_size"):
        MaxPool2d(0)
    assert MaxPool2d(2).parameters() == []
