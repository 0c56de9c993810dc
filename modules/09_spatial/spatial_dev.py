# %% [markdown]
# # Module 09: Spatial
#
# > `Conv2d` and `MaxPool2d` through im2col, and the reference digits models the compression modules start from.

# %%
#| default_exp core.spatial

# %%
#| export
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tinytorch.core.tensor import Tensor
from tinytorch.core.autograd import Function
from tinytorch.core.layers import Module, _rng
from tinytorch.core.checks import is_int

# %% [markdown]
# A fully connected layer treats an image as a bag of 64 unrelated numbers. A convolution
# slides one small filter (say 3x3) over the image, so the same few weights detect a stroke
# wherever it appears. Fewer weights, and they know about neighbourhoods.
#
# Shapes follow PyTorch: images are `(N, C, H, W)` (batch, channels, height, width) and a
# convolution's weight is `(out_channels, in_channels, kh, kw)`: one 3-D filter per output
# channel. Module 18 prunes whole filters, which is removing one slice `weight[o]`.

# %% [markdown]
# ## 1. im2col: convolution as one matrix multiply
#
# The output at position `(i, j)` is the dot product of a filter with the input window under
# it. Looping over positions in Python would be slow, so we **copy every window into a row of
# a matrix** ("image to columns"):
#
# - `sliding_window_view` gives all `kh x kw` windows as a view (no copy) of shape
#   `(N, C, H-kh+1, W-kw+1, kh, kw)`; keeping every `stride`-th one implements the stride.
# - Reordering to `(N, Ho, Wo, C, kh, kw)` and reshaping gives a matrix with one row per
#   output pixel and one column per weight of a filter: `(N*Ho*Wo, C*kh*kw)`.
#
# Then the whole convolution is `cols @ weight.reshape(out_channels, -1).T`: one BLAS call.
# Padding adds `padding` rows and columns of zeros around the image first, so a 3x3 filter with
# `padding=1` keeps the image size.
#
# $$H_{out} = \left\lfloor \frac{H + 2p - k_h}{s} \right\rfloor + 1$$

# %%
#| export
def _pair(value, name: str, minimum: int = 1) -> tuple[int, int]:
    "An int or a pair of ints as `(height, width)`, each at least `minimum`."
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(
        is_int(v) and v >= minimum for v in pair)
    if not ok:
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_shape(height: int, width: int, kernel_size, stride=1, padding=0) -> tuple[int, int]:
    "Spatial size `(Ho, Wo)` of a convolution or pooling output."
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding", minimum=0)
    if height + 2 * ph < kh or width + 2 * pw < kw:
        raise ValueError(f"kernel_size {(kh, kw)} is larger than the padded input "
                         f"{(height + 2 * ph, width + 2 * pw)}")
    return (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1


def im2col(x: np.ndarray, kernel_size, stride=1, padding=0) -> np.ndarray:
    "Windows of `x` (N, C, H, W) as rows: shape (N*Ho*Wo, C*kh*kw), channel-major like the weight."
    if x.ndim != 4:
        raise ValueError(f"im2col expects (N, C, H, W), got shape {x.shape}")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding", minimum=0)
    N, C, H, W = x.shape
    Ho, Wo = conv_output_shape(H, W, (kh, kw), (sh, sw), (ph, pw))
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    windows = windows[:, :, :Ho, :Wo]  # (N, C, Ho, Wo, kh, kw), still a view
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)

# %%
x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
cols = im2col(x, 2, stride=2)
assert cols.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
assert im2col(x, 3, padding=1).shape == (16, 9)
assert im2col(x, 3, padding=1)[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 4, 5]  # top-left corner, zero-padded
assert conv_output_shape(8, 8, 3, stride=2, padding=1) == (4, 4)
print("✓ im2col lays windows out as rows, honouring stride and padding")

# %% [markdown]
# ## 2. col2im: sending gradients back to pixels
#
# Backward needs the opposite trip. Each row of `cols` was copied from a window of the input,
# so the gradient of a row entry belongs to the pixel it was copied from. Windows overlap
# (a pixel sits in up to `kh*kw` windows), so contributions must be **added**, and fancy
# assignment `dx[idx] += v` would silently keep only one of several writes to a pixel.
#
# The trick: take one kernel offset `(a, b)` at a time. For a fixed offset, the entries of all
# windows come from *different* pixels, a strided slice of the padded image, so one
# vectorised `+=` per offset is exact. That is `kh*kw` (9 for a 3x3 kernel) array operations,
# each covering the whole batch, never a loop over pixels. (`np.add.at` does the same scatter
# in one call, about four times slower.)
#
# `col2im` is the *adjoint* of `im2col`: for any `x` and `c`,
# `sum(im2col(x) * c) == sum(x * col2im(c))`. That identity is the test.

# %%
#| export
def col2im(cols: np.ndarray, x_shape, kernel_size, stride=1, padding=0) -> np.ndarray:
    "Adjoint of `im2col`: add each row entry back onto its pixel; returns shape `x_shape`."
    N, C, H, W = x_shape
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding", minimum=0)
    Ho, Wo = conv_output_shape(H, W, (kh, kw), (sh, sw), (ph, pw))
    if cols.shape != (N * Ho * Wo, C * kh * kw):
        raise ValueError(f"cols must have shape {(N * Ho * Wo, C * kh * kw)} for input {tuple(x_shape)}, "
                         f"got {cols.shape}")
    patches = cols.reshape(N, Ho, Wo, C, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # (N, C, kh, kw, Ho, Wo)
    padded = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for a in range(kh):
        for b in range(kw):
            # Offset (a, b) of window (i, j) is pixel (a + i*sh, b + j*sw): distinct for every window.
            padded[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw] += patches[:, :, a, b]
    return padded[:, :, ph:ph + H, pw:pw + W]

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 5, 6))
c = rng.standard_normal((2 * 3 * 3, 3 * 9))  # 3x3 kernel, stride 2, padding 1 -> 3x3 outputs
lhs = np.sum(im2col(x, 3, stride=2, padding=1) * c)
rhs = np.sum(x * col2im(c, x.shape, 3, stride=2, padding=1))
assert np.isclose(lhs, rhs), (lhs, rhs)
ones = col2im(im2col(np.ones((1, 1, 4, 4)), 3, padding=1), (1, 1, 4, 4), 3, padding=1)
assert ones[0, 0].tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]  # windows per pixel
print("✓ col2im is the adjoint of im2col (overlaps accumulate)")

# %% [markdown]
# ## 3. The convolution as a `Function`
#
# Forward: `out = cols @ Wm.T + b` with `Wm = weight.reshape(O, C*kh*kw)`, one row per output
# pixel, then reshaped back to `(N, O, Ho, Wo)`. Backward is the matrix-multiply rule from
# Module 05, with `g` the output gradient laid out as rows `(N*Ho*Wo, O)`:
#
# - `dWm = g.T @ cols` (each weight saw one input value per output pixel),
# - `db = g.sum(0)`,
# - `dcols = g @ Wm`, and `dx = col2im(dcols)`.
#
# `needs_input_grad` (set by `Function.apply`) says which inputs want a gradient: the first
# layer's input is the images, so its `dx`, the most expensive part, is skipped.

# %%
#| export
class Conv2dFunction(Function):
    "2-D cross-correlation (PyTorch's conv2d) of `x` (N, C, H, W) with `weight` (O, C // groups, kh, kw)."

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0), groups=1):
        N, _, H, W = x.shape
        O, Cg, kh, kw = weight.shape
        Ho, Wo = conv_output_shape(H, W, (kh, kw), stride, padding)
        self.weight, self.x_shape, self.groups = weight, x.shape, groups
        self.stride, self.padding, self.has_bias = stride, padding, bias is not None
        self.depthwise = groups > 1 and Cg == 1
        if self.depthwise:
            return self._depthwise_forward(x, weight, bias, (Ho, Wo))
        cols = im2col(x, (kh, kw), stride, padding)
        if groups == 1:
            out = cols @ weight.reshape(O, Cg * kh * kw).T
        else:  # one matrix multiply per group, batched: (groups, rows, Cg*kh*kw) @ (groups, Cg*kh*kw, O/groups)
            out = _group_cols(cols, groups) @ _group_weight(weight, groups).transpose(0, 2, 1)
            out = out.transpose(1, 0, 2).reshape(-1, O)  # output channel = group * O/groups + index in group
        if bias is not None:
            out += bias
        self.cols = cols
        return np.ascontiguousarray(out.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2))

    def backward(self, grad_output):
        O, Cg, kh, kw = self.weight.shape
        groups = self.groups
        needs = self.needs_input_grad  # set by apply: which inputs want a gradient
        if self.depthwise:
            return self._depthwise_backward(grad_output)
        g = grad_output.transpose(0, 2, 3, 1).reshape(-1, O)  # rows match the rows of cols
        if groups > 1:  # (groups, rows, O/groups): group k's output gradients
            g_grouped = g.reshape(-1, groups, O // groups).transpose(1, 0, 2)
        grad_x = grad_weight = grad_bias = None
        if needs[0]:  # skipped for the first layer: nobody needs the gradient of the images
            if groups == 1:
                grad_cols = g @ self.weight.reshape(O, Cg * kh * kw)
            else:
                grad_cols = g_grouped @ _group_weight(self.weight, groups)  # (groups, rows, Cg*kh*kw)
                grad_cols = grad_cols.transpose(1, 0, 2).reshape(len(g), -1)
            grad_x = col2im(grad_cols, self.x_shape, (kh, kw), self.stride, self.padding)
        if needs[1]:
            if groups == 1:
                grad_weight = g.T @ self.cols
            else:
                grad_weight = g_grouped.transpose(0, 2, 1) @ _group_cols(self.cols, groups)
            grad_weight = grad_weight.reshape(self.weight.shape)
        if self.has_bias:
            if needs[2]:
                grad_bias = g.sum(axis=0)
            return grad_x, grad_weight, grad_bias
        return grad_x, grad_weight

    # Depthwise: output channel o reads input channel o // multiplier alone. im2col would copy
    # every pixel kh*kw times to multiply it by one weight; instead add kh*kw shifted slices of
    # the padded image, each scaled by one weight per channel, the way col2im adds its offsets.
    def _depthwise_forward(self, x, weight, bias, out_size):
        O, _, kh, kw = weight.shape
        (sh, sw), (ph, pw), (Ho, Wo) = self.stride, self.padding, out_size
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        multiplier = O // x.shape[1]
        if multiplier > 1:  # output channels c*m .. c*m+m-1 all read input channel c
            x = np.repeat(x, multiplier, axis=1)
        out = np.zeros((x.shape[0], O, Ho, Wo), dtype=np.result_type(x, weight))
        for a in range(kh):
            for b in range(kw):
                out += x[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw] * weight[:, 0, a, b, None, None]
        if bias is not None:
            out += bias[:, None, None]
        self.padded = x
        return out

    def _depthwise_backward(self, g):
        O, _, kh, kw = self.weight.shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        N, C, H, W = self.x_shape
        Ho, Wo = g.shape[2:]
        needs = self.needs_input_grad
        grad_x = grad_weight = grad_bias = None
        if needs[1]:
            grad_weight = np.zeros_like(self.weight)
            for a in range(kh):
                for b in range(kw):
                    window = self.padded[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw]
                    grad_weight[:, 0, a, b] = np.einsum("nohw,nohw->o", g, window)
        if needs[0]:
            grad_padded = np.zeros(self.padded.shape, dtype=g.dtype)
            for a in range(kh):
                for b in range(kw):
                    grad_padded[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw] += g * self.weight[:, 0, a, b, None, None]
            grad_x = grad_padded[:, :, ph:ph + H, pw:pw + W]
            if O > C:  # the repeated copies of a channel add up
                grad_x = grad_x.reshape(N, C, O // C, H, W).sum(axis=2)
        if self.has_bias:
            if needs[2]:
                grad_bias = g.sum(axis=(0, 2, 3))
            return grad_x, grad_weight, grad_bias
        return grad_x, grad_weight


def _group_cols(cols: np.ndarray, groups: int) -> np.ndarray:
    "Rows of `cols` split by channel group: (groups, rows, C/groups*kh*kw). Columns are channel-major."
    return cols.reshape(len(cols), groups, -1).transpose(1, 0, 2)


def _group_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    "Filters of `weight` (O, C/groups, kh, kw) by group: (groups, O/groups, C/groups*kh*kw)."
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, groups: int = 1) -> Tensor:
    "Functional convolution: `x` (N, C, H, W), `weight` (O, C // groups, kh, kw), `bias` (O,) or None."
    if x.ndim != 4:
        raise ValueError(f"conv2d expects input of shape (N, C, H, W), got {x.shape}")
    groups = _groups(groups, x.shape[1], weight.shape[0] if weight.ndim == 4 else None)
    if weight.ndim != 4 or weight.shape[1] * groups != x.shape[1]:
        raise ValueError(f"weight must have shape (out_channels, {x.shape[1] // groups}, kh, kw) for an input "
                         f"with {x.shape[1]} channels and groups={groups}, got {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding", minimum=0)
    conv_output_shape(x.shape[2], x.shape[3], weight.shape[2:], stride, padding)  # size check
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return Conv2dFunction.apply(*tensors, stride=stride, padding=padding, groups=groups)


def _groups(groups, in_channels: int, out_channels: int | None) -> int:
    "`groups` as an int that divides both channel counts, or a ValueError saying which one it does not."
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    for count, name in ((in_channels, "in_channels"), (out_channels, "out_channels")):
        if count is not None and count % groups:
            raise ValueError(f"groups={groups} must divide {name}={count}: every group gets "
                             f"{name} // groups channels")
    return int(groups)

# %%
x = Tensor(np.arange(16).reshape(1, 1, 4, 4))
w = Tensor(np.array([[[[1.0, 0.0], [0.0, -1.0]]]]), requires_grad=True)  # x[i, j] - x[i+1, j+1]
b = Tensor([0.5], requires_grad=True)
y = conv2d(x, w, b)
assert y.shape == (1, 1, 3, 3) and np.allclose(y.data, -5 + 0.5)  # every diagonal step is -5
y.backward(np.ones((1, 1, 3, 3), dtype=np.float32))
# dL/dw[a, b] sums the 3x3 sub-image x[a:a+3, b:b+3]; dL/db counts the 9 outputs.
assert np.allclose(w.grad[0, 0], [[45, 54], [81, 90]]), w.grad
assert np.allclose(b.grad, [9.0]), b.grad
print("✓ conv2d forward and weight gradient on a hand-checked example")

# %% [markdown]
# ### Groups: depthwise convolution
#
# With `groups=g` the channels are split into `g` groups and each output channel looks only at
# its own group's inputs: the weight is `(O, C/g, kh, kw)`, `g` times smaller. In the code above
# that is `g` matrix multiplies instead of one, done as one batched `@` over a leading group axis
# (im2col's columns are channel-major, so group `k`'s columns are one contiguous block).
#
# `groups == C == O` is a **depthwise** convolution: one `kh x kw` filter per channel, no mixing
# between channels. MobileNet follows it with a 1x1 convolution that mixes channels: together a
# *depthwise-separable* convolution, about `kh*kw` times fewer weights and multiplies than a
# full 3x3 convolution. For pruning it matters because a depthwise conv's output channel `c` is
# made from input channel `c` alone: remove a channel before it and the same channel must go
# after it.
#
# A depthwise filter has one input channel, so im2col would copy every pixel `kh*kw` times only
# to multiply it by a single weight: the batched `@` above spends its time copying. For
# `C/groups == 1` the code takes a shortcut instead: `kh*kw` shifted slices of the padded image,
# each times one weight per channel, added up (backward adds them back, like `col2im`). On
# 64 images of 32 channels at 14x14 that made forward about 8x and forward + backward about 4x
# faster than the batched `@` (measured once on this course's 2-core machine).

# %%
x = Tensor(np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4))
w = Tensor(np.stack([np.ones((1, 2, 2)), -np.ones((1, 2, 2))]).astype(np.float32))  # (2, 1, 2, 2)
y = conv2d(x, w, groups=2)  # depthwise: channel 0 sums its windows, channel 1 negates its sums
assert y.shape == (1, 2, 3, 3)
assert np.allclose(y.data[0, 0], conv2d(x[:, :1], w[:1]).data[0, 0])
assert np.allclose(y.data[0, 1], -conv2d(x[:, 1:], -w[1:]).data[0, 0])
assert y.data[0, 0, 0, 0] == 0 + 1 + 4 + 5 and y.data[0, 1, 0, 0] == -(16 + 17 + 20 + 21)
print("✓ groups=2 convolves each channel with its own filter")

# %% [markdown]
# ## 4. The `Conv2d` layer
#
# The layer owns `weight` (O, C/groups, kh, kw) and `bias` (O,), initialised like PyTorch: uniform in
# `[-1/sqrt(fan_in), 1/sqrt(fan_in)]` with `fan_in = C/groups*kh*kw`, the number of inputs each
# output pixel sums over. `forward` checks the input before any arithmetic, so a shape mistake names
# the layer and the expected shape.

# %%
#| export
class Conv2d(Module):
    "2-D convolution layer over (N, C, H, W) inputs; weight (out_channels, in_channels // groups, kh, kw)."

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, groups: int = 1, rng=None):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels")):
            if not is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", minimum=0)
        self.groups = _groups(groups, self.in_channels, self.out_channels)
        generator = _rng(rng)   # module 03's: a Generator, an int seed, or None for the library one
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / np.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = Tensor(generator.uniform(-bound, bound, size=shape), requires_grad=True)
        if bias:
            self.bias = Tensor(generator.uniform(-bound, bound, size=self.out_channels), requires_grad=True)
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expected input of shape (N, {self.in_channels}, H, W), got {x.shape}")
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)

    def extra_repr(self) -> str:
        groups = "" if self.groups == 1 else f", groups={self.groups}"  # shown only when set, like PyTorch
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}{groups}")

# %%
conv = Conv2d(1, 4, 3, padding=1, rng=np.random.default_rng(0))
assert conv.weight.shape == (4, 1, 3, 3) and conv.bias.shape == (4,)
assert np.abs(conv.weight.data).max() <= 1 / 3  # fan_in = 1*3*3
assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]
assert conv(Tensor(np.ones((2, 1, 8, 8)))).shape == (2, 4, 8, 8)
assert Conv2d(3, 2, (3, 2), stride=2, bias=False)(Tensor(np.ones((1, 3, 7, 7)))).shape == (1, 2, 3, 3)
depthwise = Conv2d(8, 8, 3, padding=1, groups=8)
assert depthwise.weight.shape == (8, 1, 3, 3) and depthwise(Tensor(np.ones((2, 8, 5, 5)))).shape == (2, 8, 5, 5)
try:
    conv(Tensor(np.ones((2, 3, 8, 8))))
    raise AssertionError("a wrong channel count must raise")
except ValueError as err:
    print("  error message:", err)
try:
    Conv2d(6, 4, 3, groups=4)
    raise AssertionError("groups that do not divide in_channels must raise")
except ValueError as err:
    print("  error message:", err)
print("✓ Conv2d: PyTorch shapes and init, groups, clear errors on a wrong input")

# %% [markdown]
# ## 5. Max pooling
#
# `MaxPool2d(2)` keeps the largest value of each 2x2 window, halving height and width: the
# next layer sees a coarser map, and a stroke that moves by one pixel often gives the same
# output. Stride defaults to the kernel size (windows tile the image).
#
# Only the winner of each window affected the output, so backward sends each output gradient
# to the position of its window's maximum (`argmax`) and zero to the others. With
# `stride < kernel_size` windows overlap and one pixel can win twice, so the scatter uses
# `np.add.at`, which accumulates repeated indices.

# %%
#| export
class MaxPool2dFunction(Function):
    "Max over `kernel_size` windows of `x` (N, C, H, W); gradient goes to each window's maximum."

    def forward(self, x, kernel_size=(2, 2), stride=(2, 2)):
        N, C, H, W = x.shape
        kh, kw = kernel_size
        sh, sw = stride
        Ho, Wo = conv_output_shape(H, W, kernel_size, stride)
        windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :Ho, :Wo]
        # Window entries first: argmax over a short leading axis is much faster than over a
        # short trailing one, because NumPy then compares whole arrays at a time.
        flat = windows.transpose(4, 5, 0, 1, 2, 3).reshape(kh * kw, N, C, Ho, Wo)
        winner = flat.argmax(axis=0)  # first maximum on ties, like PyTorch
        # Row and column of each winner in x, shape (N, C, Ho, Wo).
        self.rows = np.arange(Ho)[:, None] * sh + winner // kw
        self.cols = np.arange(Wo)[None, :] * sw + winner % kw
        self.x_shape, self.overlap = x.shape, sh < kh or sw < kw
        return flat.max(axis=0)

    def backward(self, grad_output):
        N, C, _, _ = self.x_shape
        grad_x = np.zeros(self.x_shape, dtype=grad_output.dtype)
        batch = np.arange(N)[:, None, None, None]
        channel = np.arange(C)[None, :, None, None]
        if self.overlap:  # one pixel can win several windows: accumulate every write
            np.add.at(grad_x, (batch, channel, self.rows, self.cols), grad_output)
        else:  # windows tile the image, so winners are distinct pixels
            grad_x[batch, channel, self.rows, self.cols] = grad_output
        return (grad_x,)


class MaxPool2d(Module):
    "Max pooling over (N, C, H, W) inputs; `stride` defaults to `kernel_size`."

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d expected input of shape (N, C, H, W), got {x.shape}")
        conv_output_shape(x.shape[2], x.shape[3], self.kernel_size, self.stride)  # size check
        return MaxPool2dFunction.apply(x, kernel_size=self.kernel_size, stride=self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

# %%
x = Tensor(np.array([[[[1, 2, 5, 0],
                       [3, 4, 1, 1],
                       [0, 0, 2, 2],
                       [9, 0, 2, 7]]]], dtype=np.float32), requires_grad=True)
y = MaxPool2d(2)(x)
assert y.data[0, 0].tolist() == [[4, 5], [9, 7]]
y.backward(np.array([[[[10, 20], [30, 40]]]], dtype=np.float32))
assert x.grad[0, 0].tolist() == [[0, 0, 20, 0], [0, 10, 0, 0], [0, 0, 0, 0], [30, 0, 0, 40]]
assert MaxPool2d(3, stride=1)(Tensor(np.ones((2, 3, 5, 5)))).shape == (2, 3, 3, 3)
print("✓ MaxPool2d keeps window maxima and routes gradients to them")

# %% [markdown]
# ## 6. Reference models for the digits
#
# The compression modules need a trained model to compress. The code below (exported to
# `tinytorch.core.models`) builds and trains the two reference networks, so every student
# starts Module 18 from the same weights:
#
# - `digits_mlp`: 64 → 256 → 128 → 10 with ReLU, 50,826 weights; target ≥ 96% test accuracy.
# - `digits_cnn`: two 3x3 convolutions, each followed by a 2x2 max-pool, then a linear layer:
#   6,090 weights, most of them (4,608) in the second convolution; target ≥ 97%.
# - `digits_mobilenet`: MobileNet's depthwise-separable blocks (a depthwise 3x3 convolution, then
#   a 1x1 one that mixes channels, each followed by BatchNorm and ReLU), 6,026 parameters.
# - `digits_resnet`: ResNet's residual blocks (two 3x3 convolutions with BatchNorm added to the
#   block's input; a 1x1 convolution on the shortcut where the block halves the image), 20,666
#   parameters.
#
# The last two are where channel pruning gets hard (module 18's `structured_dev.py`): a channel
# lives in a convolution, its BatchNorm, a depthwise convolution and both sides of an addition.
#
# Both take `seed`: the same seed gives the same initial weights.
#
# `models.py` imports the layers from the package, so run `tito export 09` after changing them.

# %%
#| export core.models
import numpy as np

from tinytorch.core.activations import ReLU
from tinytorch.core.blocks import BatchNorm2d, Residual
from tinytorch.core.checks import is_int
from tinytorch.core.layers import Flatten, Linear, Module, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import Adam, CosineLR
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.core.training import fit
from tinytorch.data.loader import digits_loaders

# %%
#| export core.models
def digits_mlp(seed: int = 0) -> Sequential:
    "The reference MLP on flat (n, 64) digits: 64 -> 256 -> 128 -> 10."
    rng = np.random.default_rng(seed)
    return Sequential(
        Linear(64, 256, rng=rng), ReLU(),
        Linear(256, 128, rng=rng), ReLU(),
        Linear(128, 10, rng=rng),
    )


def digits_cnn(seed: int = 0) -> Sequential:
    "The reference CNN on (n, 1, 8, 8) digits: two 3x3 convolutions with max-pooling, a linear head."
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, 16, 3, padding=1, rng=rng), ReLU(),   # (n, 16, 8, 8)
        MaxPool2d(2),                                   # (n, 16, 4, 4)
        Conv2d(16, 32, 3, padding=1, rng=rng), ReLU(),  # (n, 32, 4, 4)
        MaxPool2d(2),                                   # (n, 32, 2, 2)
        Flatten(),                                      # (n, 128)
        Linear(32 * 2 * 2, 10, rng=rng),
    )


def _conv_bn(cin: int, cout: int, kernel_size: int, rng, stride: int = 1, groups: int = 1) -> list:
    "A bias-free convolution (BatchNorm's shift replaces the bias) and its BatchNorm."
    conv = Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False,
                  groups=groups, rng=rng)
    return [conv, BatchNorm2d(cout)]


def digits_mobilenet(seed: int = 0) -> Sequential:
    "MobileNet-style on (n, 1, 8, 8): a 3x3 stem, two depthwise-separable blocks with max-pooling, a linear head."
    rng = np.random.default_rng(seed)
    return Sequential(
        *_conv_bn(1, 16, 3, rng), ReLU(),                          # (n, 16, 8, 8)
        *_conv_bn(16, 16, 3, rng, groups=16), ReLU(),              # depthwise 3x3
        *_conv_bn(16, 32, 1, rng), ReLU(),                         # pointwise 1x1: (n, 32, 8, 8)
        MaxPool2d(2),                                              # (n, 32, 4, 4)
        *_conv_bn(32, 32, 3, rng, groups=32), ReLU(),
        *_conv_bn(32, 64, 1, rng), ReLU(),                         # (n, 64, 4, 4)
        MaxPool2d(2),                                              # (n, 64, 2, 2)
        Flatten(),
        Linear(64 * 2 * 2, 10, rng=rng),
    )


def digits_resnet(seed: int = 0) -> Sequential:
    "ResNet-style on (n, 1, 8, 8): a 3x3 stem, a residual block, a downsampling one with a 1x1 shortcut, a linear head."
    rng = np.random.default_rng(seed)
    return Sequential(
        *_conv_bn(1, 16, 3, rng), ReLU(),                                         # (n, 16, 8, 8)
        Residual(Sequential(*_conv_bn(16, 16, 3, rng), ReLU(), *_conv_bn(16, 16, 3, rng))), ReLU(),
        Residual(Sequential(*_conv_bn(16, 32, 3, rng, stride=2), ReLU(), *_conv_bn(32, 32, 3, rng)),
                 shortcut=Sequential(*_conv_bn(16, 32, 1, rng, stride=2))), ReLU(),  # (n, 32, 4, 4)
        MaxPool2d(2),                                                             # (n, 32, 2, 2)
        Flatten(),
        Linear(32 * 2 * 2, 10, rng=rng),
    )

# %%
for build, x, weights in ((digits_mlp, np.zeros((2, 64)), 50_826), (digits_cnn, np.zeros((2, 1, 8, 8)), 6_090),
                          (digits_mobilenet, np.zeros((2, 1, 8, 8)), 6_026), (digits_resnet, np.zeros((2, 1, 8, 8)), 20_666)):
    model = build(seed=0)
    assert model(Tensor(x)).shape == (2, 10)
    assert sum(p.data.size for p in model.parameters()) == weights
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), build(seed=0).parameters()))
print("✓ digits_mlp, digits_cnn, digits_mobilenet, digits_resnet: (n, 10) logits, seeded")

# %% [markdown]
# ## 7. Training them
#
# Adam with a *cosine* learning-rate schedule: large steps at first, then the rate shrinks
# smoothly to zero, so the last epochs polish the weights instead of bouncing between
# solutions (with a constant rate the test accuracy jumps by a percent from epoch to epoch).
# `CosineLR` (module 06, with the optimizers) sets the rate after every epoch.

# %% [markdown]
# `train_digits_model` looks at the first layer with weights: a `Conv2d` gets images
# `(n, 1, 8, 8)`, anything else flat rows `(n, 64)`. Both models use the same recipe: Adam,
# learning rate 0.01 with cosine decay, batches of 64, 10 epochs. Everything is seeded (initial
# weights by the builder's `seed`, batch order by this `seed`), so a run is bit-for-bit
# repeatable. It returns `fit`'s history; the last `"val_acc"` is the test accuracy.

# %%
#| export core.models
DIGITS_EPOCHS = 10
DIGITS_LR = 1e-2
DIGITS_BATCH_SIZE = 64


def _takes_images(model: Module) -> bool:
    "True when the first layer with weights is a Conv2d."
    for module in model.modules():
        if isinstance(module, Conv2d):
            return True
        if isinstance(module, Linear):
            return False
    raise ValueError("model has no Conv2d or Linear layer to tell its input format from")


def train_digits_model(model: Module, epochs: int | None = None, seed: int = 0, progress=False) -> dict:
    "Train `model` on the digits (Adam, cosine decay); returns the history, last 'val_acc' = test accuracy."
    image = _takes_images(model)
    epochs = DIGITS_EPOCHS if epochs is None else epochs
    if not is_int(epochs) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    train_loader, test_loader = digits_loaders(batch_size=DIGITS_BATCH_SIZE, image=image, seed=seed)
    optimizer = Adam(model.parameters(), lr=DIGITS_LR)
    return fit(model, train_loader, CrossEntropyLoss(), optimizer, epochs=int(epochs),
               val_loader=test_loader, progress=progress, callbacks=[CosineLR(optimizer, epochs)])

# %%
import time

models, histories = {}, {}
for name, build, floor in (("MLP", digits_mlp, 0.96), ("CNN", digits_cnn, 0.97)):
    start = time.perf_counter()
    models[name] = build(seed=0)
    histories[name] = train_digits_model(models[name])
    final = histories[name]["val_acc"][-1]
    print(f"{name}: test accuracy {final:.3f} after {len(histories[name]['val_acc'])} epochs "
          f"({time.perf_counter() - start:.1f}s)")
    assert final >= floor, (name, final)
print("✓ digits_mlp reaches >= 96% and digits_cnn >= 97% test accuracy")

# %% [markdown]
# Compression pays off where the weights are, so count them per layer. The CNN is about 8x
# smaller than the MLP and at least as accurate: sharing one filter across all positions is
# itself a kind of compression.

# %%
for name, model in models.items():
    sizes = {n: p.data.size for n, p in model.named_parameters()}
    print(f"{name}: {sum(sizes.values()):,} weights", sizes)

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3))
for name, history in histories.items():
    ax.plot(range(1, len(history["val_acc"]) + 1), history["val_acc"], label=name)
ax.set_xlabel("epoch")
ax.set_ylabel("test accuracy")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. The LeNets of Deep Compression, for 28x28 MNIST
#
# Deep Compression (Han, Mao and Dally, ICLR 2016) reports its MNIST results on two networks; the
# benchmarks reproduce its tables with these (`load_mnist`, Module 08):
#
# - `lenet_300_100`: 784 → 300 → 100 → 10 with ReLU, 266,200 weights (1,070 KB at FP32 with biases).
# - `lenet5`: the Caffe variant the paper uses: conv 20@5x5, 2x2 max-pool, conv 50@5x5, 2x2 max-pool,
#   a 500-unit ReLU layer and the 10-way output: 430,500 weights (1,720 KB), 93% of them in the
#   first fully connected layer. As in Caffe's `lenet.prototxt`, only that layer has a ReLU; the
#   max-pools are the convolutions' only nonlinearity.
#
# `train_mnist_model` trains either with the digits recipe (Adam, cosine decay) on the 4,000
# training images and returns `fit`'s history; the last `"val_acc"` is the 1,000-image test accuracy.

# %%
#| export core.models
from tinytorch.data.loader import mnist_loaders

MNIST_EPOCHS = 10
MNIST_LR = 5e-3
MNIST_BATCH_SIZE = 64


def lenet_300_100(seed: int = 0) -> Sequential:
    "LeNet-300-100 on flat (n, 784) MNIST: 784 -> 300 -> 100 -> 10 with ReLU."
    rng = np.random.default_rng(seed)
    return Sequential(
        Linear(784, 300, rng=rng), ReLU(),
        Linear(300, 100, rng=rng), ReLU(),
        Linear(100, 10, rng=rng),
    )


def lenet5(seed: int = 0) -> Sequential:
    "LeNet-5 as in Caffe (Deep Compression's) on (n, 1, 28, 28) MNIST: conv 20, pool, conv 50, pool, fc 500, fc 10."
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, 20, 5, rng=rng),          # (n, 20, 24, 24)
        MaxPool2d(2),                       # (n, 20, 12, 12)
        Conv2d(20, 50, 5, rng=rng),         # (n, 50, 8, 8)
        MaxPool2d(2),                       # (n, 50, 4, 4)
        Flatten(),                          # (n, 800)
        Linear(50 * 4 * 4, 500, rng=rng), ReLU(),
        Linear(500, 10, rng=rng),
    )


def train_mnist_model(model: Module, epochs: int | None = None, seed: int = 0, lr: float | None = None,
                      progress=False) -> dict:
    "Train `model` on the MNIST sample (Adam, cosine decay); returns the history, last 'val_acc' = test accuracy."
    image = _takes_images(model)
    epochs = MNIST_EPOCHS if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    train_loader, test_loader = mnist_loaders(batch_size=MNIST_BATCH_SIZE, image=image, seed=seed)
    optimizer = Adam(model.parameters(), lr=MNIST_LR if lr is None else lr)
    return fit(model, train_loader, CrossEntropyLoss(), optimizer, epochs=int(epochs),
               val_loader=test_loader, progress=progress, callbacks=[CosineLR(optimizer, epochs)])

# %%
_weights = {name: sum(p.data.size for n, p in make().named_parameters() if n.endswith("weight"))
            for name, make in (("LeNet-300-100", lenet_300_100), ("LeNet-5", lenet5))}
assert _weights == {"LeNet-300-100": 266_200, "LeNet-5": 430_500}, _weights
assert lenet5()(Tensor(np.zeros((2, 1, 28, 28), dtype=np.float32))).shape == (2, 10)
assert lenet_300_100()(Tensor(np.zeros((2, 784), dtype=np.float32))).shape == (2, 10)
print("✓ LeNet-300-100 has 266,200 weights and LeNet-5 430,500, as in Deep Compression")
