"""Module 09: grouped and depthwise Conv2d (`groups`) against a loop oracle and finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.core.tensor import Tensor
from tinytorch.core.spatial import Conv2d, conv2d
from gradcheck import numerical_grad


def grouped_conv_loops(x, w, b, stride, padding, groups):
    "Plain loops: output channel o sees only the input channels of its group."
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            first = (o // Og) * Cg  # the group's first input channel
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, first:first + Cg, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    out[n, o, i, j] = np.sum(window * w[o]) + (b[o] if b is not None else 0.0)
    return out


def make_grouped(N, groups, per_in, per_out, H, W, k, seed, bias=True):
    rng = np.random.default_rng(seed)
    C, O = groups * per_in, groups * per_out
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, per_in, k, k))
    b = rng.standard_normal(O) if bias else None
    return x, w, b


def as_tensors(x, w, b, requires_grad=False):
    wrap = lambda a: None if a is None else Tensor(a, requires_grad=requires_grad, dtype=np.float64)
    return wrap(x), wrap(w), wrap(b)


# -- forward -------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 2), groups=st.integers(1, 4), per_in=st.integers(1, 2), per_out=st.integers(1, 3),
       H=st.integers(3, 6), W=st.integers(3, 6), k=st.integers(1, 3), s=st.integers(1, 2),
       p=st.integers(0, 1), bias=st.booleans(), seed=st.integers(0, 1000))
def test_grouped_conv2d_forward_matches_loops(N, groups, per_in, per_out, H, W, k, s, p, bias, seed):
    x, w, b = make_grouped(N, groups, per_in, per_out, H, W, k, seed, bias)
    out = conv2d(*as_tensors(x, w, b), stride=s, padding=p, groups=groups)
    np.testing.assert_allclose(out.data, grouped_conv_loops(x, w, b, (s, s), (p, p), groups),
                               rtol=1e-10, atol=1e-12)


def test_grouped_conv_equals_separate_convs_on_channel_slices():
    # groups=2: the first half of the filters convolves the first half of the channels, and so on
    x, w, b = make_grouped(2, 2, 3, 2, 5, 5, 3, seed=4)
    out = conv2d(*as_tensors(x, w, b), padding=1, groups=2).data
    first = conv2d(*as_tensors(x[:, :3], w[:2], b[:2]), padding=1).data
    second = conv2d(*as_tensors(x[:, 3:], w[2:], b[2:]), padding=1).data
    np.testing.assert_allclose(out, np.concatenate([first, second], axis=1), rtol=1e-12)


def test_depthwise_conv_hand_computed():
    # 1x1 depthwise: each channel is multiplied by its own weight, no mixing between channels
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    w = np.array([2.0, -1.0, 0.5]).reshape(3, 1, 1, 1)
    out = conv2d(Tensor(x, dtype=np.float64), Tensor(w, dtype=np.float64), groups=3).data
    np.testing.assert_array_equal(out, x * np.array([2.0, -1.0, 0.5]).reshape(1, 3, 1, 1))
    # 2x2 depthwise over a 2x2 image: one output per channel, the sum of its window times the filter
    x = np.array([[[[1., 2.], [3., 4.]], [[5., 6.], [7., 8.]]]])
    w = np.array([[[[1., 0.], [0., 1.]]], [[[0., 1.], [1., 0.]]]])  # diagonal, anti-diagonal
    out = conv2d(Tensor(x, dtype=np.float64), Tensor(w, dtype=np.float64), groups=2).data
    np.testing.assert_array_equal(out.reshape(2), [1 + 4, 6 + 7])


def test_depthwise_channel_depends_only_on_its_input_channel():
    layer = Conv2d(4, 8, 3, padding=1, groups=4, rng=0)  # depth multiplier 2: channels 2c, 2c+1 read c
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)
    changed = x.copy()
    changed[:, 1] += 1.0
    diff = np.abs(layer(Tensor(changed)).data - layer(Tensor(x)).data).reshape(8, -1).max(axis=1)
    assert np.flatnonzero(diff > 0).tolist() == [2, 3]


def test_groups_one_is_the_ordinary_convolution():
    layer = Conv2d(3, 4, 3, padding=1, rng=7)
    plain = Conv2d(3, 4, 3, padding=1, groups=1, rng=7)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 6, 6)))
    np.testing.assert_array_equal(layer(x).data, plain(x).data)
    np.testing.assert_array_equal(layer(x).data, conv2d(x, layer.weight, layer.bias, 1, 1).data)


# -- backward ------------------------------------------------------------------------------------

@pytest.mark.parametrize("N, groups, per_in, per_out, H, W, k, stride, padding, bias", [
    (2, 3, 1, 1, 5, 4, 3, 1, 1, True),    # depthwise
    (1, 2, 2, 3, 6, 5, 3, 2, 1, True),    # two groups, 2 -> 3 channels each
    (2, 2, 1, 2, 5, 5, 2, 1, 0, False),   # depth multiplier 2, no bias
    (1, 4, 2, 1, 4, 4, 3, 2, 2, True),    # groups shrink channels 8 -> 4
])
def test_grouped_conv2d_gradients_match_finite_differences(N, groups, per_in, per_out, H, W, k, stride,
                                                           padding, bias):
    x, w, b = make_grouped(N, groups, per_in, per_out, H, W, k, seed=groups + k, bias=bias)
    out_shape = grouped_conv_loops(x, w, b, (stride, stride), (padding, padding), groups).shape
    R = np.random.default_rng(99).standard_normal(out_shape)
    xt, wt, bt = as_tensors(x, w, b, requires_grad=True)
    conv2d(xt, wt, bt, stride, padding, groups).backward(R)

    def loss(_nudged):
        return float(np.sum(conv2d(*as_tensors(x, w, b), stride, padding, groups).data * R))

    np.testing.assert_allclose(xt.grad, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(wt.grad, numerical_grad(loss, w), rtol=1e-6, atol=1e-7)
    if b is not None:
        np.testing.assert_allclose(bt.grad, R.sum(axis=(0, 2, 3)), rtol=1e-10)


def test_grouped_weight_gradient_hand_computed():
    # depthwise 1x1 on an all-ones output gradient: dL/dw[c] is the sum of channel c over the batch
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 4))
    w = Tensor(np.ones((2, 1, 1, 1)), requires_grad=True, dtype=np.float64)
    out = conv2d(Tensor(x, dtype=np.float64), w, groups=2)
    out.backward(np.ones(out.shape))
    np.testing.assert_allclose(w.grad.reshape(2), x.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_grouped_layer_skips_input_gradient_for_images():
    layer = Conv2d(2, 4, 3, groups=2, rng=0)
    images = Tensor(np.ones((1, 2, 4, 4)))  # no requires_grad: its gradient is never computed
    out = layer(images)
    out.backward(np.ones(out.shape, dtype=np.float32))
    assert images.grad is None and layer.weight.grad.shape == (4, 1, 3, 3)


# -- the layer: shapes, init, validation ------------------------------------------------------------

def test_grouped_conv2d_weight_shape_and_init():
    layer = Conv2d(6, 9, 3, groups=3, rng=np.random.default_rng(0))
    assert layer.groups == 3 and layer.weight.shape == (9, 2, 3, 3)
    bound = 1 / np.sqrt(2 * 3 * 3)  # fan_in counts only the group's channels, as PyTorch does
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.9 * bound
    assert layer(Tensor(np.ones((2, 6, 5, 5)))).shape == (2, 9, 3, 3)


def test_depthwise_conv2d_repr_shows_groups_only_when_set():
    assert "groups=8" in repr(Conv2d(8, 8, 3, groups=8))
    assert "groups" not in repr(Conv2d(8, 8, 3))


@pytest.mark.parametrize("in_channels, out_channels, groups, message", [
    (6, 4, 4, "groups=4 must divide in_channels=6"),
    (4, 6, 4, "groups=4 must divide out_channels=6"),
    (4, 4, 0, "groups must be a positive int"),
    (4, 4, 2.0, "groups must be a positive int"),
    (4, 4, True, "groups must be a positive int"),
])
def test_conv2d_rejects_bad_groups(in_channels, out_channels, groups, message):
    with pytest.raises(ValueError, match=message):
        Conv2d(in_channels, out_channels, 3, groups=groups)


def test_conv2d_function_checks_weight_against_groups():
    x = Tensor(np.ones((1, 4, 5, 5)))
    with pytest.raises(ValueError, match=r"\(out_channels, 2, kh, kw\).*groups=2"):
        conv2d(x, Tensor(np.ones((4, 4, 3, 3))), groups=2)
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        conv2d(x, Tensor(np.ones((3, 1, 3, 3))), groups=3)
