# %% [markdown]
# # Module 09, given code: blocks of modern networks
#
# > `BatchNorm1d`/`BatchNorm2d`, the `Residual` block, and folding BatchNorm into the layer before it for inference.
#
# Read it; you do not edit it. Real architectures (ResNet, MobileNet) are built from three more
# pieces than the digits models: batch normalization after each convolution, residual additions,
# and depthwise convolutions (`Conv2d(..., groups=C)`, in `spatial_dev.py`). Each piece ties
# channels of different layers together, and that is what makes structured pruning of these
# networks harder than of a plain chain: removing channel `c` from one layer forces removing it
# from every layer coupled to it. Module 18's tracer (`channels_dev.py`) finds those groups.
# It runs top to bottom as a script: `python modules/09_spatial/blocks_dev.py`.

# %%
#| default_exp core.blocks

# %%
#| export
import copy

import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.autograd import Function
from tinytorch.core.activations import Activation
from tinytorch.core.layers import Linear, Module, Sequential
from tinytorch.core.spatial import Conv2d

# %% [markdown]
# ## 1. Batch normalization
#
# Deep networks train faster when each layer's inputs keep a steady scale. `BatchNorm`
# standardizes every channel over the batch (and, for images, over all pixels), then lets the
# network choose the scale and offset it wants back:
#
# $$\hat x = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}}, \qquad y = \gamma\,\hat x + \beta$$
#
# with one learnable `weight` ($\gamma$) and `bias` ($\beta$) per channel.
#
# - **Training**: $\mu_B$ and $\sigma_B^2$ are the mean and (biased) variance of the current batch.
#   The layer also keeps `running_mean` and `running_var`, moving averages with `momentum` 0.1:
#   `running = (1 - momentum) * running + momentum * batch_statistic`. Like PyTorch, the running
#   variance uses the unbiased estimate ($m/(m-1)$ times the batch variance, $m$ values per channel).
# - **Eval** (`model.eval()`): the running statistics replace the batch ones, so an image's
#   output no longer depends on the other images in its batch.
#
# The running statistics are plain arrays (PyTorch calls them buffers), not parameters: no
# optimizer or pruning step touches them, and `state_dict()` (module 03) does not hold them
# either, so copy a trained model with `copy.deepcopy`, or fold it (section 3) before saving.
#
# For pruning: channel `c` of a BatchNorm normalizes channel `c` of the layer before it. The two
# are one unit: prune the conv's filter `c` and the BatchNorm's `weight[c]`, `bias[c]` and running
# statistics must go with it.
#
# The backward pass (training mode) has to remember that $\mu_B$ and $\sigma_B$ depend on every
# input of the channel. With $g$ the output gradient and sums over the $m$ values of a channel:
#
# $$\frac{\partial L}{\partial x} = \frac{\gamma}{\sqrt{\sigma_B^2+\epsilon}}\left(g - \frac{\sum g}{m} - \hat x\,\frac{\sum g\,\hat x}{m}\right), \qquad \frac{\partial L}{\partial\gamma} = \sum g\,\hat x, \qquad \frac{\partial L}{\partial\beta} = \sum g$$
#
# In eval mode the statistics are constants and $\partial L/\partial x = g\,\gamma/\sqrt{\sigma^2+\epsilon}$.

# %%
#| export
class BatchNormFunction(Function):
    "Normalize `x` per channel (axis 1) with `mean`, `var`, then scale by `weight` and shift by `bias`."

    def forward(self, x, weight, bias, mean, var, eps=1e-5, batch_stats=True):
        # batch_stats: mean and var were computed from this x, so the gradient flows through them
        shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast a per-channel vector over (N, C, ...)
        self.axes = (0,) + tuple(range(2, x.ndim))
        inv_std = 1.0 / np.sqrt(var.astype(x.dtype) + x.dtype.type(eps))
        self.x_hat = (x - mean.astype(x.dtype).reshape(shape)) * inv_std.reshape(shape)
        self.scale = (weight * inv_std).reshape(shape)  # dy/dx with the statistics held fixed
        self.batch_stats, self.count = batch_stats, x.size // x.shape[1]
        return self.x_hat * weight.reshape(shape) + bias.reshape(shape)

    def backward(self, grad_output):
        g, x_hat = grad_output, self.x_hat
        grad_bias = g.sum(axis=self.axes)
        grad_weight = (g * x_hat).sum(axis=self.axes)
        grad_x = None
        if self.needs_input_grad[0]:
            if self.batch_stats:
                shape = self.scale.shape
                mean_g = (grad_bias / self.count).reshape(shape)
                mean_gx = (grad_weight / self.count).reshape(shape)
                grad_x = self.scale * (g - mean_g - x_hat * mean_gx)
            else:
                grad_x = g * self.scale
        return grad_x, grad_weight, grad_bias


class _BatchNorm(Module):
    "What BatchNorm1d and BatchNorm2d share; they differ only in the input shapes they accept."

    input_shapes = ""  # for error messages, set by the subclasses

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.floating)) or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.weight = Tensor(np.ones(self.num_features), requires_grad=True)   # gamma
        self.bias = Tensor(np.zeros(self.num_features), requires_grad=True)    # beta
        # Buffers, not parameters: plain arrays, so optimizers and pruning never touch them.
        self.running_mean = np.zeros(self.num_features, dtype=np.float32)
        self.running_var = np.ones(self.num_features, dtype=np.float32)

    def _check_shape(self, x: Tensor) -> None:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x)
        self._check_shape(x)
        if not self.training:
            return BatchNormFunction.apply(x, self.weight, self.bias, mean=self.running_mean,
                                           var=self.running_var, eps=self.eps, batch_stats=False)
        count = x.size // x.shape[1]
        if count < 2:
            raise ValueError(f"{type(self).__name__} in training mode needs more than one value per channel "
                             f"to compute a variance, got input of shape {x.shape}; use a larger batch or "
                             "call .eval()")
        axes = (0,) + tuple(range(2, x.ndim))
        mean, var = x.data.mean(axis=axes), x.data.var(axis=axes)
        # In place: the buffers stay float32 arrays whatever the input dtype.
        self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
        unbiased = var * (count / (count - 1))
        self.running_var[...] = (1 - self.momentum) * self.running_var + self.momentum * unbiased
        return BatchNormFunction.apply(x, self.weight, self.bias, mean=mean, var=var, eps=self.eps,
                                       batch_stats=True)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    "Batch normalization of (N, C) or (N, C, L) inputs, per channel C."

    def _check_shape(self, x: Tensor) -> None:
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d expected input of shape (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L), got {x.shape}")


class BatchNorm2d(_BatchNorm):
    "Batch normalization of (N, C, H, W) images, per channel C (statistics over N, H and W)."

    def _check_shape(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d expected input of shape (N, {self.num_features}, H, W), got {x.shape}")

# %% [markdown]
# A hand-computed case. Channel 0 of a batch of two holds 1 and 3: mean 2, biased variance 1,
# so the outputs are -1 and +1 (up to $\epsilon$); the running mean moves a tenth of the way
# from 0 to 2, and the running variance a tenth of the way from 1 to the *unbiased* variance 2.

# %%
bn = BatchNorm1d(2)
y = bn(Tensor([[1.0, 10.0], [3.0, 30.0]]))
assert np.allclose(y.data, [[-1, -1], [1, 1]], atol=1e-4)
assert np.allclose(bn.running_mean, [0.2, 2.0]) and np.allclose(bn.running_var, [0.9 + 0.2, 0.9 + 20.0])
bn.eval()  # now the running statistics normalize: (1 - 0.2) / sqrt(1.1 + 1e-5)
assert np.allclose(bn(Tensor([[1.0, 10.0]])).data, [[0.8 / np.sqrt(1.1 + 1e-5), 8 / np.sqrt(20.9 + 1e-5)]])
print("✓ BatchNorm1d: batch statistics in training, running statistics in eval")

# %% [markdown]
# The gradient, against central finite differences on a small image batch (float64 so the
# differences are not lost in rounding). The loss weights the outputs unevenly: with a plain sum
# the input gradient of a batch-normalized layer is exactly zero, which would test nothing.

# %%
rng = np.random.default_rng(0)
x = Tensor(rng.standard_normal((3, 2, 2, 2)), dtype=np.float64, requires_grad=True)
bn = BatchNorm2d(2)
bn.weight.data[:] = [1.5, -0.5]
coefficients = rng.standard_normal((3, 2, 2, 2))
(bn(x) * coefficients).sum().backward()


def loss_of(values):
    out = BatchNormFunction().forward(values, bn.weight.data, bn.bias.data, values.mean(axis=(0, 2, 3)),
                                      values.var(axis=(0, 2, 3)))
    return float((out * coefficients).sum())


h = 1e-6
numerical = np.zeros_like(x.data)
for index in np.ndindex(x.shape):
    step = np.zeros_like(x.data)
    step[index] = h
    numerical[index] = (loss_of(x.data + step) - loss_of(x.data - step)) / (2 * h)
assert np.allclose(x.grad, numerical, atol=1e-6), np.abs(x.grad - numerical).max()
print(f"✓ BatchNorm2d input gradient matches finite differences (max error {np.abs(x.grad - numerical).max():.1e})")

# %% [markdown]
# ## 2. Residual blocks
#
# A residual block adds its input back to what its layers computed: `y = body(x) + x`. The
# layers only have to learn a *correction* to the identity, and gradients reach early layers
# through the addition unchanged, which is why ResNets can be 100 layers deep. When the body
# changes the number of channels or the image size, a `shortcut` (usually a 1x1 convolution)
# brings `x` to the same shape: `y = body(x) + shortcut(x)`.
#
# For pruning: the addition pairs channel `c` of the body's output with channel `c` of the
# shortcut (or of the block's input). Both branches must keep the same channels, so the last
# conv of the body, the shortcut conv and every layer that produced the block's input form one
# group: removing a channel means removing it from all of them at once.

# %%
#| export
class Residual(Module):
    "`body(x) + x`, or `body(x) + shortcut(x)`: the sum of two branches of the same shape."

    def __init__(self, body, shortcut=None):
        super().__init__()
        for branch, name in ((body, "body"), (shortcut, "shortcut")):
            if not (branch is None and name == "shortcut") and not isinstance(branch, (Module, Activation)):
                raise TypeError(f"Residual {name} must be a Module (usually a Sequential), got {type(branch).__name__}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x)
        out = self.body(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if out.shape != skip.shape:  # + would broadcast a wrong shape silently
            branch = "the input x" if self.shortcut is None else "shortcut(x)"
            raise ValueError(f"Residual: body(x) has shape {out.shape} but {branch} has shape {skip.shape}; "
                             "they must match (give a shortcut that maps x to the body's output shape)")
        return out + skip

# %%
from tinytorch.core.activations import ReLU

block = Residual(Sequential(Conv2d(4, 4, 3, padding=1, rng=0), ReLU()))
x = Tensor(np.random.default_rng(1).standard_normal((2, 4, 5, 5)))
assert np.allclose(block(x).data, block.body(x).data + x.data)
down = Residual(Sequential(Conv2d(4, 8, 3, stride=2, padding=1, rng=0)), shortcut=Conv2d(4, 8, 1, stride=2, rng=1))
assert down(x).shape == (2, 8, 3, 3)
assert [name for name, _ in down.named_parameters()] == ["body.0.weight", "body.0.bias", "shortcut.weight", "shortcut.bias"]
try:
    Residual(Sequential(Conv2d(4, 8, 3, padding=1)))(x)
    raise AssertionError("mismatched branches must raise")
except ValueError as err:
    print("  error message:", err)
print("✓ Residual adds its branches and names the mismatch when they differ")

# %% [markdown]
# ## 3. Folding BatchNorm into the layer before it
#
# At inference a BatchNorm after a convolution is an affine map per channel with constants:
# `y = s * (conv(x) - running_mean) + beta` with `s = gamma / sqrt(running_var + eps)`. A
# convolution's output channel `o` is linear in its filter `W[o]` and bias `b[o]`, so the
# BatchNorm can be absorbed into them:
#
# $$W'[o] = s_o\,W[o], \qquad b'[o] = s_o\,(b[o] - \mu_o) + \beta_o$$
#
# The folded model computes the same outputs as the original in eval mode (up to float rounding)
# with one layer fewer: no extra memory traffic, and nothing for a deployment format to support.
# The same holds for `Linear` followed by `BatchNorm1d`. Folding only works when the BatchNorm
# directly follows the layer; after a ReLU it does not (the ReLU is not linear).
#
# `fold_batchnorm(layer, bn)` returns the new layer; `fold_batchnorms(model)` returns a copy of
# a model in which every `Conv2d`/`Linear` directly followed by a BatchNorm in a `Sequential`
# (nested ones and residual branches included) is folded and the BatchNorm removed. The original
# model is unchanged. A pruning mask on the weight is kept: folding scales a filter, so a
# pruned (zero) weight stays zero.

# %%
#| export
def fold_batchnorm(layer, bn):
    "A new Conv2d/Linear computing `bn(layer(x))` with `bn`'s running statistics (eval mode)."
    if isinstance(layer, Conv2d) and not isinstance(bn, BatchNorm2d):
        raise TypeError(f"a Conv2d folds with a BatchNorm2d, got {type(bn).__name__}")
    if isinstance(layer, Linear) and not isinstance(bn, BatchNorm1d):
        raise TypeError(f"a Linear folds with a BatchNorm1d, got {type(bn).__name__}")
    if not isinstance(layer, (Conv2d, Linear)):
        raise TypeError(f"fold_batchnorm folds into a Conv2d or Linear, got {type(layer).__name__}")
    channels = layer.weight.shape[0]
    if bn.num_features != channels:
        raise ValueError(f"the BatchNorm has {bn.num_features} channels but the {type(layer).__name__} "
                         f"before it has {channels} outputs")
    # float64 for the arithmetic, then back to the layer's dtype: one rounding, not several
    scale = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    weight = layer.weight.data.astype(np.float64)
    bias = np.zeros(channels) if layer.bias is None else layer.bias.data.astype(np.float64)
    dtype = layer.weight.data.dtype
    folded = copy.deepcopy(layer)  # keeps stride, padding, groups and anything else the layer holds
    folded.weight = Tensor(weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1)), requires_grad=True, dtype=dtype)
    if layer.weight.mask is not None:
        folded.weight.mask = layer.weight.mask.copy()
    new_bias = (bias - bn.running_mean) * scale + bn.bias.data.astype(np.float64)
    folded.bias = Tensor(new_bias, requires_grad=True, dtype=dtype)
    return folded


def fold_batchnorms(model: Module) -> Module:
    "A copy of `model` with every Conv2d/Linear -> BatchNorm pair inside a Sequential folded into one layer."
    return _fold_inside(copy.deepcopy(model))


def _fold_inside(module):
    "Fold the pairs in `module` (a copy we may change) and in everything below it; returns the result."
    if not isinstance(module, Module):
        return module  # an activation: nothing inside
    for name, child in module.named_children():
        new = _fold_inside(child)
        if new is not child:  # in place, keeping the children's order (setattr would move it last)
            module._modules[name] = new
            object.__setattr__(module, name, new)
    if not isinstance(module, Sequential):
        return module
    names, layers = [], []
    for name, layer in module.named_children():
        if isinstance(layer, _BatchNorm) and layers and isinstance(layers[-1], (Conv2d, Linear)):
            layers[-1] = fold_batchnorm(layers[-1], layer)  # the pair becomes one layer: drop the BatchNorm
            continue
        names.append(name)
        layers.append(layer)
    if len(layers) == len(module):
        return module
    # Default names "0", "1", ... are renumbered as PyTorch's Sequential would number the new list.
    positional = [name for name, _ in module.named_children()] == [str(i) for i in range(len(module))]
    folded = Sequential(*layers) if positional else Sequential(dict(zip(names, layers)))
    folded.training = module.training
    return folded

# %% [markdown]
# A check: a small network with BatchNorms after a convolution, a depthwise convolution, inside
# a residual branch and after a `Linear`. Train-mode passes give the BatchNorms running statistics
# (and random `gamma`, `beta` stand in for learned ones); then the folded model must match the
# original in eval mode, with no BatchNorm left.

# %%
from tinytorch.core.layers import Flatten

rng = np.random.default_rng(0)
net = Sequential(
    Conv2d(1, 8, 3, padding=1, bias=False, rng=rng), BatchNorm2d(8), ReLU(),
    Residual(Sequential(Conv2d(8, 8, 3, padding=1, groups=8, rng=rng), BatchNorm2d(8), ReLU(),
                        Conv2d(8, 8, 1, rng=rng), BatchNorm2d(8))),
    Flatten(), Linear(8 * 8 * 8, 10, rng=rng), BatchNorm1d(10),
)
for module in net.modules():
    if isinstance(module, _BatchNorm):
        module.weight.data[:] = rng.uniform(0.5, 1.5, module.num_features)
        module.bias.data[:] = rng.uniform(-0.5, 0.5, module.num_features)
images = Tensor(rng.standard_normal((16, 1, 8, 8)))
for _ in range(3):
    net(images)
net.eval()
folded = fold_batchnorms(net)
assert not any(isinstance(m, _BatchNorm) for m in folded.modules())
assert any(isinstance(m, _BatchNorm) for m in net.modules())  # the original is untouched
error = np.abs(folded(images).data - net(images).data).max()
assert error < 1e-4, error
print(f"✓ fold_batchnorms removes {sum(isinstance(m, _BatchNorm) for m in net.modules())} BatchNorms; "
      f"outputs match eval mode to {error:.1e}")

# %% [markdown]
# ## 4. Coupled channels: what structured pruning must respect
#
# Removing output channel `c` of a convolution (its filter `weight[c]`) is only half the job.
# Every layer that reads or shares channel `c` must lose it too, or the shapes no longer fit:
#
# | after the conv comes | what else loses channel `c` |
# | --- | --- |
# | a `BatchNorm2d` | its `weight[c]`, `bias[c]`, `running_mean[c]`, `running_var[c]` |
# | a depthwise conv (`groups == C`) | its filter `c` and its output channel `c`, then whatever reads that |
# | a `Residual` add | channel `c` of the other branch, and of every layer feeding or reading the sum |
# | a `Conv2d` or `Linear` (after `Flatten`) | its input column(s) for channel `c` |
#
# Those sets are the *channel groups* that `channels_dev.py` traces. The cell below removes one
# filter and forgets the BatchNorm: the network breaks at once.

# %%
rng = np.random.default_rng(0)
conv, bn = Conv2d(3, 4, 3, padding=1, rng=rng), BatchNorm2d(4)
smaller = Conv2d(3, 3, 3, padding=1)
smaller.weight.data[:], smaller.bias.data[:] = np.delete(conv.weight.data, 2, axis=0), np.delete(conv.bias.data, 2)
try:
    bn(smaller(Tensor(rng.standard_normal((2, 3, 5, 5)))))
    raise AssertionError("a BatchNorm that kept the removed channel must fail")
except ValueError as err:
    print("  error message:", err)
print("✓ a channel removed from a conv must be removed from its BatchNorm too")
