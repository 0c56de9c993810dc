"""Module 09: grouped Conv2d, BatchNorm1d/2d (train and eval, running statistics) and BatchNorm
folding against PyTorch, an independent implementation. Skipped when PyTorch is not installed
(it is in the `instructor` extra, which the README's test command installs)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinytorch.core.activations import ReLU  # noqa: E402
from tinytorch.core.blocks import BatchNorm1d, BatchNorm2d, Residual, fold_batchnorm, fold_batchnorms  # noqa: E402
from tinytorch.core.layers import Flatten, Linear, Sequential  # noqa: E402
from tinytorch.core.spatial import Conv2d, conv2d  # noqa: E402
from tinytorch.core.tensor import Tensor  # noqa: E402


def f64(array, requires_grad=False):
    return Tensor(array, requires_grad=requires_grad, dtype=np.float64)


def t64(array, requires_grad=False):
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def copy_conv(ours: Conv2d) -> "torch.nn.Conv2d":
    theirs = torch.nn.Conv2d(ours.in_channels, ours.out_channels, ours.kernel_size, stride=ours.stride,
                             padding=ours.padding, groups=ours.groups, bias=ours.bias is not None).double()
    with torch.no_grad():
        theirs.weight.copy_(t64(ours.weight.data))
        if ours.bias is not None:
            theirs.bias.copy_(t64(ours.bias.data))
    return theirs


def copy_batchnorm(ours) -> "torch.nn.Module":
    kind = torch.nn.BatchNorm2d if isinstance(ours, BatchNorm2d) else torch.nn.BatchNorm1d
    theirs = kind(ours.num_features, eps=ours.eps, momentum=ours.momentum).double()
    with torch.no_grad():
        theirs.weight.copy_(t64(ours.weight.data))
        theirs.bias.copy_(t64(ours.bias.data))
        theirs.running_mean.copy_(t64(ours.running_mean))
        theirs.running_var.copy_(t64(ours.running_var))
    return theirs


def random_affine(bn, rng):
    bn.weight.data[:] = rng.uniform(0.5, 1.5, bn.num_features)
    bn.bias.data[:] = rng.uniform(-0.5, 0.5, bn.num_features)
    return bn


# -- grouped convolution ---------------------------------------------------------------------------

@pytest.mark.parametrize("C, O, groups, k, stride, padding, bias", [
    (8, 8, 8, 3, 1, 1, True),     # depthwise
    (8, 8, 8, 3, 2, 1, False),    # depthwise, strided (MobileNet's downsampling)
    (4, 8, 4, 3, 1, 0, True),     # depth multiplier 2
    (6, 9, 3, (3, 2), (2, 1), (1, 0), True),
    (6, 4, 2, 1, 1, 0, True),     # grouped 1x1
    (3, 5, 1, 3, 1, 1, True),     # ordinary
])
def test_conv2d_groups_matches_torch(C, O, groups, k, stride, padding, bias):
    rng = np.random.default_rng(C * O + groups)
    layer = Conv2d(C, O, k, stride=stride, padding=padding, groups=groups, bias=bias, rng=rng)
    x = rng.standard_normal((2, C, 7, 6))
    weight, bias_t = f64(layer.weight.data, True), None if layer.bias is None else f64(layer.bias.data, True)
    xt = f64(x, True)
    out = conv2d(xt, weight, bias_t, layer.stride, layer.padding, groups)
    R = rng.standard_normal(out.shape)
    out.backward(R)

    theirs = copy_conv(layer)
    tx = t64(x, True)
    tout = theirs(tx)
    tout.backward(t64(R))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weight.grad, theirs.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(bias_t.grad, theirs.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv2d_groups_float32_matches_torch():
    layer = Conv2d(16, 16, 3, padding=1, groups=16, rng=0)
    x = np.random.default_rng(1).standard_normal((4, 16, 8, 8)).astype(np.float32)
    theirs = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(layer.weight.data))
        theirs.bias.copy_(torch.from_numpy(layer.bias.data))
    np.testing.assert_allclose(layer(Tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


# -- BatchNorm -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape", [(BatchNorm1d, (6, 4)), (BatchNorm1d, (5, 4, 3)), (BatchNorm2d, (3, 4, 5, 5))])
def test_batchnorm_training_steps_match_torch(layer, shape):
    rng = np.random.default_rng(len(shape))
    ours = random_affine(layer(shape[1], momentum=0.3), rng)
    theirs = copy_batchnorm(ours)
    weight, bias = f64(ours.weight.data, True), f64(ours.bias.data, True)
    ours.weight, ours.bias = weight, bias
    for step in range(4):  # several steps: the running statistics accumulate
        x = rng.standard_normal(shape) * (step + 1) + step
        R = rng.standard_normal(shape)
        weight.grad = bias.grad = None
        theirs.zero_grad()
        xt, tx = f64(x, True), t64(x, True)
        out, tout = ours(xt), theirs(tx)
        out.backward(R)
        tout.backward(t64(R))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(weight.grad, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(bias.grad, theirs.bias.grad.numpy(), rtol=1e-10, atol=1e-10)
        # ours are float32 buffers (PyTorch's default dtype); theirs float64 here
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer, shape", [(BatchNorm1d, (6, 4)), (BatchNorm2d, (1, 4, 5, 5))])
def test_batchnorm_eval_matches_torch(layer, shape):
    rng = np.random.default_rng(7)
    ours = random_affine(layer(shape[1]), rng)
    ours.running_mean[:] = rng.standard_normal(shape[1])
    ours.running_var[:] = rng.uniform(0.2, 3.0, shape[1])
    theirs = copy_batchnorm(ours).eval()
    ours.eval()
    x = rng.standard_normal(shape)
    R = rng.standard_normal(shape)
    xt, tx = f64(x, True), t64(x, True)
    out, tout = ours(xt), theirs(tx)
    out.backward(R)
    tout.backward(t64(R))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


# -- folding ---------------------------------------------------------------------------------------

def trained_pair(layer, bn, shape, rng):
    random_affine(bn, rng)
    pair = Sequential(layer, bn)
    for _ in range(3):
        pair(Tensor(rng.standard_normal(shape)))
    return pair.eval()


@pytest.mark.parametrize("groups", [1, 4])
def test_fold_conv_batchnorm_matches_torch_fusion(groups):
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    rng = np.random.default_rng(groups)
    conv, bn = trained_pair(Conv2d(4, 8, 3, padding=1, groups=groups, rng=rng), BatchNorm2d(8), (8, 4, 6, 6), rng)
    ours = fold_batchnorm(conv, bn)
    theirs = fuse_conv_bn_eval(copy_conv(conv).eval(), copy_batchnorm(bn).eval())
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_fold_linear_batchnorm_matches_torch_fusion():
    from torch.nn.utils.fusion import fuse_linear_bn_eval

    rng = np.random.default_rng(3)
    linear, bn = trained_pair(Linear(5, 3, rng=rng), BatchNorm1d(3), (16, 5), rng)
    theirs_linear = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        theirs_linear.weight.copy_(t64(linear.weight.data))
        theirs_linear.bias.copy_(t64(linear.bias.data))
    ours = fold_batchnorm(linear, bn)
    theirs = fuse_linear_bn_eval(theirs_linear.eval(), copy_batchnorm(bn).eval())
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), rtol=1e-6, atol=1e-6)


# -- a whole block network, trained one step, evaluated and folded -----------------------------------

class TorchResidual(torch.nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def to_torch(module):
    "The same network in PyTorch, built from ours layer by layer (float64)."
    if isinstance(module, Sequential):
        return torch.nn.Sequential(*[to_torch(child) for child in module])
    if isinstance(module, Residual):
        return TorchResidual(to_torch(module.body), None if module.shortcut is None else to_torch(module.shortcut))
    if isinstance(module, Conv2d):
        return copy_conv(module)
    if isinstance(module, (BatchNorm1d, BatchNorm2d)):
        return copy_batchnorm(module)
    if isinstance(module, Linear):
        theirs = torch.nn.Linear(module.in_features, module.out_features).double()
        with torch.no_grad():
            theirs.weight.copy_(t64(module.weight.data))
            theirs.bias.copy_(t64(module.bias.data))
        return theirs
    if isinstance(module, ReLU):
        return torch.nn.ReLU()
    if isinstance(module, Flatten):
        return torch.nn.Flatten()
    raise TypeError(type(module).__name__)


def mobile_res_net(rng):
    "MobileNet's depthwise-separable block inside a ResNet residual, BatchNorm after every conv."
    return Sequential(
        Conv2d(1, 8, 3, padding=1, bias=False, rng=rng), BatchNorm2d(8), ReLU(),
        Residual(Sequential(Conv2d(8, 8, 3, padding=1, groups=8, bias=False, rng=rng), BatchNorm2d(8), ReLU(),
                            Conv2d(8, 8, 1, bias=False, rng=rng), BatchNorm2d(8))),
        Residual(Sequential(Conv2d(8, 8, 3, stride=2, padding=1, groups=8, rng=rng), BatchNorm2d(8), ReLU(),
                            Conv2d(8, 16, 1, rng=rng), BatchNorm2d(16)),
                 shortcut=Sequential(Conv2d(8, 16, 1, stride=2, rng=rng), BatchNorm2d(16))),
        ReLU(), Flatten(), Linear(16 * 4 * 4, 10, rng=rng), BatchNorm1d(10),
    )


def test_block_network_matches_torch_in_train_eval_and_folded():
    rng = np.random.default_rng(0)
    ours = mobile_res_net(rng)
    for module in ours.modules():
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            random_affine(module, rng)
    theirs = to_torch(ours)
    ours_params = dict(ours.named_parameters())
    theirs_params = dict(theirs.named_parameters())
    assert sorted(ours_params) == sorted(theirs_params)  # the same dotted names, so the same layout

    x = rng.standard_normal((16, 1, 8, 8))
    R = rng.standard_normal((16, 10))
    out = ours(f64(x))
    out.backward(R)
    tout = theirs(t64(x))
    tout.backward(t64(R))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    for name, param in ours_params.items():
        np.testing.assert_allclose(param.grad, theirs_params[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)

    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, 1, 8, 8))
    expected = theirs(t64(x)).detach().numpy()
    np.testing.assert_allclose(ours(f64(x)).data, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fold_batchnorms(ours)(f64(x)).data, expected, rtol=1e-5, atol=1e-5)
