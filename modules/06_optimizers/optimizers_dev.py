# %% [markdown]
# # Module 06: Optimizers
#
# > `SGD` (with momentum and weight decay) and `Adam`: turn gradients into weight updates, and keep pruned weights at zero.
#
# After `loss.backward()` every parameter holds `.grad`, the direction in which the loss
# grows fastest. An optimizer moves each parameter a small step the other way. The
# update rules follow PyTorch's `torch.optim.SGD` and `torch.optim.Adam` exactly, so the
# numbers you get here match PyTorch for the same hyperparameters.

# %%
#| default_exp core.optimizers

# %%
#| export
import numpy as np
from tinytorch.core.tensor import Tensor
from tinytorch.core.checks import is_int, is_real

# %% [markdown]
# ## 1. The shared part, and how pruning survives training
# Every optimizer keeps a list of parameters, clears their gradients (`zero_grad`) and
# updates them (`step`). It also honours `Tensor.mask`, which pruning (Module 18) sets:
# `mask` is a boolean array, and weights where it is `False` have been removed.
#
# Zeroing a weight once is not enough. The next `step()` would move it away from zero:
# its gradient is usually not zero, weight decay and momentum keep pushing, and Adam
# divides even a tiny gradient by an even tinier running average. So, for a masked
# parameter, the optimizer
#
# 1. zeroes the masked gradient entries before computing the update, so no momentum or
#    Adam statistics build up there, and
# 2. writes zeros into the masked weights after the update,
#
# so a pruned weight is exactly `0.0` after every step, whatever the hyperparameters.

# %%
#| export
def _check_number(value, name: str, low: float, high: float = None, low_open: bool = False) -> float:
    "A real number in [low, high) (or (low, high) if low_open); high=None means no upper bound."
    ok = is_real(value)
    ok = ok and (low < value if low_open else low <= value) and (high is None or value < high)
    if not ok:
        if high is None:
            wanted = f"> {low}" if low_open else f">= {low}"
        else:
            wanted = f"in {'(' if low_open else '['}{low}, {high})"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return float(value)


class Optimizer:
    "Base class: holds parameters, clears gradients, applies masks around `_update`."

    def __init__(self, params, lr: float):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors, got a single Tensor; wrap it in a list")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"params must be an iterable of Tensors such as model.parameters(), "
                            f"got {type(params).__name__}") from None
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        for i, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(f"optimizer parameters must be Tensors, got {type(param).__name__} at index {i}; "
                                "did you pass model instead of model.parameters()?")
        if len({id(param) for param in params}) != len(params):
            raise ValueError("optimizer got the same parameter more than once; it would be updated twice per step")
        self.params = params
        self.lr = _check_number(lr, "lr", 0.0, low_open=True)
        self.state = [{} for _ in params]     # per-parameter buffers (momentum, Adam moments)

    def zero_grad(self) -> None:
        "Forget the gradients of the last backward pass (they accumulate otherwise)."
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        "Update every parameter that has a gradient."
        for param, state in zip(self.params, self.state):
            if param.grad is None:
                continue
            grad = np.asarray(param.grad, dtype=param.data.dtype)
            if grad.shape != param.shape:
                raise ValueError(f"gradient of shape {grad.shape} does not match parameter of shape {param.shape}")
            mask = None if param.mask is None else np.asarray(param.mask, dtype=bool)
            if mask is not None:
                if mask.shape != param.shape:
                    raise ValueError(f"mask of shape {mask.shape} does not match parameter of shape {param.shape}")
                grad = np.where(mask, grad, 0).astype(param.data.dtype)
            self._update(param, grad, state)
            if mask is not None:
                param.data[~mask] = 0
                for buffer in state.values():
                    if isinstance(buffer, np.ndarray):
                        buffer[~mask] = 0      # no stale momentum if a weight is ever restored

    def _update(self, param: Tensor, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update")

# %% [markdown]
# ## 2. SGD with momentum and weight decay
# Per step, with gradient `g`, learning rate `lr`, weight decay `wd` and momentum `mu`:
#
# ```
# g   = g + wd * w          # weight decay = L2 penalty wd/2 * w^2 added to the loss
# buf = mu * buf + g        # momentum: a running sum that smooths noisy gradients
# w   = w - lr * buf
# ```
#
# With `mu = 0` this is plain gradient descent. The buffer starts at zero, so the first
# step is `w - lr * g` either way (PyTorch's convention).

# %%
#| export
class SGD(Optimizer):
    "Stochastic gradient descent with optional momentum and L2 weight decay (PyTorch's update rule)."

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum = _check_number(momentum, "momentum", 0.0)
        self.weight_decay = _check_number(weight_decay, "weight_decay", 0.0)

    def _update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = np.zeros_like(param.data)
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += grad
            grad = buf
        param.data -= self.lr * grad          # in place: the model holds this very array

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"

# %%
w = Tensor([1.0, -2.0], requires_grad=True)
opt = SGD([w], lr=0.1, momentum=0.9)
for _ in range(2):
    w.grad = np.array([1.0, 1.0], dtype=np.float32)
    opt.step()
# step 1: buf = 1, w = 1 - 0.1 = 0.9;  step 2: buf = 0.9 + 1 = 1.9, w = 0.9 - 0.19 = 0.71
assert np.allclose(w.data, [0.71, -2.29]), w.data
print("✓ SGD with momentum matches the hand-computed updates")

# %% [markdown]
# ## 3. Adam
# Adam keeps two running averages per weight: `m` of the gradient (direction) and `v` of
# the squared gradient (scale), and steps by `m / sqrt(v)`. Every weight therefore moves
# by roughly `lr` per step, whether its gradients are tiny or huge.
#
# ```
# g = g + wd * w
# m = b1 * m + (1 - b1) * g
# v = b2 * v + (1 - b2) * g^2
# w = w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
# ```
#
# `m` and `v` start at zero, so early averages are biased towards zero; dividing by
# `1 - b^t` (the *bias correction*, `t` = step number) undoes that. Without it the
# first steps would be far too small.

# %%
#| export
class Adam(Optimizer):
    "Adam with bias correction and optional L2 weight decay (PyTorch's torch.optim.Adam)."

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_number(betas[0], "betas[0]", 0.0, 1.0), _check_number(betas[1], "betas[1]", 0.0, 1.0))
        self.eps = _check_number(eps, "eps", 0.0)
        self.weight_decay = _check_number(weight_decay, "weight_decay", 0.0)

    def _update(self, param, grad, state):
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param.data)
            state["exp_avg_sq"] = np.zeros_like(param.data)
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        param.data -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(param.data.dtype)

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"

# %%
w = Tensor([0.5], requires_grad=True)
opt = Adam([w], lr=0.1)
w.grad = np.array([4.0], dtype=np.float32)
opt.step()
# After bias correction m_hat = 4 and v_hat = 16 on step 1, so the step is lr * 4 / 4 = lr.
assert np.allclose(w.data, [0.4], atol=1e-6), w.data
print("✓ Adam's first step is lr in the gradient's direction (bias correction works)")

# %% [markdown]
# ## 4. A pruned weight stays pruned
# Mask out the first weight, then train with momentum *and* weight decay. The masked
# weight ends every step at exactly zero; the other keeps learning.

# %%
for make in (lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
             lambda p: Adam(p, lr=0.1, weight_decay=0.1)):
    w = Tensor([0.0, 1.0], requires_grad=True)
    w.mask = np.array([False, True])
    opt = make([w])
    for _ in range(3):
        opt.zero_grad()
        w.grad = np.array([5.0, 5.0], dtype=np.float32)
        opt.step()
        assert w.data[0] == 0.0, w.data
    assert w.data[1] < 1.0
print("✓ masked weights stay exactly 0 under momentum, Adam and weight decay")

# %% [markdown]
# ## 5. Putting it together
# The full training step, with Module 05's autograd: minimise `(w - 3)^2` starting at 0.

# %%
w = Tensor([0.0], requires_grad=True)
opt = SGD([w], lr=0.1)
for _ in range(50):
    opt.zero_grad()
    loss = ((w - 3.0) ** 2).sum()
    loss.backward()
    opt.step()
assert abs(w.data[0] - 3.0) < 1e-3, w.data
print("✓ zero_grad / backward / step drives w to the minimum at 3")

# %% [markdown]
# ## 6. A learning-rate schedule
#
# Large steps at first, then smaller ones, so the last epochs polish the weights instead of
# bouncing between solutions. `CosineLR` is a `fit` callback (module 07): after epoch `e` of `E` it sets
#
# $$\text{lr} = \text{lr}_0 \cdot \tfrac12\left(1 + \cos\left(\pi \tfrac{e+1}{E}\right)\right).$$

# %%
#| export
class CosineLR:
    "`fit` callback: cosine-decays `optimizer.lr` from its current value to 0 over `epochs`."

    def __init__(self, optimizer, epochs: int):
        if not is_int(epochs) or epochs <= 0:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        self.optimizer, self.epochs, self.base_lr = optimizer, int(epochs), optimizer.lr

    def on_epoch_end(self, model, epoch: int, history: dict) -> None:
        done = min(epoch + 1, self.epochs) / self.epochs
        self.optimizer.lr = self.base_lr * 0.5 * (1.0 + np.cos(np.pi * done))

# %%
class FakeOptimizer:
    lr = 0.1

opt = FakeOptimizer()
schedule = CosineLR(opt, epochs=4)
rates = []
for e in range(4):
    schedule.on_epoch_end(None, e, {})
    rates.append(round(opt.lr, 6))
assert rates == [0.085355, 0.05, 0.014645, 0.0], rates
print("✓ CosineLR: 0.1 -> 0.085, 0.05, 0.015, 0")

# %% [markdown]
# ## Summary
# - `zero_grad()`, `loss.backward()`, `step()`: the three lines of every training loop.
# - SGD + momentum smooths the gradient; Adam also rescales it per weight.
# - Masks are honoured in the optimizer itself, so pruned weights remain exactly zero
#   through any amount of fine-tuning.
