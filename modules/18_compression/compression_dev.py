# %% [markdown]
# # Module 18: Compression
#
# > Pruning (magnitude, structured, iterative), sparse storage, sparse inference, and pruning combined with INT8 quantization into a measured compressed file.
#
# A trained network is mostly redundant: most weights are tiny, many neurons do almost nothing,
# and every weight takes 32 bits when 8 would do. This module turns that redundancy into a
# smaller file and, sometimes, a faster model, and **measures** both claims.
#
# You write eight functions (28 points). Each one needs at most two of the others, all earlier:
#
# | Section | Exercise (points) | Calls your | Measured on the digits |
# | --- | --- | --- | --- |
# | 3 | `magnitude_mask` (4) | | |
# | 5 | `magnitude_prune` (4) | `magnitude_mask` | accuracy vs sparsity, layer collapse |
# | 6 | `structured_prune` (4) | `magnitude_mask` | a smaller model; layer-wise ratios |
# | 7 | `iterative_prune` (4) | `magnitude_prune` (and so `magnitude_mask`) | one-shot vs iterative, the lottery ticket |
# | 8 | `encode_delta` (3) | | |
# | 9 | `compress_weight` (4) | `encode_delta` | file size and accuracy of the loaded file: 40x? |
# | 10 | `benchmark_inference` (2) | | |
# | 10 | `csr_matmul` (3) | | dense vs masked vs structured vs CSR speed |
#
# Everything else is given: read it, run it, do not change it. Write each function's body
# between the markers; the cell after it tests it, and `tito test 18 --task ID` (e.g.
# `magnitude-mask`) runs its graded tests. Section 11 answers the course page's three questions
# with the numbers your run measured. The whole notebook runs in about a minute.
#
# The notebooks beside this one (`storage_dev.py`, `pipeline_dev.py`, `sparse_dev.py`,
# `structured_dev.py`, `entropy_dev.py`, `nm_sparsity_dev.py`, `qat_dev.py`) are optional
# reading; the lesson uses a few of their functions to measure yours.

# %%
# Timings below must be repeatable on a shared 2-core machine, where multi-threaded BLAS can run
# 10x slower when another process competes for the cores. (This must run before NumPy is imported.)
import os

for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(name, "1")

# %%
#| default_exp compression.prune

# %%
#| export
import math

import numpy as np
from tqdm.auto import tqdm

from tinytorch.core.tensor import Tensor
from tinytorch.core.layers import Linear, Module
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import Adam
from tinytorch.core.spatial import Conv2d
from tinytorch.core.training import evaluate, fit

# %%
import copy
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt

from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Sequential
from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model
from tinytorch.data.loader import digits_loaders

NOTEBOOK_START = time.perf_counter()
_workdir = tempfile.TemporaryDirectory(prefix="tinytorch-compression-")  # gone when Python exits
WORKDIR = Path(_workdir.name)  # files we write and measure

# %% [markdown]
# ## 1. Why pruning works: look at the weights
#
# Train Module 09's reference MLP and look at its weights. If many of them are close to zero,
# setting those to exactly zero should barely change what the network computes.

# %%
start = time.perf_counter()
mlp = digits_mlp(seed=0)
mlp_acc = train_digits_model(mlp, seed=0)["val_acc"][-1]
print(f"trained in {time.perf_counter() - start:.1f}s: MLP test accuracy {mlp_acc:.2%}")
cnn = digits_cnn(seed=0)       # untrained: Section 6 prunes its channels (`tito bench 18` trains it)
_, test_flat = digits_loaders(batch_size=64, seed=0)

# %%
weights = [(name, p.data.ravel()) for name, p in mlp.named_parameters() if name.endswith("weight")]
fig, axes = plt.subplots(1, len(weights), figsize=(12, 3))
for ax, (name, w) in zip(axes, weights):
    ax.hist(w, bins=80)
    ax.set_title(f"{name}: {w.size:,} weights")
plt.show()
for name, w in weights:
    small = np.abs(w) < 0.1 * np.abs(w).max()
    print(f"{name:>9}: {small.mean():.0%} of the weights are below 10% of the layer's largest |w|")

# %% [markdown]
# A third or more of each layer's weights are below 10% of its largest. Pruning bets that the
# small ones matter least; Sections 5 to 7 check that bet, with and without retraining.

# %% [markdown]
# ## 2. Sparsity: what we prune and how we count it (given)
#
# We prune the **weights of `Linear` and `Conv2d` layers**, not the biases: there is one per
# output neuron (394 of the MLP's 50,826 parameters), so they save nothing, and a bias often
# carries real signal. The **sparsity** of a model is the fraction of those weights that are
# exactly zero, every layer counted with its size. `prunable_layers` returns `(name, layer)`
# pairs named as in `named_modules()` (`"0"`, `"2"`, ...), `prunable_weights` returns
# `(name, weight Tensor)` pairs named as in `named_parameters()` (`"0.weight"`).

# %%
#| export
PRUNABLE = (Linear, Conv2d)


def prunable_layers(model) -> list:
    "`(name, layer)` for every Linear and Conv2d in `model`, in `named_modules()` order."
    if not isinstance(model, Module):
        raise TypeError(f"expected a Module (e.g. a Sequential), got {type(model).__name__}")
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ValueError(f"model has nothing to prune: no Linear or Conv2d layer in {type(model).__name__}")
    return layers


def prunable_weights(model) -> list:
    "`(parameter name, weight Tensor)` of every Linear and Conv2d layer (biases are not pruned)."
    return [(f"{name}.weight" if name else "weight", layer.weight) for name, layer in prunable_layers(model)]


def measure_sparsity(model) -> float:
    "Fraction of exact zeros among the prunable weights (Linear and Conv2d weights; biases excluded)."
    weights = [param.data for _, param in prunable_weights(model)]
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
    return zeros / sum(w.size for w in weights)


def layer_sparsity(model) -> dict:
    "`{weight name: fraction of zeros}` for each prunable weight."
    return {name: float(np.mean(w.data == 0)) for name, w in prunable_weights(model)}

# %%
tiny = Sequential(Linear(4, 3, rng=0), ReLU(), Linear(3, 2, rng=0))
tiny[0].weight.data[0, :] = 0.0      # 4 zeros of 12
tiny[2].weight.data[1, 1] = 0.0      # 1 zero of 6
tiny[0].bias.data[:] = 0.0           # biases never count
assert [name for name, _ in prunable_weights(tiny)] == ["0.weight", "2.weight"]
assert measure_sparsity(tiny) == 5 / 18 and layer_sparsity(tiny) == {"0.weight": 4 / 12, "2.weight": 1 / 6}
print("✓ measure_sparsity counts 5 zeros among 18 weights and ignores biases")

# %% [markdown]
# ## 3. Magnitude masks: exactly which weights go
#
# A **mask** is a boolean array shaped like the weight: `True` keeps a weight, `False` prunes
# it. Magnitude pruning at sparsity `s` prunes the `k = round(s * n)` weights with the smallest
# `|w|` (Python's `round`: exact halves go to the even number, `round(2.5) == 2`).
#
# **Exact counts need a tie rule.** With `k = 2` and magnitudes `[0.1, 0.5, 0.5, 0.5]`, a rule
# like "prune everything below a threshold" prunes 1 or 4 weights, never 2. Our rule: among
# equal magnitudes, **the weight with the lower flat (row-major) index is pruned first**, so
# the tied weights with the *higher* indices are the ones kept. Here: `[False, False, True, True]`.
#
# **The threshold in O(n).** `np.partition(scores, k - 1)[k - 1]` finds the `k`-th smallest
# value `t` in linear time (the tests forbid `np.sort`, `argsort`, `lexsort`, `percentile`,
# `quantile` and `median`: sorting is O(n log n), percentiles interpolate). Then prune every
# entry with `|w| < t`, and the first entries with `|w| == t`, in index order, until `k` are
# pruned. (`keep = scores > t` prunes *every* tie: almost always exactly `k` with real weights;
# when it is more, give back the last tied entries.)
#
# **Already pruned stays pruned.** An optional `mask` says which entries are still alive.
# Dead entries are pruned first, whatever their stored value (score them `-1`); if more than `k`
# are dead, the result keeps exactly the live ones. `inf` ranks above every finite magnitude
# (Section 5 uses that).
#
# Worked example: `w = [0.1, -3.0, 0.5, 2.0, -0.5]`, `s = 0.6`, so `k = 3`. The third smallest
# magnitude is `t = 0.5`; only `0.1` is below it; two entries tie at `0.5` (index 2 and 4) and we
# need two more, so both go. Mask: `[False, True, False, True, False]`. With `s = 0.5`,
# `k = round(2.5) = 2`: `0.1` and the tie at index 2 go, index 4 stays.
#
# The argument checks above the solution block are given (a sparsity outside `[0, 1)`: `ValueError`).

# %%
#| export
def _check_fraction(value, name: str) -> float:
    "A real number in [0, 1): a sparsity or a pruning ratio."
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < 1.0:  # NaN fails the comparison too
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _check_finite(array: np.ndarray, what: str, allow_inf: bool = False) -> None:
    "Raise a ValueError if `array` holds NaN (or, unless `allow_inf`, an infinity)."
    # The common case is clean: one vectorised pass answers it; counting takes more passes.
    clean = not np.isnan(array).any() if allow_inf else np.isfinite(array).all()
    if clean:
        return
    bad = np.isnan(array) if allow_inf else ~np.isfinite(array)
    kind = "NaN" if allow_inf else "NaN or infinite"
    raise ValueError(f"{what} contains {int(bad.sum())} {kind} value(s); they cannot be ranked or "
                     "stored (check the training run that produced them)")

# %% nbgrader={"grade": false, "grade_id": "magnitude-mask", "locked": false, "solution": true, "schema_version": 3}
#| export
def magnitude_mask(weights, sparsity: float, mask=None) -> np.ndarray:
    """Boolean keep-mask (True = keep), shaped like `weights`, pruning exactly `round(sparsity * n)` entries.

    The smallest |w| are pruned first. Ties: the entry with the lower flat (row-major) index is
    pruned first, so [0.1, 0.5, 0.5, 0.5] at sparsity 0.5 gives [False, False, True, True].
    Entries where `mask` is False are already pruned: they are pruned first, and stay pruned even
    if that exceeds the count. The threshold comes from `np.partition` (linear time), not a sort.
    `inf` ranks above every finite magnitude. Raises ValueError: "sparsity must be in [0, 1)",
    NaN in the weights, a `mask` that is not a boolean array of the weights' shape.
    """
    sparsity = _check_fraction(sparsity, "sparsity")
    w = np.asarray(weights.data if isinstance(weights, Tensor) else weights)
    if not np.issubdtype(w.dtype, np.floating):
        w = w.astype(np.float64)  # integers and booleans: rank them as floats
    _check_finite(w, "weights", allow_inf=True)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != w.shape:
            raise ValueError(f"mask must be a boolean array of shape {w.shape}, got {mask.dtype} {mask.shape}")
    ### BEGIN SOLUTION
    scores = np.abs(w).ravel()                 # a new array: ours to change
    already = 0
    if mask is not None:
        scores[~mask.ravel()] = -1.0           # already pruned: ranked below every weight
        already = int(np.count_nonzero(~mask))
    k = max(round(sparsity * scores.size), already)
    if k == 0:
        return np.ones(w.shape, dtype=bool)
    threshold = np.partition(scores, k - 1)[k - 1]   # the k-th smallest score, in linear time
    keep = scores > threshold
    pruned = scores.size - int(np.count_nonzero(keep))
    if pruned > k:
        # Several scores equal the threshold. The tie rule prunes lower indices first, so the
        # last `pruned - k` of them are kept after all.
        tied = np.flatnonzero(scores == threshold)
        keep[tied[tied.size - (pruned - k):]] = True
    return keep.reshape(w.shape)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "magnitude-mask-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
w = np.array([0.1, -3.0, 0.5, 2.0, -0.5])
assert magnitude_mask(w, 0.6).tolist() == [False, True, False, True, False]        # the worked example
assert magnitude_mask(w, 0.0).all() and magnitude_mask(w, 0.0).dtype == bool
assert magnitude_mask(np.array([[1.0, 4.0], [3.0, 2.0]]), 0.5).tolist() == [[False, True], [True, False]]
# the tie rule: equal magnitudes, the lower index is pruned first (k = round(2.5) = 2 here)
assert magnitude_mask(w, 0.5).tolist() == [False, True, False, True, True]
assert magnitude_mask(np.array([0.1, 0.5, 0.5, 0.5]), 0.5).tolist() == [False, False, True, True]
alive = np.array([True, False, True, True, True])                                   # index 1 (|w| = 3) is already dead
assert magnitude_mask(w, 0.2, mask=alive).tolist() == alive.tolist()                # k = 1 = the 1 dead: nothing more
assert magnitude_mask(w, 0.4, mask=alive).tolist() == [False, False, True, True, True]
print("✓ magnitude_mask prunes exact counts with the lower-index tie rule and keeps dead weights dead")

# %% [markdown]
# ## 4. Masks that survive training (given)
#
# Zeroing a weight once is not enough: the next optimizer step (and a momentum buffer) grows it
# back. So each pruned parameter keeps its mask, enforced **at every step**: our optimizers
# (Module 06) zero the masked gradients before the update and the masked weights and buffers
# after it, for any `Tensor` whose `.mask` is set.
#
# `apply_mask(param, keep)` combines `keep` with the parameter's mask (pruned stays pruned),
# writes the zeros and stores the mask on the tensor. `remove_pruning` makes pruning permanent:
# it drops the masks and keeps the zeros (PyTorch's `prune.remove`).

# %%
#| export
def apply_mask(param: Tensor, keep) -> Tensor:
    """Prune `param` where `keep` is False: zero those entries and store the mask in `param.mask`.

    The mask is combined with any existing mask (an entry pruned before stays pruned), and a
    stored gradient is zeroed at the pruned entries too. Returns `param`.
    """
    if not isinstance(param, Tensor):
        raise TypeError(f"apply_mask needs a Tensor parameter, got {type(param).__name__}")
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.shape != param.shape:
        raise ValueError(f"keep must be a boolean array of shape {param.shape}, got {keep.dtype} {keep.shape}")
    # `&` makes a new array, and so does copy(): the caller may reuse `keep`.
    keep = keep & param.mask if param.mask is not None else keep.copy()
    param.data[~keep] = 0.0
    if param.grad is not None:
        param.grad = param.grad.astype(param.data.dtype)  # a new array: the old one may be shared
        param.grad[~keep] = 0.0
    param.mask = keep
    return param


def remove_pruning(model):
    "Make pruning permanent: drop every mask, keep the zeros (training may regrow them). Returns `model`."
    for _, weight in prunable_weights(model):
        if weight.mask is not None:
            weight.data[~weight.mask] = 0.0
            weight.mask = None
    return model

# %%
from tinytorch.core.optimizers import SGD

p = Tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
apply_mask(p, np.array([[True, False, True], [True, True, False]]))
apply_mask(p, np.array([[False, True, True], [True, True, True]]))       # the second mask cannot revive (0, 1)
assert p.data.tolist() == [[0, 0, 3], [4, 5, 0]]
opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
for _ in range(5):
    opt.zero_grad()
    (p * p).sum().backward()
    opt.step()
assert (p.data[~p.mask] == 0).all() and (p.data[p.mask] != 0).all()
print("✓ apply_mask zeroes and stacks masks; SGD with momentum keeps pruned weights at 0")

# %% [markdown]
# ## 5. Magnitude pruning a whole model
#
# `magnitude_prune(model, sparsity, scope)` prunes a model in place, with `apply_mask`:
#
# - `scope="layer"`: each layer loses `round(sparsity * n_l)` of its own weights;
# - `scope="global"`: all prunable weights compete in one ranking, `round(sparsity * N)` pruned
#   overall (ties: lower index in the concatenation of the flattened weights in
#   `prunable_weights` order).
#
# Weights already pruned (`w.mask` False) stay pruned and count towards the target (a lower one
# changes nothing): pass the masks as `mask=`; `magnitude_mask` would `abs()` a score of -1.
#
# Global ranking is usually more accurate, but a layer with a small initialisation scale (a wide
# one: `1/sqrt(fan_in)`) can lose almost everything. The **guard** `min_keep` protects, in every
# layer, the `protect = ceil(min_keep * n_l)` largest live weights: score them `inf` before
# ranking (`magnitude_mask` on the layer at sparsity `(n_l - protect) / n_l` finds them; skip it
# when `protect` is 0: sparsity 1 raises). An impossible target (`round(sparsity * N)` above the
# unprotected count; per layer with `scope="layer"`) raises `ValueError` naming `min_keep`, e.g.
# `"cannot prune 6 weights of ['0.weight', '2.weight'] at sparsity 0.75: min_keep=0.5 protects too many"`.
#
# Worked example: layer 0 holds `[[0.1, 0.2], [0.3, 0.4]]`, layer 2 holds
# `[[1, 2], [3, 4]]`. Global 50%: the four smallest are all of layer 0. Per layer 50%: `0.1, 0.2`
# and `1, 2` go. Global 50% with `min_keep=0.25`: `0.4` is protected, so `0.1, 0.2, 0.3` and `1` go.

# %% nbgrader={"grade": false, "grade_id": "magnitude-prune", "locked": false, "solution": true, "schema_version": 3}
#| export
def magnitude_prune(model, sparsity: float, scope: str = "global", min_keep: float = 0.0):
    """Prune the smallest-magnitude weights of `model` in place (masks stored with `apply_mask`).

    `sparsity`: target fraction of zeros among the prunable weights after the call (weights already
    pruned stay pruned and count). `scope`: "global" (one ranking over all layers, ties by index in
    `prunable_weights` order) or "layer" (each layer on its own). `min_keep`: every layer keeps at
    least `ceil(min_keep * n)` of its largest weights (scored `inf`); a target those protected
    weights make impossible raises ValueError naming `min_keep`. Returns `model`.
    """
    sparsity = _check_fraction(sparsity, "sparsity")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if isinstance(min_keep, bool) or not isinstance(min_keep, (int, float)) or not 0.0 <= min_keep <= 1.0:
        raise ValueError(f"min_keep must be in [0, 1], got {min_keep!r}")
    weights = prunable_weights(model)
    for name, w in weights:
        _check_finite(w.data, f"weight '{name}'")
    ### BEGIN SOLUTION
    scores, alive, protected = [], [], []
    for _, w in weights:
        score = np.abs(w.data).ravel()
        live = np.ones(w.size, dtype=bool) if w.mask is None else w.mask.ravel()
        protect = math.ceil(min_keep * w.size)
        if protect > 0:                        # the guard: the layer's largest live weights score inf
            top = magnitude_mask(score, (w.size - protect) / w.size, mask=live).ravel() & live
            score[top] = np.inf
        scores.append(score)
        alive.append(live)
        protected.append(int(np.count_nonzero(score == np.inf)) if protect > 0 else 0)
    groups = [[i] for i in range(len(weights))] if scope == "layer" else [list(range(len(weights)))]
    for members in groups:
        score = np.concatenate([scores[i] for i in members])
        k = round(sparsity * score.size)
        if k > score.size - sum(protected[i] for i in members):
            names = [weights[i][0] for i in members]
            raise ValueError(f"cannot prune {k} weights of {names} at sparsity {sparsity}: "
                             f"min_keep={min_keep} protects too many")
        any_mask = any(weights[i][1].mask is not None for i in members)
        live = np.concatenate([alive[i] for i in members]) if any_mask else None
        keep = magnitude_mask(score, sparsity, mask=live)
        start = 0
        for i in members:
            w = weights[i][1]
            apply_mask(w, keep[start:start + w.size].reshape(w.shape))
            start += w.size
    return model
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "magnitude-prune-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
def two_layer():
    net = Sequential(Linear(2, 2, bias=False, rng=0), ReLU(), Linear(2, 2, bias=False, rng=0))
    net[0].weight.data[...] = [[0.1, 0.2], [0.3, 0.4]]
    net[2].weight.data[...] = [[1.0, 2.0], [3.0, 4.0]]
    return net

net = magnitude_prune(two_layer(), 0.5)                   # global: the 4 smallest are all in layer 0
assert measure_sparsity(net) == 0.5 and layer_sparsity(net) == {"0.weight": 1.0, "2.weight": 0.0}
net = magnitude_prune(two_layer(), 0.5, scope="layer")     # per layer: 2 of 4 in each
assert net[0].weight.data.tolist() == [[0.0, 0.0], [np.float32(0.3), np.float32(0.4)]]
assert net[2].weight.mask.tolist() == [[False, False], [True, True]]
net = magnitude_prune(two_layer(), 0.5, min_keep=0.25)     # the guard keeps 0.4 in layer 0
assert net[0].weight.data[1, 1] == np.float32(0.4) and net[2].weight.data[0, 0] == 0.0
magnitude_prune(net, 0.25)                                 # a lower target never revives weights
assert measure_sparsity(net) == 0.5
try:
    magnitude_prune(two_layer(), 0.75, min_keep=0.5)
    raise AssertionError("an impossible min_keep must raise")
except ValueError as err:
    assert "min_keep" in str(err), err
print("✓ magnitude_prune: global vs per-layer ranking, the min_keep guard, monotone sparsity")

# %% [markdown]
# ### Measured: accuracy vs sparsity without retraining, and layer collapse
#
# Prune copies of the trained MLP (every experiment starts from a copy of `mlp`) and evaluate
# them *without fine-tuning*; then each layer under the global ranking at 98%, with and without
# the guard.

# %%
sparsities = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
print("sparsity   " + "  ".join(f"{s:>6.0%}" for s in sparsities))
for scope in ("global", "layer"):
    accs = [evaluate(magnitude_prune(copy.deepcopy(mlp), s, scope=scope), test_flat) for s in sparsities]
    print(f"{scope:<10} " + "  ".join(f"{a:>6.1%}" for a in accs))
for label, kwargs in (("98% global", {}), ("98% global, min_keep=0.01", {"min_keep": 0.01})):
    model = magnitude_prune(copy.deepcopy(mlp), 0.98, **kwargs)
    parts = ", ".join(f"{name} {s:6.2%}" for name, s in layer_sparsity(model).items())
    print(f"{label:<26} accuracy {evaluate(model, test_flat):6.1%}   {parts}")

# %% [markdown]
# The global ranking takes most of its zeros from the large middle layer (`2.weight`, the
# smallest initial scale): at 98% overall it keeps under 1% of it. That is **layer collapse**:
# pushed further, a layer with no weights disconnects the network; the guard puts a floor under
# every layer. Without retraining every variant is ruined at 98%; Section 7 fine-tunes.

# %% [markdown]
# ## 6. Structured pruning: remove whole neurons and channels
#
# Unstructured pruning leaves a weight matrix of the same shape, full of zeros that a dense
# matmul still multiplies. **Structured pruning** removes whole output neurons of a `Linear`
# (rows of its weight) or output channels of a `Conv2d` (filters): a *smaller dense model*.
#
# A channel never goes alone: removing output `j` of a layer also removes input `j` of the next
# (after a `Flatten`, the `H*W` inputs it became), its `BatchNorm` entry, its depthwise filter,
# and, across a residual `body(x) + x`, channel `j` of the layer that produced `x`. This
# bookkeeping is given: `channel_groups(model)` (module 09) returns the **groups** that go
# together, and `remove_channels(model, {group name: kept indices})` builds the smaller model.
# A group has a `.name` (its first layer's, e.g. `"0"`), a `.size`, `.prunable` (False for the
# classifier, whose outputs are the classes) and `.weights()`: one `(size, -1)` array per layer
# that makes the channels (a `BatchNorm` gives its scale), row `i` making channel `i`. The digits
# MLP's groups: `"0"` (256), `"2"` (128) and `"4"` (10, the classifier).
#
# **Which channels?** Score channel `i` of a group by the L1 (or L2) norm of row `i` of each
# array of `.weights()`, **summed over the arrays**; remove `round(ratio * size)` with the smallest
# score, ties removing the lower index first, exactly `magnitude_mask`'s rule: you can call it on
# the scores. Example: scores `[3, 1, 1, 2]` and ratio 0.25 remove channel 1, keeping `[0, 2, 3]`.
# `ratio` is one number for every prunable group or `{group name: ratio}` (layer-wise pruning;
# groups not named keep everything). `remove_channels` returns a new model (the original is not
# changed), slices any masks along with the kept weights, and records `new_model.kept_units`.

# %%
#| export
from tinytorch.core.channels import channel_groups, remove_channels   # given: modules/09_spatial/channels_dev.py


def unit_norms(weight, norm: int = 1) -> np.ndarray:
    "L1 or L2 norm of each output unit (row of a Linear weight, filter of a Conv2d weight)."
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    w = np.asarray(weight.data if isinstance(weight, Tensor) else weight, dtype=np.float64)
    rows = w.reshape(w.shape[0], -1)
    return np.abs(rows).sum(axis=1) if norm == 1 else np.sqrt((rows * rows).sum(axis=1))

# %% nbgrader={"grade": false, "grade_id": "structured-prune", "locked": false, "solution": true, "schema_version": 3}
#| export
def structured_prune(model, ratio, norm: int = 1):
    """A new, smaller model: each prunable group of `channel_groups(model)` loses `round(ratio * size)`
    channels with the smallest score, the score of channel i being the sum over `group.weights()` of
    the L1/L2 norm (`norm`) of row i; ties remove the lower index first (`magnitude_mask`'s rule).
    The classifier keeps all its outputs. Slice with `remove_channels`, which records `kept_units`.

    `ratio`: a number in [0, 1) for every prunable group, or `{group name: ratio}`.
    Raises ValueError for a ratio outside [0, 1) ("ratio must be in [0, 1)"), a name that is not a
    prunable group, such as the classifier's ("no prunable group named ['4']; ... the classifier
    keeps its outputs"), and a ratio that would remove all channels of a group ("would remove all").
    """
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    ### BEGIN SOLUTION
    groups = {group.name: group for group in channel_groups(model) if group.prunable}
    if isinstance(ratio, dict):
        unknown = [name for name in ratio if name not in groups]
        if unknown:
            raise ValueError(f"no prunable group named {unknown}; the prunable groups are {list(groups)} "
                             "(the classifier keeps its outputs)")
        ratios = {name: _check_fraction(r, f"ratio['{name}']") for name, r in ratio.items()}
    else:
        ratios = dict.fromkeys(groups, _check_fraction(ratio, "ratio"))
    keep = {}
    for name, r in ratios.items():
        group = groups[name]
        if round(r * group.size) >= group.size:
            raise ValueError(f"ratio {r} would remove all {group.size} channels of group '{name}'")
        scores = sum(unit_norms(w, norm) for w in group.weights())
        keep[name] = np.flatnonzero(magnitude_mask(scores, r))
    return remove_channels(model, keep)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "structured-prune-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
small = structured_prune(mlp, 0.5)
assert [small[i].weight.shape for i in (0, 2, 4)] == [(128, 64), (64, 128), (10, 64)], "the classifier keeps 10"
assert mlp[0].weight.shape == (256, 64), "the original must be untouched"
norms = np.abs(mlp[0].weight.data).sum(axis=1)
assert norms[small.kept_units["0"]].min() >= np.delete(norms, small.kept_units["0"]).max()
tied = Sequential(Linear(1, 4, rng=0), ReLU(), Linear(4, 2, rng=0))
tied[0].weight.data[:, 0], tied[0].bias.data[:] = [3, 1, -1, 2], 0          # scores 3, 1, 1, 2
assert structured_prune(tied, 0.25).kept_units["0"].tolist() == [0, 2, 3], "ties: lower index first"
x = Tensor(np.random.default_rng(0).random((5, 64)).astype(np.float32))
zeroed = copy.deepcopy(mlp)                     # removed neurons output zero: the same logits
for i, kept in ((0, small.kept_units["0"]), (2, small.kept_units["2"])):
    gone = np.setdiff1d(np.arange(zeroed[i].weight.shape[0]), kept)
    zeroed[i].weight.data[gone], zeroed[i].bias.data[gone] = 0, 0
assert np.allclose(small(x).data, zeroed(x).data, atol=1e-5)
small_cnn = structured_prune(cnn, {"0": 0.25, "3": 0.5}, norm=2)      # across Conv2d -> Flatten -> Linear
assert [small_cnn[i].weight.shape for i in (0, 3, 7)] == [(12, 1, 3, 3), (16, 12, 3, 3), (10, 64)]
print("✓ structured_prune removes the weakest channels, ties and classifier as specified")

# %% [markdown]
# ### Measured: a smaller MLP, uniform and layer-wise
#
# Removing half of the hidden neurons cuts the parameters by about 3x, not 2x: a hidden layer
# loses rows of its own weight *and* columns of the next layer's.
#
# Layers are not equally important. A **sensitivity analysis** (given) prunes one group at a
# time, nothing else touched and no fine-tuning, and records the test accuracy: a flat row can
# be pruned hard, a steep one needs care. **Layer-wise pruning** then gives each group its own
# ratio, `structured_prune(model, {name: ratio})`: here the largest tested ratio that costs at
# most 1 point. Both models are fine-tuned briefly afterwards.

# %%
#| export
def sensitivity_analysis(model, data, ratios=(0.25, 0.5, 0.75, 0.9)) -> dict:
    """Test accuracy on `data` after structured-pruning one prunable channel group at a time, without fine-tuning.

    Returns `{"baseline": accuracy, "ratios": [...], "accuracy": {group name: [accuracy per ratio]}}`.
    The model is never modified.
    """
    ratios = [_check_fraction(r, "ratio") for r in ratios]
    accuracy = {}
    for group in channel_groups(model):
        if group.prunable:
            accuracy[group.name] = [evaluate(structured_prune(model, {group.name: r}), data) for r in ratios]
    return {"baseline": evaluate(model, data), "ratios": ratios, "accuracy": accuracy}

# %%
def n_params(model) -> int:
    return sum(p.size for p in model.parameters())


FINETUNE_LR = 3e-3   # measured on the digits: recovers from pruning faster than Adam's usual 1e-3
FINETUNE_EPOCHS = 10


def finetune(model, train, test, epochs: int = FINETUNE_EPOCHS, lr: float = FINETUNE_LR) -> float:
    "Fine-tune with Adam (masks respected) and return the test accuracy."
    fit(model, train, CrossEntropyLoss(), Adam(model.parameters(), lr=lr), epochs=epochs, progress=False)
    return evaluate(model, test)


sens = sensitivity_analysis(mlp, test_flat, ratios=(0.25, 0.4, 0.5, 0.75, 0.9))
print("accuracy change (points) when one group loses a fraction of its channels")
print("group " + "".join(f"{r:>7.0%}" for r in sens["ratios"]))
chosen = {}
for name, accs in sens["accuracy"].items():
    print(f"{name:<6}" + "".join(f"{100 * (a - sens['baseline']):>+7.1f}" for a in accs))
    chosen[name] = max([r for r, a in zip(sens["ratios"], accs) if sens["baseline"] - a <= 0.01], default=0.0)
for label, ratio in (("50% of every group", 0.5), (f"layer-wise {chosen}", chosen)):
    model = structured_prune(copy.deepcopy(mlp), ratio)
    before = evaluate(model, test_flat)
    after = finetune(model, *digits_loaders(batch_size=64, seed=1))
    print(f"{label}: {n_params(mlp) / n_params(model):.1f}x fewer parameters, accuracy {before:.1%} before and "
          f"{after:.1%} after {FINETUNE_EPOCHS} epochs of fine-tuning (dense {mlp_acc:.1%})")

# %% [markdown]
# ### Real architectures: BatchNorm, depthwise convolutions, residual blocks
#
# Your `structured_prune` never looks at layer types; the tracer does. So it also prunes module
# 09's `digits_mobilenet` (depthwise-separable blocks) and `digits_resnet` (residual blocks),
# where one group spans a convolution, its BatchNorm, a depthwise convolution or both sides of an
# addition. Below, the ResNet's stem and its first block's last convolution are one group: the
# identity shortcut adds their outputs, so channel `c` goes from both or from neither.
#
# The given notebook `structured_dev.py` (optional) and `tito bench 18` (table 7) measure both
# models' accuracy, multiply-adds and speed against unstructured pruning at the same weight count.

# %%
from tinytorch.core.models import digits_resnet

resnet = digits_resnet(seed=0)
for group in channel_groups(resnet):
    layers = group.producer_names + [name for name, _ in group.members]
    print(f"group {group.name!r:<11} {group.size:>3} channels, prunable={group.prunable}: {layers}")
half_resnet = structured_prune(resnet, 0.5)
out = half_resnet(Tensor(np.zeros((2, 1, 8, 8), dtype=np.float32)))
print(f"ResNet-style, half of every group's channels removed: {n_params(resnet):,} -> "
      f"{n_params(half_resnet):,} parameters, output {out.shape}")

# %% [markdown]
# ## 7. Iterative pruning with fine-tuning
#
# Pruning 95% at once removes weights the network still relies on, and fine-tuning must repair
# a badly damaged model. **Iterative pruning** removes a little, fine-tunes, and repeats: the
# surviving weights adapt while the damage is small. Zhu & Gupta (2017) schedule the sparsity
# from `initial` to `final` over `n` steps with a polynomial (given):
#
# $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t}{n}\right)^{p}, \qquad t = 1, \dots, n$$
#
# With `p = 3` it prunes fast while many weights are redundant and slows down near the end,
# where every weight counts; `p = 1` is a straight line.

# %%
#| export
def polynomial_schedule(initial: float, final: float, steps: int, power: float = 3) -> np.ndarray:
    "Sparsity targets `s_1..s_steps` of Zhu & Gupta's schedule from `initial` to `final` (power 1: linear)."
    initial = _check_fraction(initial, "initial sparsity")
    final = _check_fraction(final, "final sparsity")
    if initial > final:
        raise ValueError(f"initial sparsity must not exceed final sparsity, got {initial} > {final}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
        raise ValueError(f"power must be a positive number, got {power!r}")
    t = np.arange(1, steps + 1) / steps
    targets = final + (initial - final) * (1.0 - t) ** power
    targets[-1] = final  # exact, whatever the rounding
    return targets

# %%
assert np.allclose(polynomial_schedule(0.0, 0.8, 4, power=1), [0.2, 0.4, 0.6, 0.8])
print("cubic schedule to 95% in 10 steps:", np.round(polynomial_schedule(0.0, 0.95, 10), 3).tolist())

# %% [markdown]
# ### Exercise: `iterative_prune`
#
# For each target `s_t` of `polynomial_schedule(initial_sparsity, final_sparsity, steps, power)`:
# `magnitude_prune(model, s_t, scope=scope, min_keep=min_keep)`, then, if `epochs_per_step > 0`,
# fine-tune with `fit(model, train_data, CrossEntropyLoss(), optimizer, epochs=epochs_per_step,
# progress=False)`. The contract the tests check:
#
# - **One Adam for the whole run**: create `Adam(model.parameters(), lr=lr)` once, before the
#   first step, and pass it to every `fit`, so its moment estimates carry over as in one long
#   training run (the tests compare your weights with this recipe's, written out).
# - The result is a dict of four **lists** of equal length `steps + 1`:
#   `{"step": [0, 1, ..., steps], "target": [...], "sparsity": [...], "accuracy": [...]}`.
# - **Entry 0 is the model as given**, before any pruning: step `0`, target `initial_sparsity`,
#   `measure_sparsity(model)`, and its accuracy. Entry `t` is recorded after step `t`'s
#   fine-tuning: step `t`, target `s_t` (a Python float), the measured sparsity, the accuracy.
# - The masks stay on the weights afterwards, so later fine-tuning keeps the pruned weights at 0.
# - Accuracy is `evaluate(model, test_data)`, or `None` when `test_data` is `None`.
# - Show progress as `fit` does (not graded): `tqdm(targets, disable=progress is False,
#   delay=0 if progress else 2)` (`None`: a bar only after 2 s, `True` always, `False` never).
#
# Worked example: `steps=2, initial_sparsity=0.0, final_sparsity=0.8` (power 3) gives targets
# `[0.7, 0.8]` and `"step": [0, 1, 2]`, `"target": [0.0, 0.7, 0.8]`. With `steps=1` this is
# one-shot pruning plus fine-tuning: the fair baseline with the same training budget.

# %% nbgrader={"grade": false, "grade_id": "iterative-prune", "locked": false, "solution": true, "schema_version": 3}
#| export
def iterative_prune(model, train_data, final_sparsity: float, steps: int, epochs_per_step: int = 1,
                    test_data=None, initial_sparsity: float = 0.0, power: float = 3,
                    scope: str = "global", min_keep: float = 0.0, lr: float = 1e-3, progress=None) -> dict:
    """Alternate magnitude pruning (targets from `polynomial_schedule`) and fine-tuning, in place.

    One Adam(model.parameters(), lr=lr) serves the whole run. Returns a dict of lists
    `{"step", "target", "sparsity", "accuracy"}`, each of length steps + 1: entry 0 is the model
    as given (step 0, target `initial_sparsity`, before pruning), entry t follows step t's
    fine-tuning. "accuracy" holds `evaluate(model, test_data)`, or None without `test_data`.
    The masks stay on the weights.
    """
    targets = polynomial_schedule(initial_sparsity, final_sparsity, steps, power)
    if isinstance(epochs_per_step, bool) or not isinstance(epochs_per_step, (int, np.integer)) or epochs_per_step < 0:
        raise ValueError(f"epochs_per_step must be an int >= 0, got {epochs_per_step!r}")
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None (auto), True or False, got {progress!r}")
    ### BEGIN SOLUTION
    def accuracy():
        return None if test_data is None else evaluate(model, test_data)

    history = {"step": [0], "target": [initial_sparsity], "sparsity": [measure_sparsity(model)],
               "accuracy": [accuracy()]}
    optimizer = Adam(model.parameters(), lr=lr)
    loss_fn = CrossEntropyLoss()
    bar = tqdm(targets, disable=progress is False, delay=0 if progress else 2,
               desc="iterative pruning", unit="step", leave=False)
    for step, target in enumerate(bar, start=1):
        magnitude_prune(model, float(target), scope=scope, min_keep=min_keep)
        if epochs_per_step:
            fit(model, train_data, loss_fn, optimizer, epochs=int(epochs_per_step), progress=False)
        history["step"].append(step)
        history["target"].append(float(target))
        history["sparsity"].append(measure_sparsity(model))
        history["accuracy"].append(accuracy())
        bar.set_postfix(sparsity=f"{history['sparsity'][-1]:.3f}", refresh=False)
    return history
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "iterative-prune-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
Xs = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
ys = (Xs[:, 0] > 0).astype(np.int64)
batches = [(Tensor(Xs[i:i + 16]), ys[i:i + 16]) for i in range(0, 64, 16)]
net = Sequential(Linear(6, 16, rng=0), ReLU(), Linear(16, 2, rng=0))
before = evaluate(net, batches)
hist = iterative_prune(net, batches, 0.75, steps=3, epochs_per_step=2, test_data=batches, progress=False)
assert hist["step"] == [0, 1, 2, 3] and hist["target"][0] == 0.0 and hist["target"][-1] == 0.75
assert hist["sparsity"][0] == 0.0 and hist["accuracy"][0] == before                 # entry 0: the model as given
assert hist["sparsity"][-1] == measure_sparsity(net) == round(0.75 * 128) / 128
assert all(b >= a for a, b in zip(hist["sparsity"], hist["sparsity"][1:]))
print("✓ iterative_prune follows the schedule, fine-tunes and records a monotone history")

# %% [markdown]
# ### Measured: one-shot vs iterative at 90% and 95%
#
# Same trained weights, the **same fine-tuning budget** (30 epochs: 10 steps x 3, or one prune
# then 30), optimizer, learning rate and batch order. One test image is 0.28 points, so a point
# or less is noise (`tito bench 18`, table 2, repeats this over five seeds and on the CNN).

# %%
STEPS, EPOCHS_PER_STEP = 10, 3
METHODS = {"one-shot": (1, STEPS * EPOCHS_PER_STEP), "iterative": (STEPS, EPOCHS_PER_STEP)}   # (steps, epochs per step)
runs = {}


def prune_and_finetune(target: float, method: str) -> None:
    "Prune the trained MLP to `target` with `method` and fine-tune; the result goes into `runs`."
    steps, epochs = METHODS[method]
    model = copy.deepcopy(mlp)
    train, test = digits_loaders(batch_size=64, seed=1)
    hist = iterative_prune(model, train, target, steps=steps, epochs_per_step=epochs, test_data=test,
                           lr=FINETUNE_LR, progress=False)
    runs[target, method] = {"accuracy": hist["accuracy"][-1], "model": model}


print(f"{'sparsity':>8} {'dense':>7} {'one-shot':>9} {'iterative':>10}")
for target in (0.9, 0.95):
    for method in METHODS:
        prune_and_finetune(target, method)
    print(f"{target:>8.0%} {mlp_acc:>7.1%} {runs[target, 'one-shot']['accuracy']:>9.1%} "
          f"{runs[target, 'iterative']['accuracy']:>10.1%}")

# %% [markdown]
# Iterative pruning trades pruning steps for recovery time: with too few epochs per step its
# last steps cannot recover.
#
# ### The lottery ticket
#
# Frankle & Carbin (2019): the sparse network iterative pruning finds can be trained *from its
# original initialisation* (rewind the surviving weights, keep the mask, retrain); a random
# re-initialisation of the same mask usually does worse. The MLP at 90% (answer in Section 11):

# %%
masks = [w.mask.copy() for _, w in prunable_weights(runs[0.9, "iterative"]["model"])]
tickets = {}
for label, init_seed in (("rewound to the original init", 0), ("random re-init", 123)):
    model = digits_mlp(seed=init_seed)
    for (_, w), keep in zip(prunable_weights(model), masks):
        apply_mask(w, keep)
    tickets[label] = train_digits_model(model, seed=0)["val_acc"][-1]   # the dense model's recipe
    print(f"90% sparse MLP trained from scratch, {label}: {tickets[label]:.1%}")

# %% [markdown]
# ## 8. Storing a sparse model: the index overhead
#
# To save space we store only the surviving values *and where they are*. The "where" is not
# free, and it decides whether pruning pays off at all. Three classic encodings (this section's
# and the next one's code goes to `tinytorch/compression/encoding.py`):
#
# - **CSR** (compressed sparse row, given): for each nonzero its column index (`int32`), plus
#   one `int32` offset per row (`indptr`): row `r` owns `data[indptr[r]:indptr[r+1]]`. For
#   `[[0, 5, 0], [0, 0, 0], [7, 0, 8]]`: `data = [5, 7, 8]`, `indices = [1, 0, 2]`,
#   `indptr = [0, 1, 1, 3]`. Cost: `4 * nnz + 4 * (rows + 1)` bytes of indices: as much as the
#   FP32 values themselves, and **4x more than INT8 values**.
# - **bitmask**: one bit per weight, pruned or not: `n / 8` bytes whatever the sparsity. Cheap
#   at 50%, expensive at 99%.
# - **relative (delta) indices** (Han et al., Deep Compression 2016): store for each nonzero
#   how many zeros precede it since the previous one, in `b` bits. A gap too long for `b` bits
#   gets a *filler*: an extra entry with gap `2**b - 1` that lands on a zero position and stores
#   the value 0. Cost: `b/8` bytes per entry, fillers included.
#
# `pack_bits(values, bits)` writes integers below `2**bits` with `bits` bits each into bytes,
# and `unpack_bits` reads them back; `decode_csr` and `decode_delta` invert the encoders.

# %%
#| export compression.encoding
import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.compression.prune import _check_finite
from tinytorch.compression.quantize import compute_qparams, qrange, quantize

INDEX_FORMATS = ("dense", "csr", "bitmask", "delta")   # the position formats `compress_weight` writes


def check_value_bits(bits) -> None:
    "Stored value widths: 32 (float32), 16 (float16) or an int in 2..8 (quantized codes)."
    if bits not in (32, 16):
        qrange(bits)  # raises unless an int in 2..8


def encode_csr(weight) -> tuple:
    """CSR encoding `(data, indices, indptr)` of the nonzeros of `weight` viewed as `(rows, -1)`.

    `data` keeps the weight's dtype, `indices` (column of each nonzero) and `indptr` (row offsets,
    length rows + 1) are int32, like SciPy's csr_matrix.
    """
    w = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
    if w.ndim < 2:
        raise ValueError(f"encode_csr needs an array with at least 2 dimensions, got shape {w.shape}")
    rows = w.reshape(w.shape[0], -1)
    r, c = np.nonzero(rows)              # row-major order: exactly CSR's order
    indptr = np.zeros(rows.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(r, minlength=rows.shape[0]), out=indptr[1:])
    return rows[r, c], c.astype(np.int32), indptr


def decode_csr(data, indices, indptr, shape) -> np.ndarray:
    "The dense array of `shape` that `encode_csr` encoded."
    indptr = np.asarray(indptr)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    dense = np.zeros((shape[0], int(np.prod(shape[1:], dtype=np.int64))), dtype=np.asarray(data).dtype)
    dense[rows, indices] = data
    return dense.reshape(shape)


def decode_delta(deltas) -> np.ndarray:
    "Flat positions of every entry (fillers included) of `encode_delta`'s output: a cumulative sum."
    return np.cumsum(np.asarray(deltas, dtype=np.int64) + 1) - 1


def pack_bits(values, bits: int) -> np.ndarray:
    "Unsigned integers < 2**bits written with `bits` bits each, most significant first, into uint8 bytes."
    values = np.asarray(values, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ValueError(f"values must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return values.astype(np.uint8)
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).ravel())


def unpack_bits(packed, bits: int, count: int) -> np.ndarray:
    "The `count` integers that `pack_bits` wrote, as int64."
    packed = np.asarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed[:count].astype(np.int64)
    digits = np.unpackbits(packed)[: count * bits].reshape(count, bits).astype(np.int64)
    return digits @ (1 << np.arange(bits - 1, -1, -1))

# %%
data, indices, indptr = encode_csr(np.array([[0, 5.0, 0], [0, 0, 0], [7.0, 0, 8.0]]))
assert data.tolist() == [5.0, 7.0, 8.0] and indices.tolist() == [1, 0, 2] and indptr.tolist() == [0, 1, 1, 3]
assert pack_bits([1, 2, 3], 2).tolist() == [0b01101100]            # 01 10 11, then two zero bits
assert unpack_bits(pack_bits([5, 0, 7], 3), 3, 3).tolist() == [5, 0, 7]
print("✓ encode_csr, decode_csr, pack_bits and unpack_bits on hand cases")

# %% [markdown]
# ### Exercise: `encode_delta`
#
# Input: sorted flat positions of the nonzeros. Output: one entry per nonzero plus the fillers,
# as a NumPy array of dtype `uint8` (`bits <= 8`) or `uint16` (`bits` 9..16). Each entry is the
# number of positions skipped since the previous entry (the first counts from position 0, so a
# nonzero at position 0 gives 0). A gap of `g` skipped positions becomes `g // 2**b` fillers of
# value `2**b - 1`, then the entry `g % 2**b`. An empty input gives an empty array. (The given
# checks reject `bits` outside 1..16 and positions not distinct, increasing and non-negative.)
#
# Worked example, `b = 2` (gaps 0..3), nonzeros at flat positions `[1, 2, 9]`: the gaps are
# `1, 0, 6`. Gap 6 does not fit: one filler with gap 3 lands on position 6 (3 positions skipped
# after position 2), then gap 2 reaches position 9. Deltas: `[1, 0, 3, 2]`, and
# `decode_delta([1, 0, 3, 2]) == [1, 2, 6, 9]`: the filler's position 6 is included.
# Vectorised, without a Python loop: `gaps // 2**b + 1` entries per nonzero, the last of each
# run is the real one.

# %% nbgrader={"grade": false, "grade_id": "delta-encode", "locked": false, "solution": true, "schema_version": 3}
#| export compression.encoding
def encode_delta(positions, bits: int = 8) -> np.ndarray:
    """Relative indices of sorted flat `positions`: each entry counts the positions skipped since the
    previous entry (the first counts from position 0), in `bits` bits; a gap of 2**bits or more is
    bridged by filler entries of value 2**bits - 1 that land on (zero) positions.

    Returns uint8 deltas (bits <= 8) or uint16 (bits 9..16); [1, 2, 9] with bits=2 -> [1, 0, 3, 2].
    Raises ValueError for bits outside [1, 16] and positions that are not increasing.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int in [1, 16], got {bits!r}")
    positions = np.asarray(positions, dtype=np.int64)
    if positions.ndim != 1 or (positions.size and (positions[0] < 0 or np.any(np.diff(positions) <= 0))):
        raise ValueError("positions must be a 1-d array of distinct, increasing, non-negative indices")
    ### BEGIN SOLUTION
    base = 1 << bits
    previous = np.concatenate(([-1], positions[:-1]))
    gaps = positions - previous - 1                  # positions skipped before each entry
    counts = gaps // base + 1                       # fillers + the entry itself
    deltas = np.full(int(counts.sum()), base - 1, dtype=np.uint8 if bits <= 8 else np.uint16)
    deltas[np.cumsum(counts) - 1] = gaps % base     # the real entries close each run
    return deltas
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "delta-encode-test", "locked": true, "points": 3, "solution": false, "schema_version": 3}
assert encode_delta([1, 2, 9], bits=2).tolist() == [1, 0, 3, 2]                    # the worked example
assert encode_delta([0, 3], bits=8).tolist() == [0, 2] and encode_delta([0], 8).dtype == np.uint8
assert encode_delta([300], bits=8).tolist() == [255, 44]                           # 300 skipped = one filler (256) + 44
assert encode_delta([], bits=4).tolist() == []
print("✓ encode_delta: gaps, fillers for long gaps, empty input")

# %% [markdown]
# ## 9. Pruning + quantization: a compressed file
#
# `compress_weight(weight, bits, index, index_bits, per_channel)` turns one (pruned) weight into
# the arrays a file stores. It returns a dict with exactly these keys:
#
# | key | value |
# | --- | --- |
# | `"shape"` | the weight's shape as a **list** of ints, e.g. `[2, 4]` (not a tuple) |
# | `"index"`, `"bits"`, `"index_bits"` | the arguments, as given (`index_bits` as an int even when unused) |
# | `"count"` | the number of stored values (= stored positions) |
# | `"arrays"` | `{name: np.ndarray}`, below |
#
# **Positions**, stored in row-major order:
#
# - `index="dense"`: every position, no index array;
# - `"csr"`: the nonzeros; `arrays["indices"]` and `arrays["indptr"]` from `encode_csr`;
# - `"bitmask"`: the nonzeros; `arrays["bitmask"] = np.packbits(w.ravel() != 0)`;
# - `"delta"`: `arrays["deltas"] = pack_bits(encode_delta(nonzeros, index_bits), index_bits)`,
#   and the stored positions are **every entry's, fillers included**: `decode_delta(deltas)`.
#   A filler stores a value too (0.0, or code 0), or the values and positions fall out of step.
#
# **Values** at those positions, in `arrays["values"]`: `bits=32` stores float32, `bits=16`
# float16. `bits` in 2..8 quantizes with Module 17: `params = compute_qparams(w, bits,
# symmetric=True, per_channel=per_channel, axis=0)` on the whole weight (symmetric, so 0.0 is
# code 0), `codes = quantize(w, params)`, keep the codes of the stored positions, shift them to
# be non-negative (`code - params.qmin`) and `pack_bits` them with `bits` bits. `params.scale`
# is 0-d per tensor, shape `(rows,)` per channel: store `np.atleast_1d(params.scale)` as float32
# in `arrays["scale"]` (shape `(1,)` or `(rows,)`). The zero points are all 0: not stored.
#
# Worked example, `w = [[0, 2, 0, -1], [0, 0, 0, 0.5]]`, `bits=8`, `index="delta"`,
# `index_bits=1`. Nonzeros at 1, 3, 7; gaps 1, 1, 3; the gap of 3 needs one filler (at 5):
# deltas `[1, 1, 1, 1]`, `count = 4`. Scale `2/127`; codes at positions 1, 3, 5, 7: `127, -64,
# 0, 32`, stored `+128`: `values = [255, 64, 128, 160]`. The shape is stored as `[2, 4]`.

# %% nbgrader={"grade": false, "grade_id": "compress-weight", "locked": false, "solution": true, "schema_version": 3}
#| export compression.encoding
def compress_weight(weight, bits: int = 8, index: str = "delta", index_bits: int = 8,
                    per_channel: bool = False) -> dict:
    """The arrays that store a (pruned) weight: its values at the stored positions and those positions.

    Returns `{"shape": list of ints, "index", "bits", "index_bits", "count", "arrays"}`; `arrays`
    holds "values" (float32/float16, or `bits`-bit codes `code - qmin` packed with `pack_bits`),
    "scale" (float32, quantized values only) and the positions: none ("dense"), "indices" and
    "indptr" ("csr"), "bitmask" ("bitmask"), or "deltas" ("delta": every entry's position stores a
    value, fillers included, so `count == len(decode_delta(deltas))`).
    Raises ValueError for an `index` not in INDEX_FORMATS and `bits` not 32, 16 or 2..8.
    """
    w = np.asarray(weight.data if isinstance(weight, Tensor) else weight, dtype=np.float32)
    _check_finite(w, "weight")
    if index not in INDEX_FORMATS:
        raise ValueError(f"index must be one of {INDEX_FORMATS}, got {index!r}")
    check_value_bits(bits)
    if index == "csr" and w.ndim < 2:
        raise ValueError(f"index='csr' needs a 2-d (or larger) weight, got shape {w.shape}")
    ### BEGIN SOLUTION
    flat = w.ravel()
    arrays = {}
    if index == "dense":
        positions = np.arange(flat.size)
    elif index == "csr":
        _, arrays["indices"], arrays["indptr"] = encode_csr(w)
        positions = np.flatnonzero(flat)
    elif index == "bitmask":
        arrays["bitmask"] = np.packbits(flat != 0)
        positions = np.flatnonzero(flat)
    else:
        deltas = encode_delta(np.flatnonzero(flat), index_bits)
        arrays["deltas"] = pack_bits(deltas, index_bits)
        positions = decode_delta(deltas)     # fillers included: they store zeros
    if bits in (32, 16):
        arrays["values"] = flat[positions].astype(np.float32 if bits == 32 else np.float16)
    else:
        params = compute_qparams(w, bits=bits, symmetric=True, per_channel=per_channel, axis=0)
        codes = quantize(w, params).ravel()[positions].astype(np.int64)
        arrays["values"] = pack_bits(codes - params.qmin, bits)
        arrays["scale"] = np.atleast_1d(params.scale).astype(np.float32)
    return {"shape": list(w.shape), "index": index, "bits": int(bits), "index_bits": int(index_bits),
            "count": int(positions.size), "arrays": arrays}
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "compress-weight-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
w_small = np.array([[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.5]])
entry = compress_weight(w_small, bits=8, index="delta", index_bits=1)                  # the worked example
assert entry["shape"] == [2, 4] and entry["count"] == 4 and unpack_bits(entry["arrays"]["deltas"], 1, 4).tolist() == [1] * 4
assert entry["arrays"]["values"].tolist() == [255, 64, 128, 160]                      # the filler at 5 stores code 0
assert np.isclose(entry["arrays"]["scale"][0], 2.0 / 127)
entry = compress_weight(w_small, bits=32, index="csr")
assert entry["arrays"]["indices"].tolist() == [1, 3, 3] and entry["arrays"]["values"].tolist() == [2.0, -1.0, 0.5]
entry = compress_weight(np.array([[0.0, 2.0, 0.0, -1.5], [0.0, 0.0, 0.0, 0.5]]), bits=4, index="bitmask")
assert entry["arrays"]["bitmask"].tolist() == [0b01010001]                           # nonzero pattern, 1 bit each
assert entry["arrays"]["values"].tolist() == [0xF3, 0xA0]   # 4-bit codes 7, -5, 2 (scale 2/7), + 8, two per byte
print("✓ compress_weight stores packed codes, scales and positions (fillers included) in every index format")

# %% [markdown]
# ### A compressed model and its file
#
# From here on given code measures your functions: `compress(model, sparsity, bits, index,
# index_bits, bias_bits)` (`pipeline_dev.py`) runs your `compress_weight` on every prunable
# weight of a copy of the model; `.save(path)` writes a `.ttcz` file and returns its size;
# `load_compressed(path)` (`storage_dev.py`) reads it back. Given code imports your functions
# from the package `tito export 18` writes, so the next cell checks that it matches this notebook.

# %%
import importlib
import inspect

LESSON_FILES = ("tinytorch.compression.prune", "tinytorch.compression.encoding", "tinytorch.compression.inference")


def check_export() -> bool:
    "Print whether the exported package holds this notebook's functions (so given code runs yours)."
    def code(function):   # its source lines without the solution markers, which the export drops
        return [line for line in inspect.getsource(function).splitlines() if "### " not in line.strip()[:4]]

    stale = []
    for file in LESSON_FILES:
        try:
            package = importlib.import_module(file)
        except ImportError:
            stale.append(file)
            continue
        for name in package.__all__:
            mine = globals().get(name)
            if inspect.isfunction(mine) and code(mine) != code(getattr(package, name)):
                stale.append(name)
    if stale:
        print(f"⚠ The exported package is older than this notebook ({', '.join(stale)}): the given code below "
              "runs the old versions. Run `tito export 18`, restart the kernel and run the notebook again.")
    else:
        print("✓ the exported package holds this notebook's functions")
    return not stale


check_export()

# %%
from tinytorch.compression.pipeline import compress, save_dense   # given code
from tinytorch.compression.storage import decompress_weight, load_compressed   # given code

rng = np.random.default_rng(0)
w = (rng.normal(size=(8, 40)) * (rng.random((8, 40)) < 0.1)).astype(np.float32)   # no weight here rounds to 0
for index in INDEX_FORMATS:
    assert np.array_equal(decompress_weight(compress_weight(w, bits=32, index=index, index_bits=3)), w)
    w_hat = decompress_weight(compress_weight(w, bits=8, index=index, index_bits=3))
    assert np.array_equal(w_hat == 0, w == 0) and np.abs(w_hat - w).max() <= np.abs(w).max() / 127 / 2 * 1.001
print("✓ decompress_weight (given) inverts compress_weight: FP32 exactly, INT8 within half a step")

# %% [markdown]
# ### Measured: what does it take to reach 40x?
#
# Every row is a real file; the ratio is the dense FP32 file's size over its size, and the
# accuracy is the loaded file's. The pruned models come from Section 7's iterative runs.

# %%
prune_and_finetune(0.97, "iterative")   # one more sparsity, Section 7's recipe
pruned = {s: runs[s, "iterative"]["model"] for s in (0.9, 0.95, 0.97)}
dense_bytes = save_dense(mlp, WORKDIR / "mlp_dense.ttcz")
rows = [("dense FP32 (the baseline)", None, dict(bits=32, index="dense")),
        ("dense INT8", None, dict(bits=8, index="dense")),
        ("90%, CSR int32, INT8", 0.9, dict(bits=8, index="csr")),
        ("90%, bitmask, INT8", 0.9, dict(bits=8, index="bitmask")),
        ("90%, delta 8-bit, INT8", 0.9, dict(bits=8, index="delta", index_bits=8)),
        ("95%, delta 6-bit, INT8", 0.95, dict(bits=8, index="delta", index_bits=6)),
        ("95%, delta 6-bit, 4-bit, INT8 biases", 0.95, dict(bits=4, index="delta", index_bits=6, bias_bits=8)),
        ("97%, delta 6-bit, 4-bit, INT8 biases", 0.97, dict(bits=4, index="delta", index_bits=6, bias_bits=8))]
file_results = {}
print(f"dense FP32 file: {dense_bytes:,} bytes")
print(f"{'format':<38} {'bytes':>8} {'ratio':>6} {'accuracy':>9}   breakdown (bytes)")
for label, target, kwargs in rows:
    source = mlp if target is None else pruned[target]
    cm = compress(source, sparsity=None, **{"index_bits": 8, "bias_bits": 32, "coding": "fixed", **kwargs})
    size = cm.save(WORKDIR / "mlp.ttcz")
    acc = evaluate(load_compressed(WORKDIR / "mlp.ttcz"), test_flat)
    file_results[label] = (size, dense_bytes / size, acc, cm.breakdown())
    parts = " ".join(f"{k} {v:,}" for k, v in cm.breakdown().items() if v)
    print(f"{label:<38} {size:>8,} {dense_bytes / size:>5.1f}x {acc:>9.1%}   {parts}")
best_label = max((label for label, r in file_results.items() if mlp_acc - r[2] <= 0.01),
                 key=lambda label: file_results[label][1])
best_size, best_ratio, best_acc, best_parts = file_results[best_label]
print(f"best within 1 point of {mlp_acc:.1%}: {best_label}: {best_ratio:.1f}x smaller, accuracy {best_acc:.1%}")

# %% [markdown]
# **Quantization alone** is a little under 4x (FP32 biases, header). **Pruning with CSR** is no
# better: the `int32` column indices cost four times as much as the INT8 values they locate. A
# bitmask or 8-bit relative indices fix that, yet "90% x INT8 = 40x" holds only if positions are
# free. **Past 40x** takes 95% sparsity, 6-bit relative indices, 4-bit values and INT8 biases.
# Further (optional): `qat_dev.py`, `entropy_dev.py` (Huffman), `nm_sparsity_dev.py` (2:4);
# `tito bench 18` (table 3b) measures that recipe past 50x.

# %% [markdown]
# ## 10. Does sparsity make inference faster?
#
# Fair timing needs untimed **warm-up** calls (caches, allocation), **repeats**, and the
# **median**, which ignores a run disturbed by another process. Very fast calls are timed in
# groups of `number` so the clock's resolution does not matter. This section's code goes to
# `tinytorch/compression/inference.py`.
#
# ### Exercise: `benchmark_inference`
#
# Time `model(x)` with the clock `timer` (a function returning seconds; the tests pass a fake
# clock, so read the time only through `timer()`):
#
# 1. call `model(x)` `warmup` times, untimed;
# 2. if `number` is `None`, choose it: start at 1 and double it while one group of `number`
#    calls takes less than `min_time` seconds, stopping once `number >= 1_000_000`; the groups
#    timed while choosing are not part of the result;
# 3. time `repeats` groups of `number` calls each; each group gives `elapsed / number` seconds
#    per call. Assign `times` (a NumPy array of those `repeats` numbers) and `number`.
#
# The given code around your block runs it under `no_grad()` in eval mode and turns `times`
# into `{"median", "q1", "q3", "min", "number", "repeats"}`. Worked example: warm-up 2,
# `number=1`, calls taking `1, 1, 5, 2, 3, 100, 4` seconds: the five timed ones give the
# median 4 and the min 2.

# %%
#| export compression.inference
import time

import numpy as np

from tinytorch.core.autograd import no_grad
from tinytorch.core.layers import Module
from tinytorch.core.tensor import Tensor

# %% nbgrader={"grade": false, "grade_id": "benchmark-inference", "locked": false, "solution": true, "schema_version": 3}
#| export compression.inference
def benchmark_inference(model, x, warmup: int = 3, repeats: int = 15, number: int | None = None,
                        min_time: float = 2e-3, timer=time.perf_counter) -> dict:
    """Seconds per call of `model(x)` (no_grad, eval mode), read from `timer()` only.

    `warmup` untimed calls, then `repeats` groups of `number` calls (None: doubled from 1 until a
    group takes `min_time`). Returns `{"median", "q1", "q3", "min", "number", "repeats"}`.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    for value, name, low in ((warmup, "warmup", 0), (repeats, "repeats", 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < 1):
        raise ValueError(f"number must be None or an int >= 1, got {number!r}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    modes = [(m, m.training) for m in model.modules() if isinstance(m, Module)] if isinstance(model, Module) else []
    if isinstance(model, Module):
        model.eval()
    try:
        with no_grad():
            ### BEGIN SOLUTION
            def run(calls: int) -> float:
                start = timer()
                for _ in range(calls):
                    model(x)
                return timer() - start

            for _ in range(warmup):
                model(x)
            if number is None:
                number = 1
                while run(number) < min_time and number < 1_000_000:
                    number *= 2
            times = np.array([run(number) / number for _ in range(repeats)])
            ### END SOLUTION
    finally:
        for module, mode in modes:
            module.training = mode
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": float(times.min()),
            "number": int(number), "repeats": int(repeats)}

# %% nbgrader={"grade": true, "grade_id": "benchmark-inference-test", "locked": true, "points": 2, "solution": false, "schema_version": 3}
class FakeClock:
    "Each call to the model advances the clock by the next duration."
    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self):
        return self.now

    def model(self, x):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1

clock = FakeClock([1.0, 1.0, 5.0, 2.0, 3.0, 100.0, 4.0])     # the worked example
result = benchmark_inference(clock.model, np.zeros(1), warmup=2, repeats=5, number=1, timer=clock)
assert clock.calls == 7 and result["median"] == 4.0 and result["min"] == 2.0 and result["number"] == 1
clock = FakeClock([1e-4])
result = benchmark_inference(clock.model, np.zeros(1), warmup=0, repeats=3, timer=clock)
assert result["number"] == 32 and np.isclose(result["median"], 1e-4)                # 32 calls = 3.2 ms >= 2 ms
print("✓ benchmark_inference warms up, repeats, and reports the median per call")

# %% [markdown]
# ### Exercise: `csr_matmul`
#
# A `Linear` computes `y = x @ W.T`. With `W` in CSR, row `r`'s nonzeros are
# `data[indptr[r]:indptr[r+1]]` at columns `indices[...]`. Vectorised, with no Python loop over
# rows or weights: **gather** `x[:, indices]` pairs every stored weight with its input, shape
# `(batch, nnz)`, and multiplying by `data` gives every product at once; then a **segment sum**,
# `np.add.reduceat(products, starts, axis=...)`, sums each row's run of products.
#
# `reduceat` has one trap: for an **empty row** (`indptr[r] == indptr[r+1]`) it returns the
# element at `starts[r]` instead of 0 (and a start equal to `nnz` is out of range), so reduce
# only over the non-empty rows and leave the others at zero.
#
# The result has shape `(batch, rows)` and dtype `np.result_type(data, x)`. The products
# (`nnz x batch` numbers: 537 MB for a half-dense 1024x1024 layer at batch 256) are formed for
# chunks of `max(1, max_elements // nnz)` samples; a loop over chunks is fine. Gathering rows of
# `x.T` (contiguous memory) is about 2x faster than columns of `x`.

# %% nbgrader={"grade": false, "grade_id": "csr-matmul", "locked": false, "solution": true, "schema_version": 3}
#| export compression.inference
def csr_matmul(data, indices, indptr, x, max_elements: int = 1 << 22) -> np.ndarray:
    """`x @ W.T` for `W` (rows = outputs) in CSR form and `x` of shape (batch, in): shape (batch, rows).

    Empty rows give 0. The products are formed for as many samples at a time as keep them under
    `max_elements` numbers. Raises ValueError unless `x` is 2-d (CSR does not record `in`).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (batch, in_features), got {x.shape}")
    ### BEGIN SOLUTION
    starts, ends = indptr[:-1], indptr[1:]
    nonempty = starts < ends
    out = np.zeros((len(starts), x.shape[0]), dtype=np.result_type(data, x))
    if nonempty.any():
        step = max(1, max_elements // max(1, len(data)))
        for first in range(0, x.shape[0], step):   # a loop over chunks of samples, not over weights
            xt = np.ascontiguousarray(x[first:first + step].T)       # (in, chunk)
            products = xt[indices] * data[:, None]                    # (nnz, chunk)
            out[nonempty, first:first + step] = np.add.reduceat(products, starts[nonempty], axis=0)
    return out.T
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "csr-matmul-test", "locked": true, "points": 3, "solution": false, "schema_version": 3}
W = np.array([[0, 2.0, 0], [0, 0, 0], [1.0, 0, 3.0], [0, 0, 0]], dtype=np.float32)   # empty rows, one at the end
xb = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]], dtype=np.float32)
assert csr_matmul(*encode_csr(W), xb).tolist() == [[20.0, 0.0, 301.0, 0.0], [40.0, 0.0, 602.0, 0.0]]
assert csr_matmul(*encode_csr(np.zeros((3, 3))), xb).tolist() == [[0.0] * 3] * 2
Wr = np.where(magnitude_mask(mlp[2].weight.data, 0.9), mlp[2].weight.data, 0.0)
xr = np.random.default_rng(0).random((7, 256)).astype(np.float32)
assert np.allclose(csr_matmul(*encode_csr(Wr), xr), xr @ Wr.T, atol=1e-5)
assert np.allclose(csr_matmul(*encode_csr(Wr), xr, max_elements=5000), xr @ Wr.T, atol=1e-5)   # in chunks
print("✓ csr_matmul equals the dense product, empty rows included, in one piece or in chunks")

# %% [markdown]
# ### Measured: dense vs masked vs structured vs CSR
#
# One wide layer, `Linear(1024, 1024)` (the digits layers are so small that Python overhead
# hides everything), at batch 1 (one request at a time) and 64 (throughput). **masked**: the
# dense layer with zeros in it; **structured**: a dense layer with `(1 - s)` of the rows (FLOP
# ratio `1/(1-s)`); **CSR**: `SparseLinear` (given, `sparse_dev.py`), which stores the masked
# layer in CSR and runs your `csr_matmul`. `tito bench 18` (table 4) adds whole models.

# %%
check_export()
from tinytorch.compression.sparse import SparseLinear   # given code

bench_kw = dict(warmup=1, repeats=5)
wide = Linear(1024, 1024, rng=0)
speed = {}
print(f"speedup over the dense layer {'masked':>9} {'structured':>11} {'(FLOP ratio)':>13} {'CSR':>7}")
for batch in (1, 64):
    xw = Tensor(np.random.default_rng(0).random((batch, 1024)).astype(np.float32))
    for s in (0.5, 0.9, 0.99):
        masked = copy.deepcopy(wide)
        apply_mask(masked.weight, magnitude_mask(masked.weight.data, s))
        rows_kept = 1024 - round(s * 1024)
        variants = {"masked": masked, "structured": Linear(1024, rows_kept, rng=0),
                    "csr": SparseLinear.from_linear(masked)}
        # The dense time is measured again next to every row: clock speed and cache state drift.
        dense_time = benchmark_inference(wide, xw, **bench_kw)["median"]
        r = speed[batch, s] = {name: dense_time / benchmark_inference(layer, xw, **bench_kw)["median"]
                               for name, layer in variants.items()}
        print(f"batch {batch:>2}, sparsity {s:>4.0%}: {r['masked']:>10.2f}x {r['structured']:>10.2f}x "
              f"{1024 / rows_kept:>12.1f}x {r['csr']:>6.2f}x")

# %% [markdown]
# **Why.** A dense matmul streams contiguous memory through a tuned BLAS kernel, reusing each
# weight for the whole batch; the masked layer is exactly that, zeros included. CSR does an
# indirect load (`x[indices]`) per stored weight, reusing nothing, so it wins only at very high
# sparsity, later at batch 64 than 1. Structured pruning leaves a smaller *dense* layer: at batch
# 64 it follows the FLOP ratio until per-call costs dominate; at batch 1 memory and overhead cap
# it. On a busy machine one row can be off by 2-3x; `tito bench 18` uses interleaved medians.

# %% [markdown]
# ## 11. The three systems questions, answered with our numbers
#
# The third question compares pruning with the other way to a small model: a small dense one,
# trained here from the labels (Module 20's distillation trains it from the big model; on the
# clean digits both do as well, as Module 20 measures).

# %%
import textwrap

small = Sequential(Linear(64, 32, rng=0), ReLU(), Linear(32, 10, rng=0))
train_digits_model(small, seed=0)
small_b = save_dense(small, WORKDIR / "small.ttcz")
small_a = evaluate(load_compressed(WORKDIR / "small.ttcz"), test_flat)
pruned_b, _, pruned_a, _ = file_results["95%, delta 6-bit, INT8"]
X_test = Tensor(np.concatenate([X.data for X, _ in test_flat]))   # all 360 test digits in one batch
dense_us, pruned_us, small_us = (benchmark_inference(model, X_test, **bench_kw)["median"] * 1e6
                                 for model in (mlp, pruned[0.95], small))
ticket, reinit = tickets["rewound to the original init"], tickets["random re-init"]
answers = {
    "1. Lottery tickets: why can pruned networks retrain to full accuracy?": (
        f"Dense: {mlp_acc:.1%}. Iteratively pruned to 90% and 95%: {runs[0.9, 'iterative']['accuracy']:.1%} "
        f"and {runs[0.95, 'iterative']['accuracy']:.1%}. The 90% mask trained from the original initialisation: "
        f"{ticket:.1%}; from a random one: {reinit:.1%}. The network has far more weights than the task needs; "
        "overparameterisation makes it easy for gradient descent to find the small subnetwork that does the work."),
    "2. Structured vs unstructured: why no speedup, and when is sparse computation faster?": (
        f"At 90% sparsity the masked layer runs at {speed[1, 0.9]['masked']:.2f}x dense (its zeros are multiplied), "
        f"CSR at {speed[1, 0.9]['csr']:.2f}x (batch 1) and {speed[64, 0.9]['csr']:.2f}x (batch 64), the structured "
        f"layer at {speed[1, 0.9]['structured']:.1f}x and {speed[64, 0.9]['structured']:.1f}x. At 99% CSR runs "
        f"at {speed[1, 0.99]['csr']:.2f}x and {speed[64, 0.99]['csr']:.2f}x: indirect loads cost more than the skipped work, "
        f"so unstructured sparsity pays on disk ({best_ratio:.0f}x smaller file) and, in time, only at extreme "
        "sparsity, small batches or on sparse hardware. Structured pruning leaves a smaller dense layer."),
    "3. Distillation vs pruning: when to use which, and can they be combined?": (
        f"95% pruned + INT8: {pruned_b:,} bytes, {pruned_a:.1%}, {pruned_us:.0f} us for 360 digits (dense: "
        f"{dense_bytes:,} bytes, {dense_us:.0f} us). A small dense model 64-32-10: {small_b:,} bytes, {small_a:.1%}, "
        f"{small_us:.0f} us. Prune when the "
        "architecture is fixed or the budget is bytes on disk; train (distil) a small model when FLOPs or latency "
        "matter and there is data. They combine: a small model can be pruned and quantized too."),
}
for question, answer in answers.items():
    print(question)
    print(textwrap.fill(answer, width=96, initial_indent="   ", subsequent_indent="   "), "\n")
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f}s")
_workdir.cleanup()  # the files were only written to be measured
