# %% [markdown]
# # Module 18, given code: structured pruning of real architectures
#
# > Channel pruning of a MobileNet-style and a ResNet-style network: what it removes, the
# > multiply-adds it saves, the accuracy it keeps after fine-tuning and the time it saves, beside
# > unstructured pruning at the same parameter count. Read it; you do not edit it.
#
# Section 6 of the lesson prunes chains of `Linear` and `Conv2d` layers. Real networks add three
# things that tie channels together: **BatchNorm** after every convolution, **depthwise**
# convolutions (MobileNet: one 3x3 filter per channel, then a 1x1 convolution mixing them) and
# **residual additions** (ResNet: `block(x) + x`). The given tracer (`tinytorch.core.channels`)
# groups the channels that must go together, so the lesson's `structured_prune` works on these
# models unchanged. This notebook measures what that buys.
#
# The claim to test, from the course page: structured pruning gives *actual speedups*, where
# unstructured pruning (zeros in the same dense matrices) does not.

# %%
#| default_exp compression.structured

# %%
#| export
import copy

import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.autograd import no_grad
from tinytorch.core.blocks import BatchNorm1d, BatchNorm2d, Residual
from tinytorch.core.layers import Linear, Module, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import Adam, CosineLR
from tinytorch.core.spatial import Conv2d
from tinytorch.core.training import evaluate, fit
from tinytorch.data.loader import digits_loaders
from tinytorch.compression.prune import magnitude_prune, prunable_weights, structured_prune

# %%
import os
import time

for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):   # one BLAS thread: fair timings (see the lesson)
    os.environ.setdefault(name, "1")

from tinytorch.core.channels import channel_groups
from tinytorch.core.models import digits_mobilenet, digits_resnet, train_digits_model

FULL = os.environ.get("TINYTORCH_FULL", "0") == "1"
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. The two models and their channel groups
#
# `digits_mobilenet` and `digits_resnet` (module 09) train in tens of seconds on the 8x8 digits.
# Here they train for a few epochs (10 with `TINYTORCH_FULL=1`, the reference recipe).
#
# Print the groups: in the MobileNet a group is a convolution, its BatchNorm, the depthwise
# convolution that follows and its BatchNorm. In the ResNet the stem convolution and the first
# block's last convolution are one group (the identity shortcut adds them), and the second
# block's last convolution and its 1x1 shortcut are another.

# %%
EPOCHS = 10 if FULL else 4
trained = {}
for build in (digits_mobilenet, digits_resnet):
    start = time.perf_counter()
    model = build(seed=0)
    history = train_digits_model(model, epochs=EPOCHS, seed=0)
    trained[build.__name__] = model
    print(f"{build.__name__}: {history['val_acc'][-1]:.1%} test accuracy after {EPOCHS} epochs "
          f"({time.perf_counter() - start:.0f} s)")
    for group in channel_groups(model):
        print("   ", group)

# %% [markdown]
# ## 2. Counting multiply-adds
#
# The *ideal* speedup of a pruned model is the ratio of multiply-adds (MACs): a `Linear` does
# `in * out` per sample, a `Conv2d` `weight.size` per output pixel (a depthwise one `k*k` per
# channel and pixel). BatchNorm is not counted: at inference it folds into the convolution
# before it (`fold_batchnorms`, module 09), and so do the timings below. `count_macs` runs one
# zero image through a copy of the model in eval mode, reading the output sizes.

# %%
#| export
def count_macs(model, input_shape, nonzero: bool = False) -> int:
    """Multiply-adds of one sample's forward pass through the Linear, Conv2d and sparse layers (those
    with `nnz`) of `model` (Sequential, Residual blocks, BatchNorm: not counted, it folds away).
    `input_shape` has no batch axis. `nonzero=True` counts only nonzero weights: the work an ideal
    sparse kernel would do."""
    total = 0

    def weights(w: np.ndarray) -> int:
        return int(np.count_nonzero(w)) if nonzero else int(w.size)

    def walk(module, x):
        nonlocal total
        if isinstance(module, Sequential):
            for child in module:
                x = walk(child, x)
            return x
        if isinstance(module, Residual):
            out = walk(module.body, x)
            return out + (x if module.shortcut is None else walk(module.shortcut, x))
        y = module(x)
        if isinstance(module, Linear):
            total += int(np.prod(y.shape[:-1])) * weights(module.weight.data)
        elif isinstance(module, Conv2d):
            total += y.shape[2] * y.shape[3] * weights(module.weight.data)
        elif hasattr(module, "nnz"):   # SparseLinear: only its stored weights are multiplied
            total += int(np.prod(y.shape[:-1])) * int(module.nnz)
        elif (isinstance(module, Module) and not isinstance(module, (BatchNorm1d, BatchNorm2d))
              and (module.parameters() or module.children() or hasattr(module, "weight"))):
            raise ValueError(f"count_macs does not know {type(module).__name__}: it counts Linear, Conv2d and "
                             "sparse layers inside Sequential and Residual containers")
        return y

    model = copy.deepcopy(model).eval()     # eval: BatchNorm must not update its statistics
    with no_grad():
        walk(model, Tensor(np.zeros((1, *input_shape), dtype=np.float32)))
    return total


def n_params(model) -> int:
    "Number of parameters (weights, biases, BatchNorm scales and shifts)."
    return sum(p.data.size for p in model.parameters())

# %%
# Hand counts: a 3x3 conv 1 -> 4 on 8x8 (padding 1) is 64 pixels x 36 weights; a depthwise 3x3 on
# 4 channels is 64 x 36 too; a 1x1 conv 4 -> 2 is 64 x 8; the Linear 128 -> 3 is 384.
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten

tiny = Sequential(Conv2d(1, 4, 3, padding=1, rng=0), BatchNorm2d(4), ReLU(),
                  Residual(Sequential(Conv2d(4, 4, 3, padding=1, groups=4, rng=0), BatchNorm2d(4))),
                  Conv2d(4, 2, 1, rng=0), Flatten(), Linear(128, 3, rng=0))
assert count_macs(tiny, (1, 8, 8)) == 64 * 36 + 64 * 36 + 64 * 8 + 384
print({name: f"{count_macs(m, (1, 8, 8)):,} MACs, {n_params(m):,} parameters" for name, m in trained.items()})
print("✓ count_macs counts convolutions per output pixel, depthwise ones per channel, through residual blocks")

# %% [markdown]
# ## 3. Prune channels, fine-tune, compare with unstructured pruning
#
# For a fraction `r`, `structured_prune(model, r)` removes `round(r * size)` channels of every
# prunable group (the lesson's exercise; the classifier keeps its 10 outputs). Pruning a
# convolution's outputs also removes the next one's inputs, so the parameters and MACs fall
# faster than `1 - r` (about `(1 - r)^2` for the middle layers).
#
# The fair comparison for unstructured pruning keeps **the same number of weights**: global
# magnitude pruning (`magnitude_prune`) of the dense model to the sparsity that leaves as many
# nonzero Linear/Conv2d weights as the structured model has. Both are then fine-tuned the same
# way (Adam at 3e-3 with cosine decay; the masks keep pruned weights at zero).

# %%
#| export
FINETUNE_LR = 3e-3


def finetune(model, epochs: int, seed: int = 1) -> float:
    "Fine-tune a digits image model (Adam, cosine decay, masks respected); returns the test accuracy."
    train, test = digits_loaders(batch_size=64, image=True, seed=seed)
    if epochs > 0:
        optimizer = Adam(model.parameters(), lr=FINETUNE_LR)
        fit(model, train, CrossEntropyLoss(), optimizer, epochs=epochs, progress=False,
            callbacks=[CosineLR(optimizer, epochs)])
    return evaluate(model, test)


def prunable_weight_count(model) -> int:
    "Nonzero weights of the Linear and Conv2d layers."
    return sum(int(np.count_nonzero(w.data)) for _, w in prunable_weights(model))


def same_count_sparsity(dense, pruned) -> float:
    "The sparsity at which `dense` keeps as many Linear/Conv2d weights as `pruned` has."
    total = sum(w.data.size for _, w in prunable_weights(dense))
    return 1.0 - sum(w.data.size for _, w in prunable_weights(pruned)) / total


def structured_vs_unstructured(dense, fraction: float, epochs: int, input_shape=(1, 8, 8)) -> dict:
    """Prune `fraction` of every group's channels, and prune the dense model's weights to the same
    count; fine-tune both for `epochs`. Returns both models, their accuracies, parameters and MACs."""
    structured = structured_prune(dense, fraction)
    unstructured = copy.deepcopy(dense)
    sparsity = same_count_sparsity(dense, structured)
    magnitude_prune(unstructured, sparsity)
    row = {"fraction": fraction, "sparsity": sparsity, "params": n_params(structured),
           "weights": prunable_weight_count(structured), "macs": count_macs(structured, input_shape),
           "dense_macs": count_macs(dense, input_shape)}
    row["structured_before"] = finetune(structured, 0)
    row["unstructured_before"] = finetune(unstructured, 0)
    row["structured"] = finetune(structured, epochs)
    row["unstructured"] = finetune(unstructured, epochs)
    return {"row": row, "structured": structured, "unstructured": unstructured}

# %% [markdown]
# The structured model is really smaller: its layers have fewer channels, and the weights
# removed went in whole rows and columns. The unstructured one keeps every shape, so it
# multiplies as many numbers as the dense model.

# %%
FRACTIONS = (0.25, 0.5, 0.75) if FULL else (0.5,)
FT_EPOCHS = 5 if FULL else 2
results = {}
print(f"{'model':<17}{'removed':>8}{'params':>9}{'MACs':>9}{'ideal':>7}{'struct.':>9}{'unstruct.':>10}"
      f"  (accuracy after {FT_EPOCHS} epochs of fine-tuning; before in brackets)")
for name, dense in trained.items():
    dense_acc = finetune(dense, 0)
    print(f"{name:<17}{0:>8.0%}{n_params(dense):>9,}{count_macs(dense, (1, 8, 8)):>9,}{1:>6.2f}x{dense_acc:>9.1%}")
    for fraction in FRACTIONS:
        out = structured_vs_unstructured(dense, fraction, FT_EPOCHS)
        r = out["row"]
        results[name, fraction] = out
        print(f"{'':<17}{fraction:>8.0%}{r['params']:>9,}{r['macs']:>9,}{r['dense_macs'] / r['macs']:>6.2f}x"
              f"{r['structured']:>9.1%}{r['unstructured']:>10.1%}   ({r['structured_before']:.1%}, "
              f"{r['unstructured_before']:.1%}; unstructured sparsity {r['sparsity']:.1%})")

# %%
for (name, fraction), out in results.items():
    small, dense = out["structured"], trained[name]
    assert prunable_weight_count(out["unstructured"]) <= out["row"]["weights"] + 1   # same budget
    assert out["row"]["macs"] < count_macs(dense, (1, 8, 8)) * (1 - fraction) + 1
    assert small(Tensor(np.zeros((2, 1, 8, 8), dtype=np.float32))).shape == (2, 10)
print("✓ structured models are smaller in MACs than 1 - fraction, unstructured ones keep the same weight count")

# %% [markdown]
# ## 4. Does it run faster?
#
# Time the BatchNorm-folded inference models (what one deploys) on 1 digit and on 64, dense
# against structured and unstructured at 50%. Rounds are interleaved (dense, structured,
# unstructured, dense, ...) so a busy moment of the machine slows all three alike, and the
# speedup is the median of the per-round ratios. The ideal speedup is the MACs ratio.
#
# Expect the structured model to fall short of its ideal at batch 1: on an 8x8 image each layer
# is a handful of tiny matrix multiplies, and Python's per-layer overhead, the same for a narrow
# layer as for a wide one, is most of the time. At batch 64 the arithmetic matters more. The
# unstructured model does exactly the dense work: its speedup is 1x up to noise. The benchmark
# (`benchmarks/structured.py`) runs this at every fraction with more rounds.

# %%
from tinytorch.core.blocks import fold_batchnorms


def per_call(model, x, calls: int) -> float:
    with no_grad():
        start = time.perf_counter()
        for _ in range(calls):
            model(x)
        return (time.perf_counter() - start) / calls


ROUNDS = 15 if FULL else 5
for name, dense in trained.items():
    out = results[name, 0.5]
    variants = {"dense": dense, "structured": out["structured"], "unstructured": out["unstructured"]}
    variants = {k: fold_batchnorms(m).eval() for k, m in variants.items()}
    ideal = count_macs(dense, (1, 8, 8)) / out["row"]["macs"]
    for batch in (1, 64):
        x = Tensor(np.random.default_rng(0).random((batch, 1, 8, 8)).astype(np.float32))
        calls = 20 if batch == 1 else 3
        times = {k: [] for k in variants}
        for r in range(ROUNDS + 1):
            for k, m in variants.items():
                times[k].append(per_call(m, x, calls))
        speed = {k: np.median(np.array(times["dense"][1:]) / np.array(times[k][1:])) for k in variants}
        print(f"{name}, batch {batch}: dense {np.median(times['dense'][1:]) * 1e3:.2f} ms; speedup structured "
              f"{speed['structured']:.2f}x (ideal {ideal:.2f}x), unstructured {speed['unstructured']:.2f}x (ideal 1x)")

# %% [markdown]
# ## What the numbers say
#
# - Channel pruning works on these architectures because the tracer keeps every coupled
#   channel together; the rebuilt models are ordinary, smaller dense models.
# - At the same number of weights, unstructured pruning usually keeps more accuracy (it may
#   remove any weight, not whole channels) but saves no time; structured pruning saves
#   multiply-adds and, where arithmetic dominates, time.
# - The measured speedup stays under the ideal; the gap is the fixed per-layer cost of running
#   small layers from Python, largest at batch 1.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f}s")
