# %% [markdown]
# # Module 20: Low-rank factorization and distillation
#
# > Two ways to make a model smaller that pruning cannot: a thinner dense layer (low-rank
# > factorization) and a new small model taught by the big one (knowledge distillation), measured
# > against pruning and combined with it.
#
# Module 18 made a trained model sparse: most of its weights became zeros, the file shrank, and
# the model ran exactly as fast as before. This module makes models that are *dense and small*,
# so the saved FLOPs are real.
#
# | You build | It answers | Measured on the digits |
# | --- | --- | --- |
# | `rank_for_energy`, `low_rank_factorize`, `choose_ranks` | how to make a layer thinner instead of sparser | weights, FLOPs, error and accuracy per rank |
# | `soft_targets`, `distillation_loss`, `distill` | how a small model learns from a big one | a student from labels vs distilled, and without labels |
# | (with module 18's pruning) | pruning, low rank or distillation, and all together | one table: bytes, FLOPs, latency, accuracy |
#
# Every exercise is a function whose body you write between the markers; the cell after it
# tests it. Run `tito test 20` to run this notebook and the graded tests, `tito test 20 --task ID`
# for one exercise.

# %%
# Timings below must be repeatable on a shared 2-core machine: importing tinytorch before NumPy
# sets one BLAS thread (tinytorch/__init__.py; tito sets it for the processes it starts).
import tinytorch  # noqa: F401

# %%
#| default_exp compression.lowrank

# %% [markdown]
# The experiments train small models on the digits and reuse module 18's pruning and file format.
# Set `TINYTORCH_FULL=1` for the longer version (more energies, three seeds, more timing repeats).

# %%
import copy
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import Adam
from tinytorch.core.training import evaluate, fit, predict
from tinytorch.core.models import digits_mlp, train_digits_model
from tinytorch.data.loader import digits_loaders
from tinytorch.core.models import digits_cnn
from tinytorch.compression.pipeline import compress
from tinytorch.compression.inference import benchmark_inference
from tinytorch.compression.prune import (iterative_prune, magnitude_prune, measure_sparsity, polynomial_schedule,
                                         prunable_layers, prunable_weights)
from tinytorch.compression.sparse import to_sparse
from tinytorch.compression.storage import load_compressed

FULL = os.environ.get("TINYTORCH_FULL", "0") == "1"
NOTEBOOK_START = time.perf_counter()
_workdir = tempfile.TemporaryDirectory(prefix="tinytorch-lowrank-")  # gone when Python exits
WORKDIR = Path(_workdir.name)
FINETUNE_LR = 3e-3   # as in module 18: recovers from compression faster than Adam's usual 1e-3
bench_kw = dict(warmup=1, repeats=15 if FULL else 5)


def n_params(model) -> int:
    return sum(p.size for p in model.parameters())


start = time.perf_counter()
mlp = digits_mlp(seed=0)
mlp_acc = train_digits_model(mlp, seed=0)["val_acc"][-1]
train_flat, test_flat = digits_loaders(batch_size=64, seed=0)
X_test = Tensor(np.concatenate([X.data for X, _ in test_flat]))
print(f"teacher trained in {time.perf_counter() - start:.1f}s: MLP test accuracy {mlp_acc:.2%}")

# %% [markdown]
# ## 1. Low-rank factorization: a thinner dense layer
#
# Pruning zeroes single weights and keeps every matrix at its full shape; structured pruning
# removes whole neurons. A third way keeps every neuron but sends the layer's signal through a
# narrow **bottleneck**. Replace `Linear(in, out)`, whose weight `W` is `out x in`, by two layers
#
# `x -> Linear(in, r, bias=False) -> Linear(r, out) -> y`
#
# with weights `A` (`r x in`) and `B` (`out x r`), so that `B @ A ≈ W`. Weights and multiply-adds
# per sample drop from `in * out` to `r * (in + out)`: the MLP's 256 -> 128 layer at rank 16
# keeps 6,144 of its 32,768 weights. Below the **break-even rank** `in * out / (in + out)` (85 for
# that layer) it saves; above it costs more. Both factors are ordinary dense layers: no index to
# store and no special kernel, so the saved FLOPs are real FLOPs.
#
# **Which `A` and `B`?** The singular value decomposition `W = U diag(s) Vᵀ` (singular values
# `s_1 >= s_2 >= ... >= 0`) truncated to its first `r` terms is the best rank-`r` approximation
# of `W` in the Frobenius norm (Eckart-Young), and its error is known in advance:
#
# $$\frac{\lVert W - W_r\rVert_F}{\lVert W\rVert_F} = \sqrt{\frac{\sum_{i>r} s_i^2}{\sum_i s_i^2}} = \sqrt{1 - E(r)},
# \qquad E(r) = \frac{\sum_{i\le r} s_i^2}{\sum_i s_i^2}.$$
#
# `E(r)` is the **energy** that rank `r` keeps. We split each singular value evenly between the
# factors, `A = diag(√s_r) V_rᵀ` and `B = U_r diag(√s_r)`, so neither factor has much larger
# numbers than the other (that helps when we fine-tune them). The bias stays on the second
# layer.
#
# Worked example: `s = [4, 3]` has squares 16 and 9, so `E(1) = 16/25 = 0.64` and `E(2) = 1`. The
# smallest rank keeping 60% of the energy is 1; keeping 65% needs 2.

# %%
#| export compression.lowrank
import copy

import numpy as np

from tinytorch.core.layers import Linear, Module, Sequential
from tinytorch.core.checks import is_int, is_real
from tinytorch.compression.structured import count_macs

# %%
#| export compression.lowrank
def _check_energy(energy) -> float:
    "A real number in (0, 1]: the fraction of the squared singular values to keep."
    ok = is_real(energy)
    if not ok or not 0.0 < energy <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    return float(energy)

# %% [markdown]
# ### Exercise: `rank_for_energy`
#
# Sort the singular values in decreasing order (`np.linalg.svd` returns them sorted, but accept
# any order), take the cumulative sum of their squares and find the first rank whose fraction
# reaches `energy`. `np.searchsorted` finds that position in a sorted array without a loop.
# Divide by the *last* cumulative sum, not by a separate `.sum()`: the two can differ in the
# last bit, and `energy=1.0` must never ask for more ranks than there are singular values. A
# zero matrix needs no rank at all, but a layer needs at least one: return 1.

# %% nbgrader={"grade": false, "grade_id": "rank-for-energy", "locked": false, "solution": true, "schema_version": 3}
#| export compression.lowrank
def rank_for_energy(singular_values, energy: float) -> int:
    "Smallest rank r whose r largest singular values hold at least `energy` of the sum of squared singular values."
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"singular_values must be a non-empty 1-d array, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("singular_values must be finite and non-negative (check the weights for NaN)")
    energy = _check_energy(energy)
    ### BEGIN SOLUTION
    squares = np.sort(s)[::-1] ** 2
    cumulative = np.cumsum(squares)
    if cumulative[-1] == 0:
        return 1
    kept = cumulative / cumulative[-1]          # kept[-1] is exactly 1.0
    return int(np.searchsorted(kept, energy, side="left")) + 1
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "rank-for-energy-test", "locked": true, "points": 2, "solution": false, "schema_version": 3}
assert rank_for_energy([4.0, 3.0], 0.6) == 1 and rank_for_energy([4.0, 3.0], 0.64) == 1     # the worked example
assert rank_for_energy([3.0, 4.0], 0.65) == 2                                                 # any order
assert [rank_for_energy([1.0] * 4, e) for e in (0.25, 0.5, 0.51, 1.0)] == [1, 2, 3, 4]
assert rank_for_energy(np.zeros(3), 0.9) == 1 and isinstance(rank_for_energy([2.0, 1.0], 1.0), int)
for bad in (0.0, 1.5, float("nan")):
    try:
        rank_for_energy([1.0, 1.0], bad)
        raise AssertionError(f"energy {bad} must be rejected")
    except ValueError:
        pass
print("✓ rank_for_energy finds the smallest rank that keeps the requested energy")

# %% [markdown]
# ### Exercise: `low_rank_factorize`
#
# `np.linalg.svd(w, full_matrices=False)` returns `U` (`out x k`), `s` (`k`) and `Vt`
# (`k x in`) with `k = min(in, out)`; compute it in float64. Take `r` from `rank` or from
# `rank_for_energy(s, energy)`, build the two `Linear` layers (pass `rng=np.random.default_rng(0)`
# so building them does not consume the library's random stream; their values are overwritten
# anyway), write `A` and `B` into their weights, copy the bias, and return
# `Sequential(first, second)`. The layer you were given must not change.

# %% nbgrader={"grade": false, "grade_id": "low-rank-factorize", "locked": false, "solution": true, "schema_version": 3}
#| export compression.lowrank
def low_rank_factorize(layer, rank: int | None = None, energy: float | None = None) -> Sequential:
    """`Sequential(Linear(in, r, bias=False), Linear(r, out))` computing the rank-`r` truncated SVD of `layer`.

    Give exactly one of `rank` (1 to min(in, out)) or `energy` (in (0, 1]: the smallest rank that keeps
    this fraction of the squared singular values). The square roots of the singular values go to both
    factors; the bias goes to the second layer. `layer` is not changed (a pruning mask on it is ignored:
    the factors are dense). Raises ValueError for a bad rank or energy and for NaN or infinite weights.
    """
    if not isinstance(layer, Linear):
        raise TypeError(f"low_rank_factorize needs a Linear layer, got {type(layer).__name__}")
    if (rank is None) == (energy is None):
        raise ValueError(f"give exactly one of rank or energy, got rank={rank!r} and energy={energy!r}")
    full = min(layer.in_features, layer.out_features)
    if rank is not None:
        if not is_int(rank) or not 1 <= rank <= full:
            raise ValueError(f"rank must be an int in [1, {full}] (= min(in_features, out_features)), got {rank!r}")
    else:
        _check_energy(energy)
    if not np.all(np.isfinite(layer.weight.data)):
        raise ValueError("the layer's weight contains NaN or infinite values; they have no SVD")
    ### BEGIN SOLUTION
    U, s, Vt = np.linalg.svd(layer.weight.data.astype(np.float64), full_matrices=False)
    r = int(rank) if rank is not None else rank_for_energy(s, energy)
    root = np.sqrt(s[:r])
    rng = np.random.default_rng(0)
    first = Linear(layer.in_features, r, bias=False, rng=rng)
    second = Linear(r, layer.out_features, bias=layer.bias is not None, rng=rng)
    first.weight.data[...] = root[:, None] * Vt[:r]        # A = diag(sqrt(s_r)) V_r^T: (r, in)
    second.weight.data[...] = U[:, :r] * root              # B = U_r diag(sqrt(s_r)): (out, r)
    if layer.bias is not None:
        second.bias.data[...] = layer.bias.data
    return Sequential(first, second)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "low-rank-factorize-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
diag = Linear(2, 2, rng=0)
diag.weight.data[...] = [[3.0, 0.0], [0.0, 1.0]]
one = low_rank_factorize(diag, rank=1)
assert one[0].weight.shape == (1, 2) and one[0].bias is None and one[1].weight.shape == (2, 1)
assert np.allclose(one[1].weight.data @ one[0].weight.data, [[3.0, 0.0], [0.0, 0.0]])          # keeps s_1 = 3
assert np.allclose(np.abs(one[0].weight.data), [[np.sqrt(3.0), 0.0]])                          # sqrt(s) in each factor
assert np.array_equal(one[1].bias.data, diag.bias.data) and diag.weight.data[1, 1] == 1.0       # bias moved, layer kept
assert low_rank_factorize(diag, energy=0.9)[0].out_features == 1                               # E(1) = 9/10
assert low_rank_factorize(diag, energy=0.91)[0].out_features == 2
full_rank = low_rank_factorize(mlp[2], rank=128)                                                 # 256 -> 128: full rank
xs = Tensor(np.random.default_rng(0).random((5, 256)).astype(np.float32))
assert np.allclose(full_rank(xs).data, mlp[2](xs).data, atol=1e-4)
for bad in ({}, {"rank": 3}, {"rank": 0}, {"rank": 1, "energy": 0.5}, {"energy": 0.0}):
    try:
        low_rank_factorize(diag, **bad)
        raise AssertionError(f"{bad} must be rejected")
    except ValueError:
        pass
print("✓ low_rank_factorize: truncated SVD in two Linear layers; full rank reproduces the layer")

# %% [markdown]
# ### The singular values of the trained MLP
#
# How much of each trained layer do a few ranks hold? The curves show the energy `E(r)` of
# each weight matrix; the dashed line is the break-even rank, beyond which factorizing costs
# more than it saves.

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for name, layer in prunable_layers(mlp):
    s = np.linalg.svd(layer.weight.data.astype(np.float64), compute_uv=False)
    energy_curve = np.cumsum(s ** 2) / np.sum(s ** 2)
    line, = ax.plot(np.arange(1, s.size + 1), energy_curve, label=f"layer {name}: {layer.out_features}x{layer.in_features}")
    even = layer.in_features * layer.out_features / (layer.in_features + layer.out_features)
    ax.axvline(even, color=line.get_color(), linestyle="--", linewidth=0.8)
    print(f"layer {name}: rank for 50/80/90/99% energy = "
          f"{[rank_for_energy(s, e) for e in (0.5, 0.8, 0.9, 0.99)]} of {s.size}; break-even rank {even:.1f}")
ax.set_xscale("log")
ax.set_xlabel("rank r")
ax.set_ylabel("energy E(r)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The spectra are far from a cliff: 90% of the energy needs a third to a half of the possible rank
# in the first two layers. Energy is a *conservative* guide, though: it measures how well `W` is
# reproduced for every possible input, while the network only ever sees the inputs that the
# digits and the previous layers produce. The per-rank measurement below shows how conservative.
#
# ### Exercise: `choose_ranks`
#
# Choose a rank for each layer from its own singular values: for every `Linear` in
# `model.named_modules()`, the smallest rank keeping `energy` (`np.linalg.svd(w,
# compute_uv=False)` gives just the singular values), but only where factorizing saves weights,
# `r * (in + out) < in * out`. Return `{layer name: rank}`; a layer that would not shrink is left out.

# %% nbgrader={"grade": false, "grade_id": "choose-ranks", "locked": false, "solution": true, "schema_version": 3}
#| export compression.lowrank
def choose_ranks(model, energy: float) -> dict:
    "`{layer name: rank}`: for each Linear, the smallest rank keeping `energy`, where that saves weights."
    energy = _check_energy(energy)
    if not isinstance(model, Module):
        raise TypeError(f"expected a Module (e.g. a Sequential), got {type(model).__name__}")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, Linear)]
    if not linears:
        raise ValueError(f"model has no Linear layer to factorize: {type(model).__name__}")
    ### BEGIN SOLUTION
    ranks = {}
    for name, layer in linears:
        s = np.linalg.svd(layer.weight.data.astype(np.float64), compute_uv=False)
        r = rank_for_energy(s, energy)
        if r * (layer.in_features + layer.out_features) < layer.in_features * layer.out_features:
            ranks[name] = r
    return ranks
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "choose-ranks-test", "locked": true, "points": 2, "solution": false, "schema_version": 3}
net = Sequential(Linear(4, 4, rng=0), ReLU(), Linear(4, 2, rng=0))
net[0].weight.data[...] = np.diag([5.0, 1.0, 1.0, 1.0])      # E(1) = 25/28 = 0.89, E(2) = 26/28 = 0.93
net[2].weight.data[...] = [[1.0, 0, 0, 0], [0, 1.0, 0, 0]]   # E(1) = 0.5, E(2) = 1
assert choose_ranks(net, 0.5) == {"0": 1, "2": 1}            # 1 * (4 + 4) < 16 and 1 * (4 + 2) < 8: both shrink
assert choose_ranks(net, 0.85) == {"0": 1}                   # "2" needs rank 2: 2 * 6 = 12 > 8 weights
assert choose_ranks(net, 0.9) == {}                          # "0" needs rank 2: 2 * 8 = 16, no saving
mlp_ranks = choose_ranks(mlp, 0.9)
for name, layer in prunable_layers(mlp):
    r = rank_for_energy(np.linalg.svd(layer.weight.data.astype(np.float64), compute_uv=False), 0.9)
    assert mlp_ranks.get(name) == (r if r * (layer.in_features + layer.out_features) < layer.weight.size else None)
print("✓ choose_ranks picks each layer's energy rank and skips layers that would not shrink")

# %% [markdown]
# Two helpers, given: `factorize_model(model, ranks)` returns a copy of a `Sequential` in which
# every layer named in `ranks` is replaced by its factorization (a nested `Sequential`, so
# `named_parameters()` gives names like `"2.0.weight"`), and `count_flops(model, input_shape)`
# counts the floating-point operations of one sample's forward pass: 2 per multiply-add of every
# `Linear` and `Conv2d` (biases, activations and pooling are cheap and not counted). With
# `nonzero=True` only nonzero weights count: the work an ideal sparse kernel would do.

# %%
#| export compression.lowrank
def factorize_model(model, ranks: dict):
    "A copy of a Sequential with each Linear named in `ranks` (`{name: rank}`) replaced by `low_rank_factorize`."
    if not isinstance(model, Sequential):
        raise TypeError(f"factorize_model needs a Sequential, got {type(model).__name__}")
    names = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    unknown = [name for name in ranks if name not in names]
    if unknown:
        raise ValueError(f"no Linear layer named {unknown}; Linear layers are {names}")
    replaced = set()

    def rebuild(module, name: str):
        if isinstance(module, Sequential):
            # A new container in the same order: assigning into the old one would move the layer to the end.
            return Sequential({child: rebuild(layer, f"{name}.{child}" if name else child)
                               for child, layer in module.named_children()})
        if name in ranks:
            replaced.add(name)
            return low_rank_factorize(module, rank=ranks[name])
        return copy.deepcopy(module)

    new = rebuild(model, "")
    missed = sorted(set(ranks) - replaced)
    if missed:
        raise ValueError(f"layers {missed} sit inside a container that is not a Sequential; "
                         "factorize_model only rebuilds Sequential containers")
    return new


def count_flops(model, input_shape, nonzero: bool = False) -> int:
    """Floating-point operations of one sample's forward pass: 2 per multiply-add of each Linear, Conv2d
    and sparse layer (one with `nnz`), counted by module 18's `count_macs`. `input_shape` has no batch
    dimension, e.g. (64,) or (1, 8, 8). `nonzero=True` counts only the nonzero weights."""
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    return 2 * count_macs(model, input_shape, nonzero=nonzero)

# %%
thin = factorize_model(mlp, {"2": 16})
assert [type(layer).__name__ for layer in thin] == ["Linear", "ReLU", "Sequential", "ReLU", "Linear"]
assert [name for name, _ in thin.named_parameters()][2:5] == ["2.0.weight", "2.1.weight", "2.1.bias"]
assert mlp[2].weight.shape == (128, 256), "the original must be untouched"
assert count_flops(mlp, (64,)) == 2 * (64 * 256 + 256 * 128 + 128 * 10) == 100_864
assert count_flops(thin, (64,)) == 2 * (64 * 256 + 16 * (256 + 128) + 128 * 10)
assert count_flops(digits_cnn(seed=0), (1, 8, 8)) == 2 * (64 * 16 * 9 + 16 * 32 * 16 * 9 + 128 * 10)             # 8x8 and 4x4 maps
sparse_net = magnitude_prune(copy.deepcopy(mlp), 0.9)
assert count_flops(sparse_net, (64,), nonzero=True) == 2 * sum(int(np.count_nonzero(w.data)) for _, w in prunable_weights(sparse_net))
assert count_flops(to_sparse(sparse_net), (64,)) == count_flops(sparse_net, (64,), nonzero=True)
print("✓ factorize_model rebuilds the Sequential; count_flops counts Linear, Conv2d and sparse layers")

# %% [markdown]
# ### Measured: rank against weights, FLOPs, error and accuracy
#
# Factorize only the middle layer (256 -> 128, break-even rank 85) of the trained MLP at
# several ranks, without any fine-tuning. The error column is the relative Frobenius error
# `‖W - BA‖ / ‖W‖` measured on the product of the two factors (Eckart-Young says it equals
# `sqrt(1 - E(r))`).

# %%
w_mid = mlp[2].weight.data.astype(np.float64)
s_mid = np.linalg.svd(w_mid, compute_uv=False)
rank_rows = []
print(f"{'rank':>5} {'energy':>7} {'layer weights':>13} {'MLP FLOPs':>10} {'rel. error':>10} {'accuracy':>9}")
for r in (2, 4, 8, 16, 32, 64, 85, 128):
    model_r = factorize_model(mlp, {"2": r})
    product = model_r[2][1].weight.data.astype(np.float64) @ model_r[2][0].weight.data
    error = np.linalg.norm(w_mid - product) / np.linalg.norm(w_mid)
    assert np.isclose(error, np.sqrt(max(0.0, 1 - np.sum(s_mid[:r] ** 2) / np.sum(s_mid ** 2))), atol=1e-4)
    rank_rows.append((r, r * (256 + 128), count_flops(model_r, (64,)), error, evaluate(model_r, test_flat)))
    print(f"{r:>5} {np.sum(s_mid[:r] ** 2) / np.sum(s_mid ** 2):>7.1%} {r * (256 + 128):>13,} "
          f"{rank_rows[-1][2]:>10,} {error:>10.3f} {rank_rows[-1][4]:>9.1%}")
print(f"unfactorized: {w_mid.size:,} weights, {count_flops(mlp, (64,)):,} FLOPs, accuracy {evaluate(mlp, test_flat):.1%}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([row[0] for row in rank_rows], [row[4] for row in rank_rows], "o-", label="test accuracy")
ax.plot([row[0] for row in rank_rows], [row[3] for row in rank_rows], "s--", label="relative error of W")
ax.set_xscale("log")
ax.set_xlabel("rank of layer 2 (256 -> 128)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The accuracy holds down to a rank of about 8 to 16, where the matrix itself is reproduced
# with an error of 45-55%: the network does not need all of `W`, only what `W` does to the
# activations the digits produce. Below that it collapses. So the energy rule is safe but
# wasteful, and fine-tuning (the factors are ordinary trainable layers) recovers the rest.
#
# ### Measured: ranks from the energy, then fine-tuning
#
# `choose_ranks` at several energies, the whole model factorized (every layer that shrinks), before
# and after 10 epochs of fine-tuning (Adam, learning rate 3e-3 with cosine decay). We keep the
# model at `LOWRANK_ENERGY` for the comparison in Section 3.

# %%
from tinytorch.core.optimizers import CosineLR

LOWRANK_ENERGY = 0.7
LOWRANK_EPOCHS = 10


def finetune_cosine(model, train, epochs: int, lr: float = FINETUNE_LR):
    "Fine-tune with Adam and a cosine-decayed learning rate; returns the model."
    optimizer = Adam(model.parameters(), lr=lr)
    fit(model, train, CrossEntropyLoss(), optimizer, epochs=epochs, progress=False,
        callbacks=[CosineLR(optimizer, epochs)])
    return model


lowrank_models = {}
start = time.perf_counter()
print(f"{'energy':>6}  {'ranks':<28} {'weights':>8} {'FLOPs':>8} {'before':>7} {'after':>7}")
for energy in ((0.6, 0.7, 0.8, 0.9) if FULL else (0.7, 0.8, 0.9)):
    chosen_ranks = choose_ranks(mlp, energy)
    model_e = factorize_model(mlp, chosen_ranks)
    before = evaluate(model_e, test_flat)
    after = evaluate(finetune_cosine(model_e, digits_loaders(batch_size=64, seed=1)[0], LOWRANK_EPOCHS), test_flat)
    lowrank_models[energy] = model_e
    print(f"{energy:>6.0%}  {str(chosen_ranks):<28} {n_params(model_e):>8,} {count_flops(model_e, (64,)):>8,} "
          f"{before:>7.1%} {after:>7.1%}")
print(f"dense MLP: {n_params(mlp):,} weights, {count_flops(mlp, (64,)):,} FLOPs, {mlp_acc:.1%}; "
      f"fine-tuning took {time.perf_counter() - start:.1f}s")

# %% [markdown]
# ## 2. Knowledge distillation: a small model that imitates the big one
#
# Pruning and factorizing carve a trained model down. **Distillation** (Hinton, Vinyals & Dean,
# 2015) trains a new, small **student** to imitate a trained **teacher**. Our student is a
# 64 -> 32 -> 10 MLP: 2,410 parameters, 21x fewer than the teacher, and about as many as the
# teacher keeps at 95% sparsity (2,522 weights and 394 biases).
#
# What does the student learn from the teacher that the labels do not say? The teacher's output
# for a `7` is not just "7": it is also "a bit like a 1, not at all like a 0". Those small
# probabilities are nearly invisible at the usual softmax; a **temperature** `T` makes them
# visible:
#
# $$p_i = \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)}$$
#
# `T = 1` is the ordinary softmax; larger `T` flattens the distribution (`T -> ∞`: uniform) but
# keeps the order of the classes.

# %%
#| export compression.distill
import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.checks import is_real
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import Adam
from tinytorch.core.training import fit, predict


def _check_temperature(T) -> float:
    ok = is_real(T)
    if not ok or not 0.0 < T < np.inf:  # NaN fails the comparison too
        raise ValueError(f"temperature T must be a positive, finite number, got {T!r}")
    return float(T)


def _check_alpha(alpha) -> float:
    ok = is_real(alpha)
    if not ok or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the distillation term), got {alpha!r}")
    return float(alpha)

# %% [markdown]
# ### Exercise: `soft_targets`
#
# The softmax of `logits / T` along the last axis, as a float64 array. Subtract each row's
# maximum before `np.exp` (Module 02's trick): `exp(1000)` overflows, the result does not change.

# %% nbgrader={"grade": false, "grade_id": "soft-targets", "locked": false, "solution": true, "schema_version": 3}
#| export compression.distill
def soft_targets(logits, T: float = 1.0) -> np.ndarray:
    "Softmax of `logits / T` over the last axis (float64): the teacher's softened class probabilities."
    T = _check_temperature(T)
    z = np.asarray(logits.data if isinstance(logits, Tensor) else logits, dtype=np.float64)
    if z.ndim == 0:
        raise ValueError("soft_targets needs logits with a class axis, got a scalar")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    ### BEGIN SOLUTION
    z = z / T
    z = z - z.max(axis=-1, keepdims=True)      # the largest becomes exp(0) = 1: no overflow
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "soft-targets-test", "locked": true, "points": 2, "solution": false, "schema_version": 3}
assert np.allclose(soft_targets([[0.0, np.log(3.0)]]), [[0.25, 0.75]])                        # T = 1: the softmax
assert np.allclose(soft_targets([[0.0, np.log(9.0)]], T=2.0), [[0.25, 0.75]])                 # 9^(1/2) = 3
assert np.allclose(soft_targets([[1000.0, 1000.0, 0.0]], T=1.0), [[0.5, 0.5, 0.0]])          # no overflow
p = soft_targets(Tensor(np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 5.0]])), T=4.0)
assert p.dtype == np.float64 and np.allclose(p.sum(axis=1), 1.0) and (p.argmax(axis=1) == [0, 2]).all()
assert np.allclose(soft_targets([[5.0, -5.0]], T=1e6), [[0.5, 0.5]], atol=1e-5)                 # T -> inf: uniform
print("✓ soft_targets: a stable softmax at temperature T")

# %%
digit_logits = predict(mlp, X_test[:1])
print(f"teacher's probabilities for one test digit (label {next(iter(test_flat))[1][0]}):")
for T in (1, 2, 4, 8):
    print(f"  T = {T}: " + " ".join(f"{p:5.3f}" for p in soft_targets(digit_logits, T)[0]))

# %% [markdown]
# ### The distillation loss
#
# The student's logits `z` are pushed towards the teacher's softened distribution `p = soft(z_t,
# T)` by the Kullback-Leibler divergence of its own softened distribution `q = soft(z, T)`, and
# towards the true labels by the usual cross-entropy; `alpha` mixes the two:
#
# $$L = \alpha \, T^2 \, \frac1N \sum_n \mathrm{KL}(p_n \,\|\, q_n) + (1 - \alpha)\, \mathrm{CE}(z, y),
# \qquad \mathrm{KL}(p \,\|\, q) = \sum_i p_i \log p_i - \sum_i p_i \log q_i .$$
#
# **Why `T²`?** The gradient of the KL term with respect to the student's logits is
# `(q - p) / T` per sample (the same `softmax - target` as cross-entropy, divided by `T` because
# the logits were). So
#
# $$\frac{\partial L}{\partial z_n} = \frac{1}{N}\Big(\alpha \, T \,(q_n - p_n) + (1 - \alpha)(\mathrm{softmax}(z_n) - \mathrm{onehot}(y_n))\Big).$$
#
# At a high temperature `q - p ≈ (z - z_t) / (C T)` (for logits centred on zero), so the soft
# gradient becomes `alpha (z - z_t) / (C N)`: matching logits, with a size that no longer depends on
# `T`. Without the `T²` it would fade like `1 / T²` and the hard labels would take over whenever
# you raise the temperature. `alpha = 0` is plain training on labels, `alpha = 1` needs no labels
# at all.
#
# ### Exercise: `distillation_loss`
#
# Build it from `Tensor` operations, so that autograd derives the gradient above for you:
#
# - the teacher's side is a constant: `p = soft_targets(teacher_logits, T)`, a plain array in the
#   student's dtype; its `Σ p log p` term is a number that only makes the loss a true KL (zero when
#   the student matches);
# - the student's side: a stable log-softmax of `student_logits * (1 / T)` (subtract the row
#   maximum as a constant array, then `z - log(sum(exp(z)))`, as in Module 04's cross-entropy);
# - the hard part: `CrossEntropyLoss()(student_logits, targets)` (skip it when `alpha == 1`:
#   `targets` may then be `None`).

# %% nbgrader={"grade": false, "grade_id": "distillation-loss", "locked": false, "solution": true, "schema_version": 3}
#| export compression.distill
def distillation_loss(student_logits, teacher_logits, targets=None, T: float = 2.0, alpha: float = 0.5) -> Tensor:
    """`alpha * T^2 * KL(soft(teacher, T) || soft(student, T)) + (1 - alpha) * CE(student, targets)`, a scalar Tensor.

    KL is summed over classes and averaged over the batch; the teacher's logits are a constant (no
    gradient reaches the teacher). `targets` (int class indices) may be None only when `alpha == 1`.
    Raises ValueError unless both logits have the same shape (N, C), and for missing targets.
    """
    if not isinstance(student_logits, Tensor):
        raise TypeError(f"student_logits must be a Tensor, got {type(student_logits).__name__}")
    teacher = np.asarray(teacher_logits.data if isinstance(teacher_logits, Tensor) else teacher_logits)
    if student_logits.ndim != 2 or teacher.shape != student_logits.shape:
        raise ValueError(f"student and teacher logits must both have shape (N, C), got "
                         f"{student_logits.shape} and {teacher.shape}")
    T, alpha = _check_temperature(T), _check_alpha(alpha)
    if targets is None and alpha < 1.0:
        raise ValueError(f"targets (class labels) are needed when alpha < 1, got alpha={alpha}")
    ### BEGIN SOLUTION
    hard = None if alpha == 1.0 else CrossEntropyLoss()(student_logits, targets)
    if alpha == 0.0:                                       # plain training on labels, exactly
        return hard
    p = soft_targets(teacher, T)
    log_p = np.log(np.where(p > 0, p, 1.0))                # p log p -> 0 where p underflowed to 0
    entropy_term = float(np.sum(p * log_p)) / len(p)       # sum p log p, averaged: a constant
    z = student_logits * (1.0 / T)
    z = z - z.data.max(axis=1, keepdims=True)              # a constant shift: stability only
    log_q = z - z.exp().sum(axis=1, keepdims=True).log()
    kl = -(log_q * p.astype(student_logits.data.dtype)).sum(axis=1).mean() + entropy_term
    soft = kl * (alpha * T * T)
    return soft if hard is None else soft + hard * (1.0 - alpha)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "distillation-loss-test", "locked": true, "points": 4, "solution": false, "schema_version": 3}
zs = np.array([[0.0, np.log(3.0)]])                                # student: softmax [1/4, 3/4]
zt = np.array([[0.0, 0.0]])                                        # teacher: [1/2, 1/2]
kl = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)           # KL(p || q) by hand
assert np.isclose(distillation_loss(Tensor(zs), zt, None, T=1.0, alpha=1.0).item(), kl)
ce = -np.log(0.75)                                                 # label 1
assert np.isclose(distillation_loss(Tensor(zs), zt, np.array([1]), T=1.0, alpha=0.25).item(), 0.25 * kl + 0.75 * ce)
assert np.isclose(distillation_loss(Tensor(2 * zs), 2 * zt, None, T=2.0, alpha=1.0).item(), 4 * kl)  # T^2 scaling
assert abs(distillation_loss(Tensor(zt), zt, None, T=3.0, alpha=1.0).item()) < 1e-6                  # student = teacher
# The gradient, by autograd, equals the formula above.
rng = np.random.default_rng(0)
z = Tensor(rng.normal(size=(4, 5)), requires_grad=True, dtype=np.float64)
t_logits, labels = rng.normal(size=(4, 5)) * 3, np.array([0, 3, 1, 4])
distillation_loss(z, t_logits, labels, T=3.0, alpha=0.7).backward()
q, p = soft_targets(z.data, 3.0), soft_targets(t_logits, 3.0)
onehot = np.eye(5)[labels]
assert np.allclose(z.grad, (0.7 * 3.0 * (q - p) + 0.3 * (soft_targets(z.data) - onehot)) / 4, atol=1e-10)
print("✓ distillation_loss: KL at temperature T scaled by T², mixed with cross-entropy; gradient checked")

# %% [markdown]
# ### Exercise: `distill`
#
# Training with a teacher is `fit` (Module 07) with another loss: for each `(X, y)` batch,
# `predict(teacher, X)` gives the teacher's logits (eval mode, no gradients recorded, the
# teacher's modes restored), and the loss is `distillation_loss` of the student's logits against
# them. `fit` hands a loss the batch's inputs when you pass `loss_needs_inputs=True`: it then calls
# `loss_fn(logits, y, X)`. So `distill` writes that loss function and calls `fit` with it, one
# optimizer for the whole run (`Adam(student.parameters(), lr=lr)` unless one is given), and
# passes on `epochs`, `val_loader`, `progress` and `callbacks` (`desc="distilling"` names the
# bar). `fit` returns the history `{"loss", "train_acc", "val_acc"}`, one entry per epoch.
#
# With `alpha = 1` a batch's labels may be `None`: distillation needs no labels (its
# `train_acc` is then `None`). With `alpha = 0` the teacher's logits go unused: skip asking it.

# %% nbgrader={"grade": false, "grade_id": "distill", "locked": false, "solution": true, "schema_version": 3}
#| export compression.distill
def distill(student, teacher, train_loader, epochs: int = 1, T: float = 2.0, alpha: float = 0.5,
            optimizer=None, lr: float = 1e-3, val_loader=None, progress=None, callbacks=()) -> dict:
    """Train `student` to imitate `teacher` on `train_loader`'s batches with `distillation_loss`; the teacher
    is not changed. Returns `{"loss", "train_acc", "val_acc"}`, one entry per epoch. Raises ValueError
    unless student and teacher are different models, (from `distillation_loss`) for missing targets, and
    (from `fit`) for a loader that yields no batches ("train_loader yielded no batches")."""
    T, alpha = _check_temperature(T), _check_alpha(alpha)
    if student is teacher:
        raise ValueError("student and teacher must be different models (distill into a new, smaller model)")
    ### BEGIN SOLUTION
    if optimizer is None:
        optimizer = Adam(student.parameters(), lr=lr)

    def loss_fn(logits, y, X):
        # alpha = 0 is training on labels: the teacher's outputs would be unused
        teacher_logits = predict(teacher, X) if alpha > 0 else np.zeros(logits.shape)
        return distillation_loss(logits, teacher_logits, y, T=T, alpha=alpha)

    return fit(student, train_loader, loss_fn, optimizer, epochs=epochs, val_loader=val_loader,
               progress=progress, callbacks=callbacks, loss_needs_inputs=True, desc="distilling")
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "distill-test", "locked": true, "points": 3, "solution": false, "schema_version": 3}
Xd = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
tiny_teacher = Sequential(Linear(6, 16, rng=1), ReLU(), Linear(16, 3, rng=2))
tiny_teacher[2].weight.data *= 4                                          # confident, learnable targets
teacher_before = copy.deepcopy(tiny_teacher.state_dict())
unlabeled = [(Tensor(Xd[i:i + 32]), None) for i in range(0, 96, 32)]      # alpha = 1: no labels needed
tiny_student = Sequential(Linear(6, 3, rng=3))
agree = lambda: np.mean(predict(tiny_student, Xd).argmax(1) == predict(tiny_teacher, Xd).argmax(1))
before = agree()
hist = distill(tiny_student, tiny_teacher, unlabeled, epochs=30, T=2.0, alpha=1.0, lr=0.05, progress=False)
assert len(hist["loss"]) == 30 and hist["train_acc"] == [None] * 30 and hist["val_acc"] == [None] * 30
assert hist["loss"][-1] < hist["loss"][0] and agree() > max(before, 0.85), (before, agree())
assert all(np.array_equal(v, tiny_teacher.state_dict()[k]) for k, v in teacher_before.items()), "the teacher must not change"
print(f"✓ distill: the student agrees with the teacher on {agree():.0%} of the inputs (before: {before:.0%}), without labels")

# %% [markdown]
# ### Measured: distilled student vs the same student trained on labels
#
# The same student architecture, initial weights, batch order and recipe (Adam, learning rate
# 0.01 with cosine decay, 20 epochs), once on the labels alone (`alpha = 0`, which is exactly
# cross-entropy training) and once distilled from the trained MLP (`T = 2`, `alpha = 0.5`). One
# test image is 0.28 points; `TINYTORCH_FULL=1` averages three seeds.

# %%
KD_T, KD_ALPHA, KD_EPOCHS, KD_HIDDEN = 2.0, 0.5, 20, 32
KD_SEEDS = (0, 1, 2) if FULL else (0,)


def make_student(seed: int = 0, hidden: int = KD_HIDDEN) -> Sequential:
    "The student: 64 -> hidden -> 10."
    rng = np.random.default_rng(seed)
    return Sequential(Linear(64, hidden, rng=rng), ReLU(), Linear(hidden, 10, rng=rng))


def train_student(alpha: float, seed: int = 0, loader=None, epochs: int = KD_EPOCHS) -> Sequential:
    "A fresh student trained by `distill` from the MLP (alpha = 0: on the labels only)."
    student = make_student(seed)
    loader = digits_loaders(batch_size=64, seed=seed)[0] if loader is None else loader
    optimizer = Adam(student.parameters(), lr=1e-2)
    distill(student, mlp, loader, epochs=epochs, T=KD_T, alpha=alpha, optimizer=optimizer,
            progress=False, callbacks=[CosineLR(optimizer, epochs)])
    return student


start = time.perf_counter()
kd_students, kd_acc = {}, {}
for label, alpha in (("labels only", 0.0), ("distilled", KD_ALPHA)):
    accs = []
    for seed in KD_SEEDS:
        student = train_student(alpha, seed)
        accs.append(evaluate(student, test_flat))
        kd_students.setdefault(label, student)          # the first seed's student goes into Section 3
    kd_acc[label] = float(np.mean(accs))
print(f"student 64 -> {KD_HIDDEN} -> 10 ({n_params(kd_students['distilled']):,} parameters), "
      f"{len(KD_SEEDS)} seed(s), {time.perf_counter() - start:.1f}s: labels only {kd_acc['labels only']:.1%}, "
      f"distilled (T={KD_T:g}, alpha={KD_ALPHA:g}) {kd_acc['distilled']:.1%}; teacher {mlp_acc:.1%}")

# %% [markdown]
# On the full, clean digits training set the teacher's soft targets do **not** beat the labels:
# in our runs the distilled student is level with or a few tenths of a point behind the one trained
# on labels, and with `T = 4` or `8` it fell further behind (a 32-neuron student has no capacity
# to spare for the teacher's tiny probabilities). The teacher was trained
# on the same 1,437 images and fits them almost perfectly, so its outputs on them say little
# that the labels do not.
#
# ### Where distillation wins: data without labels
#
# The teacher's real gift is that it can label data nobody labelled. Suppose only 100 of the
# 1,437 training images had labels. Train the student on those 100 (cross-entropy, as many
# optimizer steps as the other runs), or let the teacher label all 1,437 images and distil with
# `alpha = 1`: the student never sees a single label.

# %%
from tinytorch.data.loader import DataLoader, TensorDataset, load_digits

X_train_all, y_train_all = load_digits("train")
few = np.random.default_rng(0).permutation(len(y_train_all))[:100]
few_loader = DataLoader(TensorDataset(X_train_all[few], y_train_all[few]), batch_size=64, shuffle=True, seed=0)
steps = KD_EPOCHS * len(digits_loaders(batch_size=64, seed=0)[0])           # the same number of updates
few_student = train_student(0.0, loader=few_loader, epochs=steps // len(few_loader))
no_labels = [(X, None) for X, _ in digits_loaders(batch_size=64, seed=0)[0]]  # the labels are thrown away
teacher_labelled = train_student(1.0, loader=no_labels)
scarce = {"100 labelled images": evaluate(few_student, test_flat),
          "1,437 images labelled by the teacher": evaluate(teacher_labelled, test_flat)}
for label, acc in scarce.items():
    print(f"student trained on {label:<37}: {acc:.1%}")

# %% [markdown]
# ## 3. Pruning, low rank, distillation, and all of them together
#
# One table, every row a model on the digits test set, measured the same way:
#
# - **bytes**: the size of the file `compress` / `save_dense` writes (module 18's format), with the
#   indices and the header paid for;
# - **FLOPs** per digit as the model runs (our dense kernels multiply the zeros too), and the
#   nonzero FLOPs an ideal sparse kernel would need;
# - **latency**: `benchmark_inference` (median) on one digit and on the 360 test digits, in µs,
#   of the model that actually runs (a compressed file is decompressed to float32 first: NumPy has
#   no INT8 matrix product);
# - **accuracy** of the model loaded back from its file.
#
# The rows: the dense teacher; pruning alone (module 18's recipe: 95% iterative, FP32 values and
# 8-bit relative indices), and with INT8 values; low rank alone (the `LOWRANK_ENERGY` model of
# Section 1); the student from labels and distilled (Section 2); and the combination:
# the distilled student pruned to `KD_SPARSITY` iteratively, with the distillation loss as the
# fine-tuning loss, then stored with INT8 values.

# %%
KD_SPARSITY, KD_PRUNE_STEPS = 0.7, 5
start = time.perf_counter()
combined = copy.deepcopy(kd_students["distilled"])
combined_opt = Adam(combined.parameters(), lr=FINETUNE_LR)
for target in polynomial_schedule(0.0, KD_SPARSITY, KD_PRUNE_STEPS):
    magnitude_prune(combined, float(target))
    distill(combined, mlp, digits_loaders(batch_size=64, seed=1)[0], epochs=2, T=KD_T, alpha=KD_ALPHA,
            optimizer=combined_opt, progress=False)
print(f"distilled student pruned to {measure_sparsity(combined):.0%} with distillation fine-tuning "
      f"in {time.perf_counter() - start:.1f}s: {evaluate(combined, test_flat):.1%}")

pruned95 = copy.deepcopy(mlp)   # module 18's recipe: 95% in 10 steps of 3 epochs
iterative_prune(pruned95, digits_loaders(batch_size=64, seed=1)[0], 0.95, steps=10, epochs_per_step=3,
                lr=FINETUNE_LR, progress=False)
candidates = [
    ("teacher, dense FP32", mlp, dict(bits=32, index="dense")),
    ("pruned 95%, FP32", pruned95, dict(bits=32, index="delta")),
    ("pruned 95%, INT8", pruned95, dict(bits=8, index="delta")),
    (f"low rank (energy {LOWRANK_ENERGY:.0%})", lowrank_models[LOWRANK_ENERGY], dict(bits=32, index="dense")),
    ("student, labels only", kd_students["labels only"], dict(bits=32, index="dense")),
    ("student, distilled", kd_students["distilled"], dict(bits=32, index="dense")),
    (f"distilled + pruned {KD_SPARSITY:.0%} + INT8", combined, dict(bits=8, index="delta")),
]
comparison = {}
for label, model, storage in candidates:
    path = WORKDIR / "candidate.ttcz"
    size = compress(model, sparsity=None, **{"coding": "fixed", "bias_bits": 32, **storage}).save(path)
    stored = load_compressed(path)
    runnable = stored.decompress()
    comparison[label] = {
        "bytes": size,
        "flops": count_flops(runnable, (64,)),
        "nonzero flops": count_flops(runnable, (64,), nonzero=True),
        "batch 1 us": benchmark_inference(runnable, X_test[:1], **bench_kw)["median"] * 1e6,
        "batch 360 us": benchmark_inference(runnable, X_test, **bench_kw)["median"] * 1e6,
        "accuracy": evaluate(stored, test_flat),
    }
dense_size = comparison["teacher, dense FP32"]["bytes"]
print(f"{'model':<34} {'bytes':>8} {'ratio':>6} {'FLOPs':>8} {'nonzero':>8} {'1 digit':>8} {'360 digits':>10} {'accuracy':>9}")
for label, row in comparison.items():
    print(f"{label:<34} {row['bytes']:>8,} {dense_size / row['bytes']:>5.1f}x {row['flops']:>8,} "
          f"{row['nonzero flops']:>8,} {row['batch 1 us']:>6.0f}us {row['batch 360 us']:>8.0f}us {row['accuracy']:>9.1%}")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for label, row in comparison.items():
    ax.plot(row["bytes"], row["accuracy"], "o", markersize=8)
    ax.annotate(label, (row["bytes"], row["accuracy"]), textcoords="offset points", xytext=(6, -3), fontsize=8)
ax.set_xscale("log")
ax.set_xlabel("file size (bytes, log scale)")
ax.set_ylabel("test accuracy")
ax.set_title("digits: accuracy against size")
ax.set_xlim(right=ax.get_xlim()[1] * 4)      # room for the labels
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the table** (the cell below prints the ratios of this run):
#
# - **Pruning alone** keeps the most accuracy per byte, but only the file shrinks: the model runs
#   the teacher's FLOPs in the teacher's time, its zeros multiplied.
# - **Low rank alone** removes FLOPs for real with dense layers and no index, and fine-tuning
#   brings the accuracy back. The latency gain is far smaller than the FLOP gain, and on one digit
#   it can be *slower* than the teacher: it has two more layers, and each layer call costs a fixed
#   overhead that dwarfs these tiny products.
# - **Distillation alone** gives the fastest model, with about as many parameters as the pruned
#   teacher keeps.
# - **Distillation, then pruning and quantization** gives the smallest file, because the savings
#   multiply: a smaller architecture, most of its weights removed, one byte instead of four for
#   each survivor (indices, biases and the header keep it from the full product).

# %%
teacher_row, student_row = comparison["teacher, dense FP32"], comparison["student, distilled"]
smallest = min(comparison, key=lambda label: comparison[label]["bytes"])
print(f"smallest file: {smallest}: {comparison[smallest]['bytes']:,} bytes, "
      f"{dense_size / comparison[smallest]['bytes']:.0f}x smaller than the teacher's, accuracy {comparison[smallest]['accuracy']:.1%}")
print(f"the student against the teacher: {teacher_row['flops'] / student_row['flops']:.0f}x fewer FLOPs, "
      f"{teacher_row['batch 1 us'] / student_row['batch 1 us']:.1f}x faster on one digit, "
      f"{teacher_row['batch 360 us'] / student_row['batch 360 us']:.1f}x on 360 digits")

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f}s")
_workdir.cleanup()  # the files were only written to be measured
