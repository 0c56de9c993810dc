# %% [markdown]
# # Module 17: Quantization
#
# > INT8 affine quantization of weights, per tensor and per output channel, and a quantized model whose size is counted from the arrays it stores.

# %% [markdown]
# A trained network stores every weight as a 32-bit float: 4 bytes. Most of those bits are
# wasted. The weights of a layer sit in a narrow range, and the network does not care whether
# a weight is 0.1234567 or 0.123. **Quantization** stores each weight as a small integer
# (8 bits: 1 byte) plus a few floats per tensor that say how to turn the integers back into
# real numbers. That is close to 4x smaller, and on real hardware integer arithmetic is also
# faster and cheaper in energy.
#
# In this module you build:
#
# 1. the affine map between floats and integers (`QuantParams`, `compute_qparams`,
#    `quantize`, `dequantize`),
# 2. ways to measure what it costs (`quantization_error`),
# 3. quantized layers and `quantize_model`, which turns a trained FP32 network into an INT8
#    one whose byte size is counted from the arrays it really stores.
#
# Module 18 (compression) reuses this module to store pruned weights as INT8.

# %%
#| default_exp compression.quantize

# %%
#| export
import copy

import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.layers import Linear, Module
from tinytorch.core.spatial import Conv2d, conv2d
from tinytorch.core.checks import is_int

# %%
import matplotlib.pyplot as plt

# %% [markdown]
# ## 1. The affine map
#
# Pick a step size `scale` (a positive float) and an integer `zero_point`. A real number `x`
# becomes the integer
#
# $$q = \text{clip}\big(\text{round}(x / \text{scale}) + \text{zero\_point},\ q_{min},\ q_{max}\big)$$
#
# and an integer comes back as $\hat x = \text{scale}\cdot(q - \text{zero\_point})$.
# With `bits = 8` and signed integers, $q \in [-128, 127]$: 256 levels.
#
# How to choose the two numbers? Take the smallest and largest values, `lo` and `hi`, and
# spread the 256 levels evenly between them:
#
# - **asymmetric**: `scale = (hi - lo) / 255`, `zero_point = -128 - round(lo / scale)`, so
#   `lo` lands on code -128 and `hi` on code 127;
# - **symmetric**: `scale = max(|lo|, |hi|) / 127`, `zero_point = 0`. Simpler arithmetic and
#   `0.0` is always code `0`, at the price of up to one bit when the values are lopsided.
#
# We always stretch the range to include 0 (`lo <= 0 <= hi`). Then 0.0 is represented
# *exactly*: padding, ReLU outputs and pruned weights stay exactly zero after the round trip.
#
# A worked example, asymmetric, 8 bits, values `[-1.0, 0.0, 2.0]`: `lo = -1`, `hi = 2`,
# `scale = 3/255 = 0.01176`, `zero_point = -128 - round(-85) = -43`. Then `2.0 -> round(170) - 43
# = 127`, `-1.0 -> -85 - 43 = -128`, `0.0 -> -43`.
#
# Inside the range every value moves by at most half a step, **|x - x̂| <= scale / 2**: that is
# the whole error budget, and the tests check it.
#
# First the bookkeeping: the integer range for a number of bits, and a class to hold the
# parameters. A `QuantParams` is either *per tensor* (one scale, `axis=None`) or *per
# channel* (one scale per slice along `axis`).

# %%
#| export
def qrange(bits: int = 8) -> tuple[int, int]:
    "The signed integer range `(qmin, qmax)` of `bits`-bit codes, e.g. (-128, 127) for 8 bits."
    _check_bits(bits)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_bits(bits) -> None:
    # Codes live in int8 containers, so more than 8 bits cannot fit; 1 bit has no positive code.
    if not is_int(bits) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [2, 8], got {bits!r}")


def _finite_array(x, name: str) -> np.ndarray:
    "`x` (array-like or Tensor) as a float64 array, refusing empty or non-finite input."
    if isinstance(x, Tensor):
        x = x.data
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s); quantization has no code for them")
    return arr


# %%
#| export
class QuantParams:
    """Scale(s) and zero point(s) of the affine map `q = round(x / scale) + zero_point`.

    Per tensor: `axis=None`, `scale` and `zero_point` are 0-d arrays.
    Per channel: `axis` is the channel dimension of the tensor being quantized and
    `scale`, `zero_point` are 1-d arrays with one entry per channel.
    Stored as float32 scales and int32 zero points (`nbytes` counts them).
    """

    def __init__(self, scale, zero_point, bits: int = 8, axis: int | None = None):
        _check_bits(bits)
        scale = np.asarray(scale, dtype=np.float32)
        zero_point = np.asarray(zero_point)
        if zero_point.dtype.kind not in "iu" and not np.all(zero_point == np.round(zero_point)):
            raise ValueError(f"zero_point must hold integers, got {zero_point}")
        zero_point = zero_point.astype(np.int32)
        if axis is None:
            if scale.size != 1 or zero_point.size != 1:
                raise ValueError(
                    f"per-tensor params (axis=None) need one scale and one zero_point, "
                    f"got shapes {scale.shape} and {zero_point.shape}")
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        else:
            if not is_int(axis):
                raise ValueError(f"axis must be an int or None, got {axis!r}")
            if scale.ndim != 1 or zero_point.shape != scale.shape:
                raise ValueError(
                    f"per-channel params need 1-d scale and zero_point of equal length, "
                    f"got shapes {scale.shape} and {zero_point.shape}")
            axis = int(axis)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        qmin, qmax = qrange(bits)
        if np.any(zero_point < qmin) or np.any(zero_point > qmax):
            raise ValueError(f"zero_point must lie in [{qmin}, {qmax}] for {bits} bits, got {zero_point}")
        self.scale, self.zero_point, self.bits, self.axis = scale, zero_point, int(bits), axis

    @property
    def qmin(self) -> int:
        return qrange(self.bits)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits)[1]

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def nbytes(self) -> int:
        "Bytes of the stored scale and zero-point arrays."
        return int(self.scale.nbytes + self.zero_point.nbytes)

    def broadcast(self, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
        "`(scale, zero_point)` reshaped to broadcast against an array of `shape`."
        if self.axis is None:
            return self.scale, self.zero_point
        ndim = len(shape)
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"axis {self.axis} is out of range for an array of shape {tuple(shape)}")
        axis = self.axis % ndim
        if shape[axis] != self.scale.size:
            raise ValueError(
                f"per-channel params hold {self.scale.size} channels but the array has "
                f"{shape[axis]} along axis {axis} (shape {tuple(shape)})")
        # One scale per slice: put the channel count on `axis` and 1 everywhere else.
        view = [1] * ndim
        view[axis] = self.scale.size
        return self.scale.reshape(view), self.zero_point.reshape(view)

    def __repr__(self) -> str:
        kind = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis}, n={self.scale.size})"
        if self.axis is None:
            detail = f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}"
        else:
            detail = f"scale∈[{self.scale.min():.4g}, {self.scale.max():.4g}]"
        return f"QuantParams({kind}, bits={self.bits}, {detail})"


# %%
p = QuantParams(0.5, 3)
assert p.scale.shape == () and p.scale.dtype == np.float32 and p.zero_point.dtype == np.int32
assert (p.qmin, p.qmax, p.nbytes, p.per_channel) == (-128, 127, 8, False)
assert qrange(4) == (-8, 7) and qrange(2) == (-2, 1)
pc = QuantParams([0.1, 0.2, 0.3], [0, 0, 0], axis=0)
s, z = pc.broadcast((3, 5))
assert s.shape == (3, 1) and pc.nbytes == 24
for bad in (lambda: QuantParams(0.0, 0), lambda: QuantParams(1.0, 200), lambda: qrange(9)):
    try:
        bad()
    except ValueError:
        pass
    else:
        raise AssertionError("bad QuantParams should raise ValueError")
print("✓ QuantParams stores float32 scales and int32 zero points, and checks them")

# %% [markdown]
# ### Choosing the parameters
#
# `compute_qparams` measures `lo` and `hi` and applies the formulas above. With
# `per_channel=True` it measures them separately for every slice along `axis` (for a weight
# matrix of shape `(out, in)`, `axis=0` gives one scale per output neuron) with one vectorised
# `min`/`max` over the other axes.
#
# Two corner cases need care:
# - **constant zero tensor** (`lo == hi == 0`, e.g. a fully pruned row): the range is empty
#   and `scale = 0` would divide by zero. Any scale reproduces zeros exactly, so we use
#   `scale = 1`, `zero_point = 0`.
# - **NaN / inf**: no integer represents them; we refuse with a clear `ValueError` rather than
#   produce garbage codes.

# %%
#| export
def compute_qparams(x, bits: int = 8, symmetric: bool = False, per_channel: bool = False,
                    axis: int = 0) -> QuantParams:
    """Scale and zero point that map the range of `x` (stretched to include 0) onto `bits`-bit codes.

    `symmetric=True` uses `scale = max|x| / qmax` and `zero_point = 0`; otherwise the full
    `[min, max]` range is spread over all `2**bits` codes. `per_channel=True` computes one
    pair per slice along `axis`.
    """
    x = _finite_array(x, "x")
    qmin, qmax = qrange(bits)
    if per_channel:
        if x.ndim == 0:
            raise ValueError("per_channel=True needs an array with at least one dimension, got a scalar")
        if not is_int(axis) or not -x.ndim <= axis < x.ndim:
            raise ValueError(f"axis must be an int in [{-x.ndim}, {x.ndim - 1}] for shape {x.shape}, got {axis!r}")
        axis = int(axis) % x.ndim
        others = tuple(d for d in range(x.ndim) if d != axis)
        lo, hi = x.min(axis=others), x.max(axis=others)
    else:
        axis = None
        lo, hi = x.min(), x.max()
    # Stretch the range to contain 0 so that 0.0 is exactly representable.
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    empty = hi == lo  # only possible when every value is 0
    if symmetric:
        scale = np.maximum(-lo, hi) / qmax
    else:
        scale = (hi - lo) / (qmax - qmin)
    scale = scale.astype(np.float32)
    if np.any(np.isinf(scale)):
        raise ValueError("x spans a range too wide for float32 scales")
    # The step never drops below the smallest normal float32 (about 1.2e-38). A subnormal scale
    # keeps only a few significant bits, so x / scale lands up to a whole step away and the
    # half-a-step promise breaks; a channel of subnormal values quantizes to zeros instead.
    scale = np.maximum(scale, np.finfo(np.float32).tiny)
    scale = np.where(empty, np.float32(1.0), scale)
    if symmetric:
        zero_point = np.zeros(np.shape(scale), dtype=np.int32)
    else:
        # Use the stored float32 scale so that lo lands on qmin with the scale quantize() will use.
        zero_point = qmin - np.round(lo / scale.astype(np.float64))
        zero_point = np.where(empty, 0, np.clip(zero_point, qmin, qmax)).astype(np.int32)
    return QuantParams(scale, zero_point, bits=bits, axis=axis)


# %%
p = compute_qparams(np.array([-1.0, 0.0, 0.5, 2.0]))
assert np.isclose(p.scale, 3 / 255) and int(p.zero_point) == -43, p
p = compute_qparams(np.array([-1.0, 0.0, 0.5, 2.0]), symmetric=True)
assert np.isclose(p.scale, 2 / 127) and int(p.zero_point) == 0, p
p = compute_qparams(np.array([[1.0, -2.0], [0.5, 0.25]]), symmetric=True, per_channel=True, axis=0)
assert np.allclose(p.scale, [2 / 127, 0.5 / 127]) and p.axis == 0, p
p = compute_qparams(np.zeros((2, 3)), per_channel=True)
assert np.all(p.scale == 1.0) and np.all(p.zero_point == 0)
try:
    compute_qparams(np.array([1.0, np.nan]))
except ValueError as e:
    assert "finite" in str(e)
else:
    raise AssertionError("NaN input must raise")
print("✓ compute_qparams matches the hand-computed example and handles zeros and NaN")

# %% [markdown]
# ### Quantize and dequantize
#
# Now the map itself. Both directions are one vectorised NumPy expression; per-channel params
# broadcast against the array because `QuantParams.broadcast` reshapes the scales to
# `(C, 1, ...)`. `np.round` rounds halves to the even neighbour (`0.5 -> 0`, `1.5 -> 2`),
# which avoids a systematic upward bias. The result is stored as `np.int8` whatever `bits`
# is: 4-bit codes use only 16 of the 256 values (real kernels pack two of them per byte; we
# keep it simple and count the bytes we really store).

# %%
#| export
def quantize(x, params: QuantParams) -> np.ndarray:
    "Integer codes `clip(round(x / scale) + zero_point, qmin, qmax)` as an `np.int8` array."
    x = _finite_array(x, "x")
    scale, zero_point = params.broadcast(x.shape)
    q = np.round(x / scale) + zero_point
    return np.clip(q, params.qmin, params.qmax).astype(np.int8)


def dequantize(q, params: QuantParams) -> np.ndarray:
    "Float32 values `scale * (q - zero_point)` of integer codes `q`."
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"q must be an integer array of codes, got dtype {q.dtype}")
    if q.size and (q.min() < params.qmin or q.max() > params.qmax):
        raise ValueError(f"codes must lie in [{params.qmin}, {params.qmax}] for {params.bits} bits, "
                         f"got values in [{q.min()}, {q.max()}]")
    scale, zero_point = params.broadcast(q.shape)
    # Subtract in float32: int8 arithmetic would overflow (127 - (-128) = 255).
    return ((q.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(np.float32)


# %%
# Hand-computed: scale 0.5, zero point 3. x / 0.5 = [0.5, 1.5, -2, 200, -200]; halves round to
# even (0, 2); + 3; then 203 and -197 clip to the int8 range.
p = QuantParams(0.5, 3)
q = quantize(np.array([0.25, 0.75, -1.0, 100.0, -100.0]), p)
assert q.dtype == np.int8 and q.tolist() == [3, 5, 1, 127, -128], q
assert dequantize(q, p).tolist() == [0.0, 1.0, -1.0, 62.0, -65.5]
# The worked example from the text: codes -128, -43, 127 and an exact round trip.
x = np.array([-1.0, 0.0, 2.0])
p = compute_qparams(x)
assert quantize(x, p).tolist() == [-128, -43, 127]
assert np.allclose(dequantize(quantize(x, p), p), x, atol=1e-6)
# Per channel: each row uses its own scale.
w = np.array([[1.0, -0.25], [0.01, 0.04]])
p = compute_qparams(w, symmetric=True, per_channel=True)
assert quantize(w, p).tolist() == [[127, -32], [32, 127]], quantize(w, p)
print("✓ quantize / dequantize match hand-computed codes (round half to even, clipping)")

# %% [markdown]
# ## 2. Measuring the damage
#
# Two numbers summarise how far `x̂` is from `x`:
#
# - the **max absolute error**, which the rounding bound caps at `scale / 2`;
# - the **signal-to-noise ratio** $\text{SNR} = 10 \log_{10} \frac{\sum x^2}{\sum (x - \hat x)^2}$
#   in decibels. Every extra bit halves the step, so it adds about 6 dB; INT8 on
#   bell-shaped weights gives about 40 dB.

# %%
#| export
def quantization_error(x, x_hat) -> dict:
    "Error of an approximation `x_hat` of `x`: `{'max_abs', 'mse', 'snr_db'}` (SNR is inf for an exact copy)."
    x, x_hat = _finite_array(x, "x"), _finite_array(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {x.shape} and {x_hat.shape}")
    noise = x - x_hat
    signal_power, noise_power = float(np.sum(x * x)), float(np.sum(noise * noise))
    if noise_power == 0.0:
        snr_db = float("inf")
    elif signal_power == 0.0:
        snr_db = float("-inf")
    else:
        snr_db = 10.0 * np.log10(signal_power / noise_power)
    return {"max_abs": float(np.max(np.abs(noise))), "mse": noise_power / x.size, "snr_db": float(snr_db)}


# %%
err = quantization_error(np.array([3.0, 4.0]), np.array([3.0, 3.0]))
assert err["max_abs"] == 1.0 and err["mse"] == 0.5
assert np.isclose(err["snr_db"], 10 * np.log10(25.0))  # signal 9 + 16 = 25, noise 1
assert quantization_error(np.ones(3), np.ones(3))["snr_db"] == float("inf")
print("✓ quantization_error: max |x - x̂| = 1, SNR = 10·log10(25) ≈ 13.98 dB on a hand example")

# %% [markdown]
# ### The error bound, and about 6 dB per bit
#
# Quantize a bell-shaped "weight" vector with 2 to 8 bits and check the bound `scale / 2`.

# %%
rng = np.random.default_rng(0)
w = rng.normal(0.0, 0.05, size=4096).astype(np.float32)
bit_list = list(range(2, 9))
snrs = []
for bits in bit_list:
    p = compute_qparams(w, bits=bits)
    err = quantization_error(w, dequantize(quantize(w, p), p))
    assert err["max_abs"] <= float(p.scale) / 2 * (1 + 1e-5), (bits, err, p)
    snrs.append(err["snr_db"])
    print(f"{bits} bits: scale {float(p.scale):.2e}  max|err| {err['max_abs']:.2e}  SNR {err['snr_db']:5.1f} dB")
assert all(b > a + 4 for a, b in zip(snrs, snrs[1:]))  # each bit helps by roughly 6 dB

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(bit_list, snrs, "o-")
ax.set_xlabel("bits")
ax.set_ylabel("SNR (dB)")
ax.set_title("Quantization noise of N(0, 0.05²) weights")
ax.grid(alpha=0.3)
plt.show()
print("✓ every value moved by at most scale/2, and each bit adds roughly 6 dB")

# %% [markdown]
# ## 3. Per tensor or per channel?
#
# One scale for a whole weight matrix is set by its single largest value. If one output
# neuron has weights 1000x larger than another, the small neuron's weights all fall within
# half a step of zero and are wiped out. Giving every output channel (row of a `Linear`
# weight, filter of a `Conv2d` weight) its own scale costs 8 more bytes per channel (a float32
# scale and an int32 zero point) and fixes it.

# %%
rng = np.random.default_rng(1)
row_scales = np.array([1.0, 0.1, 0.01, 0.001])
w = (rng.normal(size=(4, 64)) * row_scales[:, None]).astype(np.float32)
p_tensor = compute_qparams(w, symmetric=True)
p_channel = compute_qparams(w, symmetric=True, per_channel=True, axis=0)
w_tensor = dequantize(quantize(w, p_tensor), p_tensor)
w_channel = dequantize(quantize(w, p_channel), p_channel)
print("row  weight scale  SNR per-tensor  SNR per-channel")
for i, s in enumerate(row_scales):
    snr_t = quantization_error(w[i], w_tensor[i])["snr_db"]
    snr_c = quantization_error(w[i], w_channel[i])["snr_db"]
    print(f"{i:>3}  {s:>12}  {snr_t:>11.1f} dB  {snr_c:>12.1f} dB")
assert quantization_error(w, w_channel)["mse"] < quantization_error(w, w_tensor)["mse"]
assert quantization_error(w[3], w_tensor[3])["snr_db"] < 1.0  # the smallest row is erased
print("✓ per-channel scales keep every row at ~40 dB; one shared scale erases the small rows")

# %% [markdown]
# ## 4. A quantized array
#
# Codes are useless without their parameters, so we keep them together. A `QuantizedArray`
# holds the `int8` codes and the `QuantParams`; its `nbytes` is the sum of the arrays it
# stores. This is the unit module 18 uses to store (pruned) weights.

# %%
#| export
class QuantizedArray:
    "Integer codes plus the `QuantParams` that turn them back into floats."

    def __init__(self, q: np.ndarray, params: QuantParams):
        q = np.asarray(q)
        if q.dtype != np.int8:
            raise ValueError(f"codes must be an np.int8 array, got dtype {q.dtype}")
        params.broadcast(q.shape)  # raises if per-channel params do not fit the shape
        if q.size and (q.min() < params.qmin or q.max() > params.qmax):
            raise ValueError(f"codes must lie in [{params.qmin}, {params.qmax}] for {params.bits} bits")
        self.q, self.params = q, params

    @property
    def shape(self) -> tuple:
        return self.q.shape

    @property
    def nbytes(self) -> int:
        "Bytes actually stored: the int8 codes plus the scale and zero-point arrays."
        return int(self.q.nbytes) + self.params.nbytes

    def dequantize(self) -> np.ndarray:
        "The float32 approximation of the original array."
        return dequantize(self.q, self.params)

    def __repr__(self) -> str:
        return f"QuantizedArray(shape={self.shape}, nbytes={self.nbytes}, {self.params})"


def quantize_array(x, bits: int = 8, symmetric: bool = False, per_channel: bool = False,
                   axis: int = 0) -> QuantizedArray:
    "Quantize `x` with parameters computed from its own range (see `compute_qparams`)."
    params = compute_qparams(x, bits=bits, symmetric=symmetric, per_channel=per_channel, axis=axis)
    return QuantizedArray(quantize(x, params), params)


# %%
w = np.random.default_rng(2).normal(size=(256, 64)).astype(np.float32)
qa = quantize_array(w, symmetric=True, per_channel=True)
assert qa.q.dtype == np.int8 and qa.shape == (256, 64)
assert qa.nbytes == 256 * 64 * 1 + 256 * 4 + 256 * 4  # codes + float32 scales + int32 zero points
assert quantize_array(w).nbytes == 256 * 64 + 4 + 4
assert quantization_error(w, qa.dequantize())["snr_db"] > 35
print(f"✓ QuantizedArray: {w.nbytes} bytes FP32 -> {qa.nbytes} bytes INT8 per-channel")

# %% [markdown]
# ## 5. Quantized layers
#
# A `QuantizedLinear` keeps what a deployed INT8 layer keeps:
#
# - the weight as a `QuantizedArray` (int8 codes, per-channel scales along axis 0 = output
#   neurons by default, symmetric so that 0.0 stays code 0);
# - the bias in float32. Biases are few (one per output) and are added after the
#   multiply-accumulate, so quantizing them saves almost nothing.
#
# **How it runs.** Our layer *dequantizes on the fly*: each forward call rebuilds the float32
# weight from the codes and runs the ordinary float matmul. This is weight-only quantization:
# the model is 4x smaller on disk and in memory between calls, and the accuracy is exactly
# what INT8 storage gives, but it is not faster. Real INT8 kernels also quantize the
# activations and multiply integers, accumulating in int32, then apply `scale_x * scale_w`
# once per output; that part needs hardware support and is beyond this module.
#
# The quantized layers hold NumPy arrays, not trainable `Tensor`s: `parameters()` is empty,
# because a quantized model is for inference. To fine-tune, dequantize it back to a float
# model (`dequantize_model`, below).
#
# Both quantized layers, `QuantizedLinear` and `QuantizedConv2d`, derive from one base,
# `QuantizedLayer`, which holds what they share: checking and storing the weight and bias,
# `from_float`, `nbytes` and `to_float`. Each layer adds only its `forward`.

# %%
#| export
def _float_param(tensor) -> np.ndarray | None:
    "A float32 copy of a parameter's values (None stays None)."
    return None if tensor is None else np.array(tensor.data, dtype=np.float32, copy=True)


def _load_into(param, values: np.ndarray) -> None:
    "Overwrite a fresh layer's parameter in place with stored values."
    param.data[...] = values


class QuantizedLayer(Module):
    """What every quantized layer shares: an int8 `QuantizedArray` weight whose axis 0 is the
    outputs, a float32 bias, `from_float`, `nbytes` and `to_float`. A subclass names its float
    layer's weight shape (`weight_axes`), the float layer's other settings (`_settings`), how
    to build an empty float layer (`_empty_float`) and its `forward`."""

    weight_axes: tuple = ()                        # e.g. ("out", "in") for a Linear

    def __init__(self, weight: QuantizedArray, bias: np.ndarray | None = None):
        super().__init__()
        if not isinstance(weight, QuantizedArray) or len(weight.shape) != len(self.weight_axes):
            raise ValueError(f"weight must be a {len(self.weight_axes)}-d QuantizedArray "
                             f"({', '.join(self.weight_axes)}), got {weight!r}")
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float32)
            if bias.shape != (weight.shape[0],):
                raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
        self.weight, self.bias = weight, bias

    @classmethod
    def from_float(cls, layer, bits: int = 8, symmetric: bool = True, per_channel: bool = True):
        "Quantize a trained float layer (one scale per output when `per_channel`)."
        weight = quantize_array(layer.weight.data, bits=bits, symmetric=symmetric,
                                per_channel=per_channel, axis=0)
        return cls(weight, _float_param(layer.bias), **cls._settings(layer))

    @staticmethod
    def _settings(layer) -> dict:
        "The float layer's settings besides its weight and bias (a conv's stride and padding)."
        return {}

    @property
    def nbytes(self) -> int:
        "Stored bytes: int8 codes, scales, zero points and the float32 bias."
        return self.weight.nbytes + (0 if self.bias is None else int(self.bias.nbytes))

    def to_float(self) -> Module:
        "The float layer holding the dequantized weights (trainable again)."
        layer = self._empty_float()
        _load_into(layer.weight, self.weight.dequantize())
        if self.bias is not None:
            _load_into(layer.bias, self.bias)
        return layer

    def _empty_float(self) -> Module:
        raise NotImplementedError


class QuantizedLinear(QuantizedLayer):
    "Inference-only `Linear` with int8 weights (+ scales) and a float32 bias; dequantizes on the fly."

    weight_axes = ("out", "in")

    def __init__(self, weight: QuantizedArray, bias: np.ndarray | None = None):
        super().__init__(weight, bias)
        self.out_features, self.in_features = weight.shape

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear expected input with last dimension {self.in_features} "
                             f"(in_features), got input of shape {x.shape}")
        out = x @ Tensor(self.weight.dequantize()).T
        if self.bias is not None:
            out = out + Tensor(self.bias)
        return out

    def _empty_float(self) -> Linear:
        # A private generator: building the layer must not consume the library-wide random stream.
        return Linear(self.in_features, self.out_features, bias=self.bias is not None, rng=np.random.default_rng(0))

    def extra_repr(self) -> str:
        p = self.weight.params
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={p.bits}, per_channel={p.per_channel}, bias={self.bias is not None}")


# %%
rng = np.random.default_rng(3)
lin = Linear(6, 4, rng=rng)
qlin = QuantizedLinear.from_float(lin)
x = Tensor(rng.normal(size=(5, 6)).astype(np.float32))
assert qlin.weight.q.dtype == np.int8 and qlin.parameters() == []
assert qlin.nbytes == 4 * 6 * 1 + 4 * 4 + 4 * 4 + 4 * 4  # codes + scales + zero points + bias
assert np.allclose(qlin(x).data, lin(x).data, atol=0.02)
# The only difference from the float layer is the weight rounding: same output as a Linear
# that holds the dequantized weights.
assert np.allclose(qlin(x).data, qlin.to_float()(x).data, atol=1e-6)
print("✓ QuantizedLinear stores", qlin.nbytes, "bytes and reproduces Linear up to rounding")

# %% [markdown]
# `QuantizedConv2d` is the same base for a `Conv2d` weight `(out, in, kh, kw)`: axis 0 holds
# the output channels (filters), so per-channel means one scale per filter. The forward pass
# calls Module 09's functional `conv2d` with the dequantized weight.

# %%
#| export
class QuantizedConv2d(QuantizedLayer):
    "Inference-only `Conv2d` with int8 weights (+ scales) and a float32 bias; dequantizes on the fly."

    weight_axes = ("out", "in", "kh", "kw")

    def __init__(self, weight: QuantizedArray, bias: np.ndarray | None = None, stride=1, padding=0):
        super().__init__(weight, bias)
        self.out_channels, self.in_channels, kh, kw = weight.shape
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding

    @staticmethod
    def _settings(conv) -> dict:
        return {"stride": conv.stride, "padding": conv.padding}

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QuantizedConv2d expected input of shape (N, {self.in_channels}, H, W), got {x.shape}")
        bias = None if self.bias is None else Tensor(self.bias)
        return conv2d(x, Tensor(self.weight.dequantize()), bias, self.stride, self.padding)

    def _empty_float(self) -> Conv2d:
        return Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                      padding=self.padding, bias=self.bias is not None, rng=np.random.default_rng(0))

    def extra_repr(self) -> str:
        p = self.weight.params
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bits={p.bits}, "
                f"per_channel={p.per_channel}, bias={self.bias is not None}")


# %%
rng = np.random.default_rng(4)
conv = Conv2d(3, 5, 3, padding=1, rng=rng)
qconv = QuantizedConv2d.from_float(conv)
x = Tensor(rng.normal(size=(2, 3, 6, 6)).astype(np.float32))
assert qconv.weight.params.scale.shape == (5,)
assert qconv.nbytes == 5 * 3 * 3 * 3 + 5 * 4 + 5 * 4 + 5 * 4
assert np.allclose(qconv(x).data, conv(x).data, atol=0.02)
assert np.allclose(qconv(x).data, qconv.to_float()(x).data, atol=1e-5)
print("✓ QuantizedConv2d stores", qconv.nbytes, "bytes and reproduces Conv2d up to rounding")

# %% [markdown]
# ## 6. Quantizing a whole model
#
# `quantize_model` walks the model and swaps every `Linear` and `Conv2d` for its quantized
# twin. Layers without weights (ReLU, MaxPool2d, Flatten, Dropout) are copied unchanged; any
# other layer with parameters is refused with a clear error rather than silently left in
# float. The original model is never modified. The result is a `QuantizedModel`: a `Module`
# that runs like the original and reports its size.
#
# Sizes are counted, not estimated. `model_nbytes` adds up the `nbytes` of the arrays a model
# really keeps: float parameters (4 bytes each), and for quantized layers their int8 codes,
# scales, zero points and float biases. For a float model that is `4 * number of parameters`.
#
# The defaults are the usual choice for weights: 8 bits, **symmetric** (weights are centred on
# zero, and 0.0 stays code 0, which Module 18 relies on for pruned weights) and
# **per channel**.

# %%
#| export
def model_nbytes(model) -> int:
    """Bytes of the arrays `model` stores: float parameters plus the codes, scales, zero points
    and biases of any quantized layers (`QuantizedLinear`, `QuantizedConv2d`)."""
    total = sum(int(p.data.nbytes) for p in model.parameters())
    for layer in model.modules():
        if isinstance(layer, QuantizedLayer):
            total += layer.nbytes
    return total


def _convert(module, swap):
    "A converted copy of `module`: `swap(layer)` replaces layers it knows, others are copied."
    replaced = swap(module)
    if replaced is not None:
        return replaced
    if not isinstance(module, Module):  # activations: stateless, copy as they are
        return copy.deepcopy(module)
    if module._parameters:
        names = ", ".join(module._parameters)
        raise TypeError(f"cannot convert {type(module).__name__} (it holds parameters {names}); "
                        f"only Linear and Conv2d layers, and containers of them, are supported")
    # Copy the container but not its children (the memo maps each child to itself), then
    # attach converted children in their original order.
    children = module.named_children()
    shell = copy.deepcopy(module, {id(child): child for _, child in children})
    for name, child in children:
        setattr(shell, name, _convert(child, swap))
    return shell


class QuantizedModel(Module):
    "A model whose Linear/Conv2d layers were replaced by quantized ones; inference only."

    def __init__(self, model: Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)

    @property
    def nbytes(self) -> int:
        "Bytes of the arrays this model stores (see `model_nbytes`)."
        return model_nbytes(self)

    def quantized_layers(self) -> list:
        "(name, layer) pairs of the quantized layers, in order, names as in the float model."
        found = []
        for name, layer in self.model.named_modules():
            if isinstance(layer, QuantizedLayer):
                found.append((name, layer))
        return found


def quantize_model(model: Module, per_channel: bool = True, symmetric: bool = True,
                   bits: int = 8) -> QuantizedModel:
    "An INT8 copy of `model` (in eval mode): every Linear/Conv2d weight becomes a `QuantizedArray`."
    _check_bits(bits)
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if isinstance(model, QuantizedModel):
        raise TypeError("model is already quantized; dequantize_model(model) gives back a float model")

    def swap(layer):
        if isinstance(layer, Linear):
            return QuantizedLinear.from_float(layer, bits=bits, symmetric=symmetric, per_channel=per_channel)
        if isinstance(layer, Conv2d):
            return QuantizedConv2d.from_float(layer, bits=bits, symmetric=symmetric, per_channel=per_channel)
        return None

    return QuantizedModel(_convert(model, swap)).eval()


def dequantize_model(qmodel: QuantizedModel) -> Module:
    "A float copy of a quantized model (eval mode): same structure, dequantized weights, trainable."
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(f"qmodel must be a QuantizedModel (from quantize_model), got {type(qmodel).__name__}")

    def swap(layer):
        if isinstance(layer, QuantizedLayer):
            return layer.to_float()
        return None

    return _convert(qmodel.model, swap).eval()


# %%
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Sequential
from tinytorch.core.spatial import MaxPool2d

rng = np.random.default_rng(5)
net = Sequential(Conv2d(1, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 4 * 4, 3, rng=rng))
before = net.state_dict()
qnet = quantize_model(net)
x = Tensor(rng.normal(size=(2, 1, 8, 8)).astype(np.float32))
assert [name for name, _ in qnet.quantized_layers()] == ["0", "4"]
assert model_nbytes(net) == 4 * (4 * 9 + 4 + 64 * 3 + 3)
assert qnet.nbytes == (4 * 9 + 4 * 12) + (64 * 3 + 3 * 12)  # codes + (scale, zero point, bias) per channel
assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())  # original untouched
back = dequantize_model(qnet)
assert np.allclose(back(x).data, qnet(x).data, atol=1e-5)
assert np.allclose(qnet(x).data, net(x).data, atol=0.05)
print(qnet)
print(f"✓ quantize_model: {model_nbytes(net)} bytes FP32 -> {qnet.nbytes} bytes INT8; dequantize_model gives it back")

# %% [markdown]
# ## 7. The digits models in INT8
#
# Time for the real thing. We train the reference MLP and CNN from Module 09 and compare
# the FP32 model with its INT8 versions (per tensor and per channel) on the 360 test images.
# Bytes are exact counts from `model_nbytes`. Measured (seed 0):
#
# | model | version | bytes | vs FP32 | test accuracy |
# | --- | --- | ---: | ---: | ---: |
# | MLP (50,826 params) | FP32 | 203,304 | 1.00x | 98.61% |
# | | INT8 per-tensor | 52,032 | 3.91x | 98.61% |
# | | INT8 per-channel | 55,160 | 3.69x | 98.61% |
# | CNN (6,090 params) | FP32 | 24,360 | 1.00x | 98.33% |
# | | INT8 per-tensor | 6,288 | 3.87x | 98.33% |
# | | INT8 per-channel | 6,728 | 3.62x | 98.61% |
#
# Why not exactly 4x? Biases stay float32 and every channel adds a 4-byte scale and a 4-byte
# zero point; per channel pays that 394 times in the MLP (256 + 128 + 10 output neurons).
# The accuracy does not move (the CNN per channel even gets one more image right, by luck):
# 8 bits leave about 40 dB of SNR in every layer, far more precision than choosing between
# ten digits needs.

# %%
from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model
from tinytorch.core.training import evaluate
from tinytorch.data.loader import digits_loaders


def compare(name: str, model: Module, image: bool) -> list:
    "Rows (version, bytes, accuracy) for a trained float model and its INT8 copies."
    _, test_loader = digits_loaders(image=image)
    rows = [("FP32", model_nbytes(model), evaluate(model, test_loader))]
    for label, per_channel in (("INT8 per-tensor", False), ("INT8 per-channel", True)):
        qmodel = quantize_model(model, per_channel=per_channel)
        rows.append((label, qmodel.nbytes, evaluate(qmodel, test_loader)))
    fp32_bytes = rows[0][1]
    for label, nbytes, acc in rows:
        print(f"{name}  {label:<17} {nbytes:>8,} bytes  {fp32_bytes / nbytes:4.2f}x  accuracy {acc:.2%}")
    return rows


mlp = digits_mlp(seed=0)
train_digits_model(mlp, seed=0)
mlp_rows = compare("MLP", mlp, image=False)
cnn = digits_cnn(seed=0)
train_digits_model(cnn, seed=0)
cnn_rows = compare("CNN", cnn, image=True)

for rows in (mlp_rows, cnn_rows):
    (_, fp32_bytes, fp32_acc), *int8_rows = rows
    for label, nbytes, acc in int8_rows:
        assert fp32_acc - acc <= 0.005, (label, fp32_acc, acc)   # at most half a point lost
        assert 3.5 <= fp32_bytes / nbytes <= 4.0, (label, fp32_bytes, nbytes)
assert [nbytes for _, nbytes, _ in mlp_rows] == [203304, 52032, 55160]
print("✓ INT8 digits models: ~4x smaller, at most 0.5 points of test accuracy lost")

# %% [markdown]
# ### How few bits are enough?
#
# The same MLP with 2 to 8 bits per weight (per channel, symmetric). The codes still sit in
# int8 containers here, so only the accuracy is interesting: real 4-bit formats pack two
# codes per byte.

# %%
_, test_loader = digits_loaders()
for bits in range(2, 9):
    acc = evaluate(quantize_model(mlp, bits=bits), test_loader)
    print(f"{bits} bits per weight: test accuracy {acc:.2%}")
print("✓ accuracy holds down to 3-4 bits and drops at 2")

# %% [markdown]
# ## Summary
#
# - Affine quantization stores `q = round(x / scale) + zero_point` in 8 bits; every value
#   comes back within `scale / 2`, and 0.0 comes back exactly.
# - One scale per output channel costs 8 bytes per channel and protects channels with small
#   weights; it is the default for weights.
# - `quantize_model` turns a trained model into an INT8 one about 4x smaller with no
#   measurable accuracy loss on the digits. Our layers dequantize on the fly, so they save
#   memory, not time.
# - Module 18 removes weights altogether (pruning) and then stores what is left with
#   `quantize_array` / `quantize_model`: symmetric quantization keeps pruned weights at code 0.
