# %% [markdown]
# # Module 04: Losses
#
# > `MSELoss` and `CrossEntropyLoss`: one number that says how wrong the model is, computed stably.
#
# Training means making one number smaller. For regression that number is the mean squared
# error; for classification it is cross-entropy, the negative log-probability the model
# gives the right class. Both are written with Tensor operations, so Module 05 can
# differentiate them like everything else.

# %%
#| default_exp core.losses

# %%
#| export
import numpy as np
from tinytorch.core.tensor import Tensor

# %%
#| export
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


class _Loss:
    "What every loss shares: a checked `reduction`, and calling the loss runs its `forward`."

    def __init__(self, reduction: str = "mean"):
        self.reduction = _check_reduction(reduction)

    def __call__(self, *args) -> Tensor:
        return self.forward(*args)

# %% [markdown]
# ## 1. Mean squared error
# `mean((pred - target)^2)`. Squaring punishes big misses much more than small ones and
# gives the simple gradient `2 * (pred - target) / n`. Prediction and target must have the
# same shape: silently broadcasting `(N, 1)` against `(N,)` would compare every prediction
# with every target, a classic bug, so we refuse it.

# %%
#| export
class MSELoss(_Loss):
    "Mean squared error between a prediction Tensor and a target of the same shape."

    def forward(self, pred: Tensor, target) -> Tensor:
        if not isinstance(pred, Tensor):
            raise TypeError(f"MSELoss expects pred to be a Tensor, got {type(pred).__name__}")
        # The target is data, not something to learn: use it as a constant array.
        target = target.data if isinstance(target, Tensor) else np.asarray(target, dtype=pred.data.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"MSELoss needs pred and target of the same shape, "
                             f"got pred {pred.shape} and target {target.shape}")
        diff = pred - target
        return _reduce(diff * diff, self.reduction)

    def __repr__(self) -> str:
        return f"MSELoss(reduction={self.reduction!r})"

# %%
loss = MSELoss()(Tensor([1.0, 2.0, 4.0]), np.array([1.0, 0.0, 1.0]))
assert abs(loss.item() - (0 + 4 + 9) / 3) < 1e-6, loss.item()
assert abs(MSELoss(reduction="sum")(Tensor([1.0, 2.0]), [0.0, 0.0]).item() - 5.0) < 1e-6
print("✓ MSELoss = mean of squared differences")

# %% [markdown]
# ## 2. Cross-entropy, the stable way
# For logits `z` (one row of C scores per sample) and the correct class `y`:
#
# `loss = -log softmax(z)[y] = logsumexp(z) - z[y]`
#
# `logsumexp(z) = log(sum_j exp(z_j))` overflows for logits around 100 in float32. The
# log-sum-exp trick subtracts the row maximum `m` first:
# `logsumexp(z) = m + log(sum_j exp(z_j - m))`, where every exponent is `<= 0`.
# Computing `log_softmax` directly this way also avoids `log(0) = -inf` when a
# probability underflows.
#
# Picking `log_softmax[i, y_i]` for every row is a multiplication by a one-hot matrix
# followed by a row sum: vectorised, and only ops Module 05 already differentiates.

# %%
#| export
def _check_targets(targets, n: int, num_classes: int) -> np.ndarray:
    "Targets must be an integer array of class indices, shape (N,), values in [0, C)."
    if isinstance(targets, Tensor):
        raise TypeError("CrossEntropyLoss targets must be an integer np.ndarray of class indices, "
                        f"got a Tensor of dtype {targets.dtype}; pass labels as np.ndarray (e.g. y.astype(np.int64))")
    targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"CrossEntropyLoss targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != (n,):
        raise ValueError(f"CrossEntropyLoss targets must have shape ({n},) to match logits, got {targets.shape}")
    if n and (targets.min() < 0 or targets.max() >= num_classes):
        bad = targets[(targets < 0) | (targets >= num_classes)][0]
        raise ValueError(f"CrossEntropyLoss targets must be in [0, {num_classes}), got {bad}")
    return targets


class CrossEntropyLoss(_Loss):
    "Softmax cross-entropy from raw logits (N, C) and integer class targets (N,)."

    def forward(self, logits: Tensor, targets) -> Tensor:
        if not isinstance(logits, Tensor):
            raise TypeError(f"CrossEntropyLoss expects logits to be a Tensor, got {type(logits).__name__}")
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects logits of shape (N, C), got {logits.shape}")
        n, num_classes = logits.shape
        if n == 0:
            raise ValueError("CrossEntropyLoss got an empty batch (N = 0)")
        targets = _check_targets(targets, n, num_classes)
        # Shifting by a constant leaves log_softmax unchanged, so the max needs no gradient.
        shifted = logits - logits.data.max(axis=1, keepdims=True)
        log_probs = shifted - shifted.exp().sum(axis=1, keepdims=True).log()
        one_hot = np.zeros((n, num_classes), dtype=logits.data.dtype)
        one_hot[np.arange(n), targets] = 1.0
        losses = -(log_probs * one_hot).sum(axis=1)
        return _reduce(losses, self.reduction)

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(reduction={self.reduction!r})"

# %%
logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
targets = np.array([0, 2])
log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
expected = -(log_softmax[0, 0] + log_softmax[1, 2]) / 2
got = CrossEntropyLoss()(Tensor(logits), targets).item()
assert abs(got - expected) < 1e-5, (got, expected)
# Logits of 1000 would overflow np.exp; the stable form gives the exact answer log(2).
huge = CrossEntropyLoss()(Tensor([[1000.0, 1000.0]]), np.array([1])).item()
assert abs(huge - np.log(2)) < 1e-5, huge
try:
    CrossEntropyLoss()(Tensor(logits), np.array([0, 3]))
    raise AssertionError("an out-of-range class must raise")
except ValueError as err:
    assert "[0, 3)" in str(err)
print("✓ CrossEntropyLoss matches -mean(log_softmax[y]) and is stable for logits of 1000")

# %% [markdown]
# ## Summary
# - MSE for regression; cross-entropy on raw logits for classification (no softmax layer
#   before it: the loss does the softmax itself, stably).
# - Never exponentiate a large positive number: subtract the maximum first.
# - Bad targets (floats, wrong shape, class out of range) raise immediately, before they
#   turn into a silent NaN.
