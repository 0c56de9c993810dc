# %% [markdown]
# # Module 02: Activations
#
# > ReLU, Sigmoid, Tanh and Softmax: the nonlinearities between layers, built from Tensor operations.
#
# A stack of linear layers is still one linear map: `W2 @ (W1 @ x)` is just `(W2 @ W1) @ x`.
# An elementwise nonlinearity between the layers is what lets a network bend its decision
# boundary. This module writes the four you meet everywhere.
#
# Each activation is built only from `Tensor` operations from Module 01 (`*`, `+`, `/`,
# `exp`, `sum`). That choice pays off in Module 05: once those operations know their
# derivatives, every activation here is differentiable for free, with no extra code.

# %%
#| default_exp core.activations

# %%
#| export
import numpy as np
from tinytorch.core.tensor import Tensor
from tinytorch.core.checks import is_int

# %% [markdown]
# ## 1. A common base
# Activations have no weights, so `parameters()` is empty. A shared base gives them
# `__call__` (so `relu(x)` works like a layer) and a PyTorch-style `repr`. Module 03's
# `Sequential` accepts them next to layers that do have weights.

# %%
#| export
class Activation:
    "Base class for stateless elementwise layers: `act(x)` calls `act.forward(x)`."

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def __call__(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a Tensor, got {type(x).__name__}")
        return self.forward(x)

    def parameters(self) -> list:
        "Activations have no learnable parameters."
        return []

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _sign_mask(x: Tensor) -> np.ndarray:
    "+1 where x >= 0, -1 elsewhere, as a constant array of x's dtype."
    # sign(0) = +1 on purpose: np.sign(0) = 0 would zero the gradient at exactly 0.
    return np.where(x.data >= 0, 1.0, -1.0).astype(x.data.dtype)

# %% [markdown]
# ## 2. ReLU
# `relu(x) = max(0, x)`. Multiplying `x` by a constant 0/1 mask keeps the whole thing a
# Tensor operation, so the gradient is `mask * upstream`: 1 where the unit was active,
# 0 where it was not.

# %%
#| export
class ReLU(Activation):
    "Rectified linear unit: `max(0, x)` elementwise."

    def forward(self, x: Tensor) -> Tensor:
        active = (x.data > 0).astype(x.data.dtype)
        return x * active

# %%
relu = ReLU()
out = relu(Tensor([-2.0, -0.0, 0.5, 3.0]))
assert out.data.tolist() == [0.0, 0.0, 0.5, 3.0], out.data
assert relu.parameters() == [] and repr(relu) == "ReLU()"
print("✓ ReLU zeroes negatives and keeps positives")

# %% [markdown]
# ## 3. Sigmoid, without overflow
# `sigmoid(x) = 1 / (1 + exp(-x))`. For `x = -1000`, `exp(1000)` overflows to `inf`.
# The fix: only ever exponentiate a non-positive number. With `e = exp(-|x|)` (always in
# (0, 1]):
#
# - for `x >= 0`: `sigmoid(x) = 1 / (1 + e)`
# - for `x < 0`:  `sigmoid(x) = e / (1 + e)`
#
# `|x|` is `x * s` with a constant sign array `s`, and choosing between the two numerators
# is again a multiplication by constant masks, so the formula stays a chain of Tensor ops.

# %%
#| export
class Sigmoid(Activation):
    "Logistic sigmoid `1 / (1 + exp(-x))`, computed without overflow for large |x|."

    def forward(self, x: Tensor) -> Tensor:
        sign = _sign_mask(x)
        positive = (sign > 0).astype(x.data.dtype)
        e = (x * -sign).exp()                     # exp(-|x|) never overflows
        numerator = e * (1.0 - positive) + positive
        return numerator / (e + 1.0)

# %%
sigmoid = Sigmoid()
xs = np.array([-1000.0, -2.0, 0.0, 2.0, 1000.0])
with np.errstate(over="raise"):                   # any overflow would raise here
    got = sigmoid(Tensor(xs)).data
expected = np.array([0.0, 1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-2.0)), 1.0])
assert np.allclose(got, expected, atol=1e-7), got
print("✓ Sigmoid matches 1/(1+exp(-x)) and survives x = ±1000")

# %% [markdown]
# ## 4. Tanh
# `tanh(x) = (1 - exp(-2|x|)) / (1 + exp(-2|x|))`, with the sign of `x` put back. Same
# trick as Sigmoid: exponentiate only non-positive numbers. Output is in (-1, 1) and
# centred on 0, which is why it was the default before ReLU.

# %%
#| export
class Tanh(Activation):
    "Hyperbolic tangent, computed without overflow for large |x|."

    def forward(self, x: Tensor) -> Tensor:
        sign = _sign_mask(x)
        e = (x * (-2.0 * sign)).exp()             # exp(-2|x|) in (0, 1]
        return (1.0 - e) / (e + 1.0) * sign

# %%
xs = np.array([-1000.0, -1.0, 0.0, 0.5, 1000.0])
with np.errstate(over="raise"):
    got = Tanh()(Tensor(xs)).data
assert np.allclose(got, np.tanh(xs), atol=1e-6), got
print("✓ Tanh matches np.tanh, including x = ±1000")

# %% [markdown]
# ## 5. Softmax
# Softmax turns a row of scores into probabilities: `exp(x_i) / sum_j exp(x_j)`.
# Adding a constant to every score changes nothing (it cancels between numerator and
# denominator), so we subtract the row maximum first: the largest exponent becomes
# `exp(0) = 1` and nothing can overflow. The maximum is used as a constant (a NumPy
# array), which is exact because the output does not depend on the shift.

# %%
#| export
class Softmax(Activation):
    "Softmax along `dim` (default: last): non-negative outputs that sum to 1 along `dim`."

    def __init__(self, dim: int = -1):
        if not is_int(dim):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        self.dim = int(dim)

    def forward(self, x: Tensor) -> Tensor:
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"Softmax dim={self.dim} is out of range for a {x.ndim}-D input of shape {x.shape}")
        shift = x.data.max(axis=self.dim, keepdims=True)
        e = (x - shift).exp()
        return e / e.sum(axis=self.dim, keepdims=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

# %%
scores = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]])
probs = Softmax()(Tensor(scores)).data
by_hand = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
assert np.allclose(probs[0], by_hand, atol=1e-6), probs
assert np.allclose(probs[1], [0.5, 0.5, 0.0], atol=1e-6), probs
assert np.allclose(Softmax(dim=0)(Tensor(scores)).data.sum(axis=0), 1.0)
assert repr(Softmax()) == "Softmax(dim=-1)"
print("✓ Softmax rows sum to 1, match the formula and survive scores of 1000")

# %% [markdown]
# ## Summary
# - Nonlinearities are what make depth useful.
# - Exponentials are computed only on non-positive inputs (Sigmoid, Tanh) or after
#   subtracting the maximum (Softmax), so large inputs never overflow.
# - Everything is a chain of Tensor operations: Module 05 differentiates it automatically.
