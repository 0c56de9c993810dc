"""Module 09, given code: BatchNorm1d/2d, Residual and BatchNorm folding, against hand-computed
cases and central finite differences (tests/09_spatial/test_torch_oracle.py compares with PyTorch)."""
import copy

import numpy as np
import pytest

from tinytorch.core.activations import ReLU
from tinytorch.core.blocks import BatchNorm1d, BatchNorm2d, Residual, fold_batchnorm, fold_batchnorms
from tinytorch.core.layers import Flatten, Linear, Sequential
from tinytorch.core.optimizers import SGD
from tinytorch.core.spatial import Conv2d
from tinytorch.core.tensor import Tensor
from gradcheck import numerical_grad


def f64(array, requires_grad=False):
    return Tensor(array, requires_grad=requires_grad, dtype=np.float64)


def batchnorm_reference(x, gamma, beta, mean, var, eps):
    "The formula, written directly: statistics per channel (axis 1) broadcast over the rest."
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)


def give_statistics(model, seed=0, images=None, steps=3):
    "Random gamma/beta and a few training passes, so the running statistics are not 0 and 1."
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            module.weight.data[:] = rng.uniform(0.5, 1.5, module.num_features)
            module.bias.data[:] = rng.uniform(-0.5, 0.5, module.num_features)
    model.train()
    for _ in range(steps):
        model(Tensor(rng.standard_normal(images)))
    return model.eval()


# -- BatchNorm: forward and statistics ------------------------------------------------------------------

def test_batchnorm1d_training_hand_computed():
    bn = BatchNorm1d(2, eps=0.0)
    y = bn(f64([[1.0, 10.0], [3.0, 30.0]]))
    # channel 0: mean 2, biased variance 1 -> -1, +1; channel 1: mean 20, variance 100 -> -1, +1
    np.testing.assert_allclose(y.data, [[-1, -1], [1, 1]], rtol=1e-12)


def test_batchnorm_running_statistics_use_momentum_and_unbiased_variance():
    bn = BatchNorm1d(1, momentum=0.25)
    bn(f64([[1.0], [2.0], [6.0]]))  # mean 3, biased variance 14/3, unbiased 7
    np.testing.assert_allclose(bn.running_mean, [0.75 * 0 + 0.25 * 3], rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, [0.75 * 1 + 0.25 * 7], rtol=1e-6)
    bn(f64([[3.0], [3.0], [3.0]]))  # mean 3, variance 0
    np.testing.assert_allclose(bn.running_mean, [0.75 * 0.75 + 0.25 * 3], rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, [0.75 * 2.5], rtol=1e-6)
    assert bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32


def test_batchnorm2d_statistics_cover_batch_and_pixels():
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 6)) * [[[[1.0]], [[3.0]], [[0.5]]]] + 2.0
    bn = BatchNorm2d(3, momentum=1.0)  # momentum 1: the running statistics are the last batch's
    y = bn(f64(x)).data
    m = 4 * 5 * 6
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, x.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-6)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) / (x.var(axis=(0, 2, 3)) + 1e-5),
                               rtol=1e-10)


def test_batchnorm_eval_uses_running_statistics_and_leaves_them_alone():
    bn = BatchNorm2d(2, eps=1e-3)
    bn.running_mean[:] = [1.0, -2.0]
    bn.running_var[:] = [4.0, 0.25]
    bn.weight.data[:] = [2.0, 1.0]
    bn.bias.data[:] = [0.0, 0.5]
    bn.eval()
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 3))  # batch of one: fine in eval mode
    expected = batchnorm_reference(x, np.array([2.0, 1.0]), np.array([0.0, 0.5]), np.array([1.0, -2.0]),
                                   np.array([4.0, 0.25]), 1e-3)
    np.testing.assert_allclose(bn(f64(x)).data, expected, rtol=1e-6)
    assert bn.running_mean.tolist() == [1.0, -2.0] and bn.running_var.tolist() == [4.0, 0.25]


def test_batchnorm1d_accepts_sequences():
    x = np.random.default_rng(2).standard_normal((3, 4, 5))  # (N, C, L): statistics over N and L
    y = BatchNorm1d(4)(f64(x)).data
    expected = batchnorm_reference(x, np.ones(4), np.zeros(4), x.mean(axis=(0, 2)), x.var(axis=(0, 2)), 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


def test_batchnorm_parameters_and_float32_output():
    bn = BatchNorm2d(5)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert bn.weight.data.tolist() == [1.0] * 5 and bn.bias.data.tolist() == [0.0] * 5
    out = bn(Tensor(np.random.default_rng(3).standard_normal((2, 5, 3, 3))))
    assert out.data.dtype == np.float32


# -- BatchNorm: gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape", [(BatchNorm1d, (5, 3)), (BatchNorm1d, (3, 2, 4)), (BatchNorm2d, (3, 2, 3, 2))])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients_match_finite_differences(layer, shape, training):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape) * 2 + 1
    R = rng.standard_normal(shape)  # uneven weights: with a plain sum the training input gradient is 0
    bn = layer(shape[1])
    gamma, beta = rng.uniform(0.5, 2.0, shape[1]), rng.standard_normal(shape[1])
    bn.running_mean[:], bn.running_var[:] = rng.standard_normal(shape[1]), rng.uniform(0.5, 2, shape[1])
    bn.train(training)
    running = (bn.running_mean.copy(), bn.running_var.copy())

    def loss(_nudged):
        probe = copy.deepcopy(bn)
        probe.running_mean[:], probe.running_var[:] = running  # every call starts from the same buffers
        probe.weight, probe.bias = f64(gamma), f64(beta)
        return float(np.sum(probe(f64(x)).data * R))

    xt = f64(x, requires_grad=True)
    bn.weight, bn.bias = f64(gamma, requires_grad=True), f64(beta, requires_grad=True)
    bn(xt).backward(R)
    np.testing.assert_allclose(xt.grad, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.weight.grad, numerical_grad(loss, gamma), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.bias.grad, R.sum(axis=tuple(i for i in range(len(shape)) if i != 1)), rtol=1e-10)


def test_batchnorm_training_input_gradient_of_a_plain_sum_is_zero():
    # the outputs of a channel always sum to N * beta, whatever x is, so d(sum)/dx = 0
    x = f64(np.random.default_rng(4).standard_normal((4, 3)), requires_grad=True)
    BatchNorm1d(3)(x).sum().backward()
    np.testing.assert_allclose(x.grad, 0, atol=1e-12)


def test_batchnorm_trains_with_an_optimizer():
    bn = BatchNorm1d(2)
    opt = SGD(bn.parameters(), lr=0.5)
    x = Tensor(np.random.default_rng(5).standard_normal((8, 2)))
    target = np.array([3.0, -1.0], dtype=np.float32)
    for _ in range(50):
        opt.zero_grad()
        ((bn(x) - target) ** 2).mean().backward()
        opt.step()
    np.testing.assert_allclose(bn.bias.data, target, atol=1e-3)  # the batch mean of the output: beta


# -- BatchNorm: validation ----------------------------------------------------------------------------

def test_batchnorm_rejects_wrong_inputs():
    with pytest.raises(ValueError, match=r"BatchNorm2d expected input of shape \(N, 3, H, W\), got \(2, 4, 5, 5\)"):
        BatchNorm2d(3)(Tensor(np.ones((2, 4, 5, 5))))
    with pytest.raises(ValueError, match=r"\(N, 3\) or \(N, 3, L\)"):
        BatchNorm1d(3)(Tensor(np.ones((2, 3, 4, 4))))
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm1d(3)(Tensor(np.ones((1, 3))))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_features=0), "num_features must be a positive int"),
    (dict(num_features=3, eps=-1e-5), "eps must be a number >= 0"),
    (dict(num_features=3, momentum=1.5), r"momentum must be a number in \[0, 1\]"),
])
def test_batchnorm_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchNorm2d(**kwargs)


# -- Residual ----------------------------------------------------------------------------------------

def test_residual_identity_adds_the_input():
    body = Sequential(Linear(3, 3, rng=0), ReLU())
    x = f64(np.random.default_rng(0).standard_normal((4, 3)))
    np.testing.assert_allclose(Residual(body)(x).data, body(x).data + x.data, rtol=1e-12)


def test_residual_shortcut_branch_and_names():
    block = Residual(Sequential(Conv2d(2, 4, 3, stride=2, padding=1, rng=0)), shortcut=Conv2d(2, 4, 1, stride=2, rng=1))
    x = Tensor(np.random.default_rng(1).standard_normal((2, 2, 6, 6)))
    np.testing.assert_allclose(block(x).data, block.body(x).data + block.shortcut(x).data, rtol=1e-6)
    assert [n for n, _ in block.named_parameters()] == ["body.0.weight", "body.0.bias", "shortcut.weight", "shortcut.bias"]
    assert [n for n, _ in block.named_modules()] == ["", "body", "body.0", "shortcut"]


def test_residual_gradient_flows_through_both_branches():
    # y = w * x + x: dy/dx = w + 1, dy/dw = x
    layer = Linear(1, 1, bias=False)
    layer.weight = f64([[2.0]], requires_grad=True)
    x = f64([[3.0]], requires_grad=True)
    Residual(layer)(x).backward(np.ones((1, 1)))
    assert x.grad.tolist() == [[3.0]] and layer.weight.grad.tolist() == [[3.0]]


def test_residual_rejects_mismatched_branches_and_non_modules():
    with pytest.raises(ValueError, match=r"body\(x\) has shape \(2, 4\) but the input x has shape \(2, 3\)"):
        Residual(Linear(3, 4))(Tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"shortcut\(x\) has shape \(2, 5\)"):
        Residual(Linear(3, 4), shortcut=Linear(3, 5))(Tensor(np.ones((2, 3))))
    with pytest.raises(TypeError, match="Residual body must be a Module"):
        Residual(lambda x: x)


# -- folding BatchNorm ----------------------------------------------------------------------------------

def test_fold_batchnorm_hand_computed_linear():
    layer = Linear(2, 2)
    layer.weight.data[:] = [[1.0, 2.0], [3.0, 4.0]]
    layer.bias.data[:] = [1.0, -1.0]
    bn = BatchNorm1d(2, eps=0.0)
    bn.weight.data[:], bn.bias.data[:] = [2.0, 1.0], [0.5, 0.0]
    bn.running_mean[:], bn.running_var[:] = [1.0, 3.0], [4.0, 1.0]
    folded = fold_batchnorm(layer, bn)
    # scale = gamma / sqrt(var) = [1, 1]... channel 0: 2 / 2 = 1; channel 1: 1 / 1 = 1
    np.testing.assert_allclose(folded.weight.data, [[1, 2], [3, 4]])
    np.testing.assert_allclose(folded.bias.data, [(1 - 1) * 1 + 0.5, (-1 - 3) * 1 + 0.0])
    bn.running_var[:] = [16.0, 0.25]  # scale [0.5, 2]
    folded = fold_batchnorm(layer, bn)
    np.testing.assert_allclose(folded.weight.data, [[0.5, 1.0], [6.0, 8.0]])
    np.testing.assert_allclose(folded.bias.data, [0.0 * 0.5 + 0.5, -4.0 * 2])


@pytest.mark.parametrize("groups, bias", [(1, True), (1, False), (4, True)])
def test_fold_batchnorm_conv_matches_eval_mode(groups, bias):
    conv = Conv2d(4, 8, 3, padding=1, groups=groups, bias=bias, rng=0)
    bn = BatchNorm2d(8)
    give_statistics(Sequential(conv, bn), images=(8, 4, 5, 5))
    folded = fold_batchnorm(conv, bn)
    assert folded.groups == groups and folded.padding == (1, 1) and folded.bias is not None
    x = Tensor(np.random.default_rng(9).standard_normal((3, 4, 5, 5)))
    np.testing.assert_allclose(folded(x).data, bn(conv(x)).data, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_keeps_the_mask_and_the_original():
    conv = Conv2d(2, 3, 3, rng=0)
    keep = np.ones(conv.weight.shape, dtype=bool)
    keep[1] = False
    conv.weight.data[~keep] = 0.0
    conv.weight.mask = keep
    before = conv.weight.data.copy()
    bn = give_statistics(Sequential(conv, BatchNorm2d(3)), images=(4, 2, 5, 5))[1]
    folded = fold_batchnorm(conv, bn)
    np.testing.assert_array_equal(folded.weight.mask, keep)
    assert folded.weight.mask is not conv.weight.mask
    assert np.all(folded.weight.data[1] == 0)
    np.testing.assert_array_equal(conv.weight.data, before)


def test_fold_batchnorm_rejects_mismatches():
    with pytest.raises(TypeError, match="a Conv2d folds with a BatchNorm2d"):
        fold_batchnorm(Conv2d(1, 2, 3), BatchNorm1d(2))
    with pytest.raises(TypeError, match="a Linear folds with a BatchNorm1d"):
        fold_batchnorm(Linear(1, 2), BatchNorm2d(2))
    with pytest.raises(ValueError, match="BatchNorm has 3 channels but the Conv2d before it has 2 outputs"):
        fold_batchnorm(Conv2d(1, 2, 3), BatchNorm2d(3))
    with pytest.raises(TypeError, match="folds into a Conv2d or Linear"):
        fold_batchnorm(ReLU(), BatchNorm2d(3))


def block_model(rng=0):
    rng = np.random.default_rng(rng)
    return Sequential(
        Conv2d(1, 4, 3, padding=1, bias=False, rng=rng), BatchNorm2d(4), ReLU(),
        Residual(Sequential(Conv2d(4, 4, 3, padding=1, groups=4, rng=rng), BatchNorm2d(4), ReLU(),
                            Conv2d(4, 8, 1, rng=rng), BatchNorm2d(8)),
                 shortcut=Sequential(Conv2d(4, 8, 1, rng=rng), BatchNorm2d(8))),
        ReLU(), Flatten(), Linear(8 * 6 * 6, 10, rng=rng), BatchNorm1d(10),
    )


def test_fold_batchnorms_whole_model_matches_eval_mode():
    model = give_statistics(block_model(), images=(16, 1, 6, 6))
    folded = fold_batchnorms(model)
    x = Tensor(np.random.default_rng(3).standard_normal((5, 1, 6, 6)))
    np.testing.assert_allclose(folded(x).data, model(x).data, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, (BatchNorm1d, BatchNorm2d)) for m in folded.modules())
    assert sum(isinstance(m, (BatchNorm1d, BatchNorm2d)) for m in model.modules()) == 5  # untouched


def test_fold_batchnorms_renumbers_and_keeps_structure():
    folded = fold_batchnorms(give_statistics(block_model(), images=(4, 1, 6, 6)))
    names = [name for name, _ in folded.named_modules()]
    assert names == ["", "0", "1", "2", "2.body", "2.body.0", "2.body.1", "2.body.2",
                     "2.shortcut", "2.shortcut.0", "3", "4", "5"]
    assert isinstance(folded[2], Residual) and folded[2].body[0].groups == 4
    assert not folded.training  # the mode of the model it was given


def test_fold_batchnorms_keeps_custom_names_and_unfoldable_batchnorms():
    model = Sequential({"conv": Conv2d(1, 2, 3, rng=0), "bn": BatchNorm2d(2), "act": ReLU(), "late": BatchNorm2d(2)})
    give_statistics(model, images=(4, 1, 5, 5))
    folded = fold_batchnorms(model)
    assert [name for name, _ in folded.named_children()] == ["conv", "act", "late"]  # after a ReLU: kept
    x = Tensor(np.random.default_rng(0).standard_normal((2, 1, 5, 5)))
    np.testing.assert_allclose(folded(x).data, model(x).data, rtol=1e-5, atol=1e-6)


def test_fold_batchnorms_without_batchnorm_is_an_equal_copy():
    model = Sequential(Linear(3, 2, rng=0), ReLU())
    folded = fold_batchnorms(model)
    assert folded is not model and folded[0] is not model[0]
    np.testing.assert_array_equal(folded[0].weight.data, model[0].weight.data)
