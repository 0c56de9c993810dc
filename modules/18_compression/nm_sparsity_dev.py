# %% [markdown]
# # Module 18 (given): N:M semi-structured sparsity
#
# > N:M semi-structured sparsity (2:4, 1:4): the mask, pruning a model with it, and its compact storage with 2-bit positions.
#
# This notebook is library code you read, not exercises you write. It runs top to bottom as a
# script: `python modules/18_compression/nm_sparsity_dev.py`.
#
# Unstructured pruning (the lesson's `magnitude_prune`) may leave its zeros anywhere. That is the
# most accurate choice, and the hardest one for a processor to exploit: the positions are
# irregular, so the file must store them and a matrix multiply must look them up.
# **N:M sparsity** constrains the pattern: in every group of `m` consecutive weights, at most `n`
# are nonzero. With 2:4, half of the weights are zero, and every group of four has the same shape
# of work: two multiplies. NVIDIA's GPUs since Ampere (2020) multiply 2:4 matrices in hardware.
#
# | You read | It answers | Measured on the digits |
# | --- | --- | --- |
# | `nm_mask`, `is_nm_sparse` | which `n` of every `m` weights survive | exact counts per group |
# | `nm_prune` | how to prune a whole model so fine-tuning keeps the pattern | masks through training |
# | `encode_nm`, `decode_nm`, `nm_nbytes` | what the pattern costs to store | 2-bit positions vs delta indices |
# | (the comparison) | what the pattern costs in accuracy | 2:4 vs 50% and 1:4 vs 75% unstructured |
# | (the timing) | why NumPy does not get faster | a gather-based 2:4 matmul vs dense BLAS |

# %%
# One BLAS thread: the timing at the end compares dense BLAS with our gather code on equal terms
# on a shared 2-core machine. Importing tinytorch before NumPy sets it (tinytorch/__init__.py).
import tinytorch  # noqa: F401

# %%
#| default_exp compression.nm

# %%
#| export
import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.compression.prune import apply_mask, prunable_layers
from tinytorch.compression.encoding import pack_bits, unpack_bits
from tinytorch.core.checks import is_int

# %%
import copy
import time

from tinytorch.compression.encoding import compress_weight, encode_csr
from tinytorch.compression.inference import benchmark_inference, csr_matmul
from tinytorch.compression.prune import magnitude_prune, prunable_weights
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.activations import ReLU
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.models import DIGITS_BATCH_SIZE, digits_cnn, digits_mlp, train_digits_model
from tinytorch.core.optimizers import Adam
from tinytorch.core.training import evaluate, fit
from tinytorch.data.loader import digits_loaders

NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. The pattern: n survivors in every group of m
#
# Which weights form a group? The ones that meet in the same dot product. A `Linear` here stores
# its weight as `(out_features, in_features)` and computes `x @ weight.T`, so each row is one
# output's dot product over the inputs: groups are `m` consecutive entries **along a row**
# (the input dimension). A `Conv2d` weight `(out, in, kh, kw)` is, after im2col, a matrix
# `(out, in * kh * kw)`: groups run along each output channel's flattened `(in, kh, kw)`.
# This is the reduction dimension ("K") that sparse tensor cores compress too.
#
# `axis` says where the row starts: the array is viewed as `(prod(shape[:axis]), prod(shape[axis:]))`
# and the groups tile the second dimension. The default, `axis=1`, is the rule above for both
# layer types.
#
# **Rows that do not divide.** A row of 9 weights cannot be cut into groups of 4. We could pad it
# with zeros to 12, but then the last group `[w8, 0, 0, 0]` "keeps two" while only one weight is
# real, so the layer is less sparse than promised, and the pattern no longer matches what
# hardware would store. So `nm_mask` **refuses** with a `ValueError`. The digits MLP
# (64 -> 256 -> 128 -> 10) divides everywhere: every row length (64, 256, 128) is a multiple of 4.
# The CNN's first convolution, `Conv2d(1, 16, 3)`, has 9 weights per output channel: it is the
# one layer that cannot be 2:4 pruned. It holds 144 of the CNN's ~6,000 weights, and real
# deployments leave the first layer dense anyway (it is small and sensitive), so `nm_prune`
# takes a `layers=` list that leaves it out.
#
# **Which n survive.** The `n` of largest magnitude. Ties are broken by position: among equal
# magnitudes, **the lower index wins** (is kept). A stable `argsort` of `-|w|` along each group
# gives exactly that order, for every group at once.

# %%
#| export
def _check_nm(n, m) -> None:
    "Raise a ValueError unless `m` is an int >= 2 and `n` an int from 1 to `m`."
    if not is_int(m) or m < 2:
        raise ValueError(f"m must be an int >= 2, got {m!r}")
    if not is_int(n) or not 1 <= n <= m:
        raise ValueError(f"n must be an int from 1 to m={m}, got {n!r}")


def _rows(shape: tuple, m: int, axis: int, what: str) -> tuple[int, int]:
    "`(rows, row length)`: `shape` viewed as `(prod(shape[:axis]), -1)`; refused unless `m` divides the length."
    ndim = len(shape)
    if not is_int(axis) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an int in [{-ndim}, {ndim}) for {what} of shape {shape}, got {axis!r}")
    axis = int(axis) % ndim
    rows, length = int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64))
    if length % m:
        raise ValueError(f"{what} of shape {shape}: rows of {length} entries (dims {axis}.. flattened) are "
                         f"not a multiple of m={m}; N:M groups must tile each row exactly "
                         "(leave such a layer dense)")
    return rows, length


def _as_array(weights) -> np.ndarray:
    "The weights as a float array (Tensors unwrapped, ints and bools ranked as floats)."
    w = np.asarray(weights.data if isinstance(weights, Tensor) else weights)
    return w if np.issubdtype(w.dtype, np.floating) else w.astype(np.float64)

# %%
assert _rows((256, 64), 4, 1, "w") == (256, 64) and _rows((32, 16, 3, 3), 4, 1, "w") == (32, 144)
assert _rows((32, 16, 3, 3), 3, -1, "w") == (32 * 16 * 3, 3) and _rows((8,), 4, 0, "w") == (1, 8)
for bad_n, bad_m in ((0, 4), (5, 4), (1, 1), (2.0, 4)):
    try:
        _check_nm(bad_n, bad_m)
        raise AssertionError(f"n={bad_n}, m={bad_m} must be refused")
    except ValueError as error:
        assert "must be an int" in str(error)

# %%
#| export
def nm_mask(weights, n: int, m: int, axis: int = 1, mask=None) -> np.ndarray:
    """Boolean keep-mask (True = keep) with the `n` largest-|w| entries of every group of `m`
    consecutive entries along each row; a row is `weights` viewed as `(prod(shape[:axis]), -1)`
    (axis=1: along the inputs of a Linear `(out, in)` or a Conv2d `(out, in, kh, kw)` weight).

    Ties: among equal magnitudes the lower index is kept. `inf` ranks above every finite value.
    Entries where `mask` is False are already pruned: they rank below every live entry and stay
    pruned, so a group may then keep fewer than `n`.

    Error contract (ValueError): "m must be an int >= 2"; "n must be an int from 1 to m";
    "axis must be an int in [...]"; rows "not a multiple of m" (refused, never padded); weights
    that "contain NaN"; a `mask` that is not "a boolean array of shape" of the weights.
    """
    _check_nm(n, m)
    w = _as_array(weights)
    rows, length = _rows(w.shape, m, axis, "weights")
    if np.isnan(w).any():
        raise ValueError(f"weights contain {int(np.isnan(w).sum())} NaN value(s); they cannot be ranked")
    scores = np.abs(w)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != w.shape:
            raise ValueError(f"mask must be a boolean array of shape {w.shape}, got {mask.dtype} {mask.shape}")
        scores[~mask] = -1.0  # dead entries rank below every magnitude
    groups = scores.reshape(rows, length // m, m)
    # Stable sort of -|w|: largest first, and equal magnitudes keep their index order (lower wins).
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    keep = keep.reshape(w.shape)
    return keep if mask is None else keep & mask

# %%
# A worked example: one row of eight weights is two groups of four. 2:4 keeps the two largest
# magnitudes of each group; in the second group 0.5 appears three times, and the lower indices win.
row = np.array([[0.1, -0.9, 0.3, 0.05, 0.5, 0.5, -0.2, 0.5]])
keep = nm_mask(row, 2, 4)
print(keep.astype(int))
assert keep.tolist() == [[False, True, True, False, True, True, False, False]]
assert nm_mask(row, 1, 4).tolist() == [[False, True, False, False, True, False, False, False]]
# A Conv2d weight (out=2, in=2, 2, 2): groups run over each output channel's 8 weights.
conv_w = np.random.default_rng(0).normal(size=(2, 2, 2, 2))
conv_keep = nm_mask(conv_w, 2, 4)
assert (conv_keep.reshape(2, 2, 4).sum(axis=-1) == 2).all()
# Already-pruned entries stay pruned and are never chosen over live ones.
alive = np.ones_like(row, dtype=bool)
alive[0, 1] = False
assert nm_mask(row, 2, 4, mask=alive).tolist() == [[True, False, True, False, True, True, False, False]]
try:
    nm_mask(np.ones((16, 9)), 2, 4)
    raise AssertionError("a row of 9 cannot be split into groups of 4")
except ValueError as error:
    assert "not a multiple of m=4" in str(error)

# %% [markdown]
# A weight array is N:M sparse when no group holds more than `n` nonzeros. This is what a
# storage format or a sparse kernel needs to know, whatever produced the zeros.

# %%
#| export
def is_nm_sparse(weights, n: int, m: int, axis: int = 1) -> bool:
    "True when no group of `m` consecutive entries along a row (as in `nm_mask`) holds more than `n` nonzeros."
    _check_nm(n, m)
    w = np.asarray(weights.data if isinstance(weights, Tensor) else weights)
    rows, length = _rows(w.shape, m, axis, "weights")
    nonzeros = np.count_nonzero(w.reshape(rows, length // m, m), axis=-1)
    return bool((nonzeros <= n).all())

# %%
assert is_nm_sparse(row * keep, 2, 4) and not is_nm_sparse(row, 2, 4)
assert not is_nm_sparse(row * keep, 1, 4) and is_nm_sparse(row * nm_mask(row, 1, 4), 1, 4)
assert is_nm_sparse(row, 4, 4)

# %% [markdown]
# ## 2. Pruning a model: masks that fine-tuning keeps
#
# `nm_prune` computes the mask of every prunable layer and hands it to the lesson's
# `apply_mask`, which zeroes the pruned weights and stores the mask on the parameter. Our
# optimizers zero the masked gradients and weights after every step, so fine-tuning cannot
# regrow a pruned weight and the N:M pattern survives training. All masks are computed before
# any is applied: a layer that cannot be pruned leaves the whole model untouched.

# %%
#| export
def nm_prune(model, n: int = 2, m: int = 4, layers=None):
    """Prune every Linear and Conv2d weight of `model` (or only the layers named in `layers`) to
    `n`:`m` sparsity along its inputs with `nm_mask`, in place; masks attached with `apply_mask`,
    so training keeps them (combined with any mask already there). Returns `model`.

    Error contract (ValueError): the errors of `nm_mask` (a layer whose rows are "not a multiple
    of m" is named: leave it out with `layers=`); "no prunable layer named" for unknown `layers`;
    "nothing to prune" for a model without Linear or Conv2d layers (from `prunable_layers`).
    """
    _check_nm(n, m)
    found = prunable_layers(model)
    if layers is not None:
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of layer names, got the string {layers!r}")
        wanted = list(layers)
        unknown = sorted(set(wanted) - {name for name, _ in found})
        if unknown:
            raise ValueError(f"no prunable layer named {unknown}; prunable layers are {[name for name, _ in found]}")
        found = [(name, layer) for name, layer in found if name in wanted]
    masks = []
    for name, layer in found:
        weight = layer.weight
        try:
            masks.append(nm_mask(weight.data, n, m, mask=weight.mask))
        except ValueError as error:
            raise ValueError(f"layer '{name}' ({type(layer).__name__}): {error}") from None
    for (_, layer), keep in zip(found, masks):
        apply_mask(layer.weight, keep)
    return model

# %%
net = Sequential(Linear(8, 8, rng=0), ReLU(), Linear(8, 4, rng=1))
nm_prune(net, 2, 4)
before = [w.mask.copy() for _, w in prunable_weights(net)]
assert all(is_nm_sparse(w.data, 2, 4) and w.mask.sum() == w.size // 2 for _, w in prunable_weights(net))
X = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
y = np.arange(16) % 4
fit(net, [(X, y)], CrossEntropyLoss(), Adam(net.parameters(), lr=0.1), epochs=3, progress=False)
for (_, w), keep in zip(prunable_weights(net), before):
    assert np.array_equal(w.mask, keep) and (w.data[~keep] == 0).all() and is_nm_sparse(w.data, 2, 4)
# The CNN's first convolution has 9 weights per output channel: refused by name, the model untouched.
cnn = digits_cnn(seed=0)
try:
    nm_prune(cnn, 2, 4)
    raise AssertionError("Conv2d(1, 16, 3) cannot be 2:4 pruned")
except ValueError as error:
    print(error)
    assert "layer '0'" in str(error) and all(w.mask is None for _, w in prunable_weights(cnn))
nm_prune(cnn, 2, 4, layers=["3", "7"])
print({name: round(float((w.data == 0).mean()), 3) for name, w in prunable_weights(cnn)})

# %% [markdown]
# ## 3. Storing the pattern: 2-bit positions
#
# An unstructured sparse file spends much of its size on *where* the survivors are: the
# lesson's delta encoding stores, per survivor, how many zeros were skipped, and must insert
# filler entries when a gap is too long for its bits. N:M needs no fillers and no row pointers:
# every group of `m` has exactly `n` survivors, so it is enough to store, for each survivor, its
# position inside its group, `log2(m)` bits (2 bits for m = 4). The survivors' values are stored
# in group order, and the group of the k-th value is simply `k // n`.
#
# It is essentially the layout NVIDIA's sparse tensor cores read: the values compressed to half
# the columns, plus 2-bit metadata per value.
#
# `encode_nm` accepts only a weight that already has the pattern (`is_nm_sparse`): an encoder
# that silently pruned would not round-trip. A group with fewer than `n` nonzeros stores zeros
# at its lowest free positions, so `decode_nm(*encode_nm(w), ...)` returns `w` exactly.

# %%
#| export
def position_bits(m: int) -> int:
    "Bits that hold a position 0..m-1 inside a group: ceil(log2(m)), e.g. 2 for m = 4."
    _check_nm(1, m)
    return (int(m) - 1).bit_length()


def encode_nm(weight, n: int, m: int, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`(values, positions)` of an `n`:`m` sparse `weight` (groups as in `nm_mask`): `values` holds
    the `n` survivors of every group in order (the weight's float dtype, length groups * n), and
    `positions` their places 0..m-1 within their group, `position_bits(m)` bits each, packed into
    uint8 by `pack_bits`.

    Error contract (ValueError): the errors of `nm_mask`, and a weight that is "not n:m sparse"
    (a group with more than `n` nonzeros: prune it first with `nm_mask` or `nm_prune`).
    """
    _check_nm(n, m)
    w = _as_array(weight)
    rows, length = _rows(w.shape, m, axis, "weight")
    if not is_nm_sparse(w, n, m, axis):
        crowded = np.count_nonzero(np.count_nonzero(w.reshape(-1, m), axis=-1) > n)
        raise ValueError(f"weight is not {n}:{m} sparse: {crowded} of its {w.size // m} groups hold more "
                         f"than {n} nonzeros (prune it first with nm_mask or nm_prune)")
    # On an N:M sparse weight the n largest magnitudes are the nonzeros, plus the lowest-index zeros
    # when a group has fewer: exactly n per group, so every group decodes the same way.
    keep = nm_mask(w, n, m, axis).reshape(rows * (length // m), m)
    groups = w.reshape(keep.shape)
    values = groups[keep]                    # row-major: group by group, positions ascending
    positions = np.nonzero(keep)[1]
    return values, pack_bits(positions, position_bits(m))


def decode_nm(values, positions, shape, n: int, m: int, axis: int = 1) -> np.ndarray:
    """The dense array of `shape` that `encode_nm(weight, n, m, axis)` stored as `(values, positions)`.

    Error contract (ValueError): the errors of `nm_mask` about `n`, `m`, `axis` and `shape`; `values`
    of the wrong "length"; `positions` that are not packed uint8 bytes of the right "length";
    positions that do not "rise within each group" or lie outside 0..m-1.
    """
    _check_nm(n, m)
    shape = tuple(int(d) for d in shape)
    rows, length = _rows(shape, m, axis, "shape")
    groups = rows * (length // m)
    count, bits = groups * n, position_bits(m)
    values = np.asarray(values)
    packed = np.asarray(positions)
    if values.shape != (count,):
        raise ValueError(f"values must have length {count} ({groups} groups x n={n}), got shape {values.shape}")
    if packed.dtype != np.uint8 or packed.shape != (-(-count * bits // 8),):
        raise ValueError(f"positions must be {-(-count * bits // 8)} packed uint8 bytes ({count} positions x "
                         f"{bits} bits), got length {packed.size} of {packed.dtype}")
    places = unpack_bits(packed, bits, count).reshape(groups, n)
    if places.max(initial=0) >= m or (np.diff(places, axis=1) <= 0).any():
        raise ValueError(f"positions must rise within each group and lie in 0..{m - 1}")
    dense = np.zeros((groups, m), dtype=values.dtype)
    np.put_along_axis(dense, places, values.reshape(groups, n), axis=1)
    return dense.reshape(shape)


def nm_nbytes(shape, n: int, m: int, value_bits: int = 32, axis: int = 1) -> dict:
    """Bytes `encode_nm` stores for a weight of `shape`: `{"values", "positions", "total"}`, with
    `value_bits` bits per value (32: float32, 8: INT8 codes, ...) and `position_bits(m)` per position."""
    _check_nm(n, m)
    if not is_int(value_bits) or not 1 <= value_bits <= 64:
        raise ValueError(f"value_bits must be an int from 1 to 64, got {value_bits!r}")
    shape = tuple(int(d) for d in shape)
    rows, length = _rows(shape, m, axis, "shape")
    count = rows * (length // m) * n
    values, positions = -(-count * int(value_bits) // 8), -(-count * position_bits(m) // 8)
    return {"values": values, "positions": positions, "total": values + positions}

# %%
# By hand: a 2:4 weight of shape (256, 64) has 16,384 weights in 4,096 groups; it keeps
# 8,192 values (32 KB as float32) and 8,192 positions of 2 bits: 2,048 bytes. A 1:4 weight keeps
# 4,096 of each: 1,024 bytes of positions, half a bit per weight.
assert nm_nbytes((256, 64), 2, 4) == {"values": 32768, "positions": 2048, "total": 34816}
assert nm_nbytes((256, 64), 1, 4, value_bits=8) == {"values": 4096, "positions": 1024, "total": 5120}
w = np.random.default_rng(1).normal(size=(256, 64)).astype(np.float32)
w24 = w * nm_mask(w, 2, 4)
values, positions = encode_nm(w24, 2, 4)
assert values.dtype == np.float32 and values.size == 8192 and positions.nbytes == 2048
assert np.array_equal(decode_nm(values, positions, w.shape, 2, 4), w24)
assert values.nbytes + positions.nbytes == nm_nbytes(w.shape, 2, 4)["total"]
try:
    encode_nm(w, 2, 4)
    raise AssertionError("a dense weight is not 2:4 sparse")
except ValueError as error:
    assert "not 2:4 sparse" in str(error)

# %% [markdown]
# Now the comparison the format exists for: the index bytes of N:M against the lesson's
# unstructured formats **at the same sparsity**, on the trained digits MLP, pruned per layer so
# each layer has exactly the N:M sparsity. The delta index needs care: a gap too long for its
# bits is bridged by *filler* entries, and each filler also stores a value (a zero). Those
# values are part of what the index costs, so we count them, at the 8-bit values of
# `compress_weight(..., bits=8, index="delta", index_bits=b)` (1 byte each), and keep the best
# width `b` from 1 to 8. (Counting the packed deltas alone, 1-bit deltas look cheapest: most of
# their position information has moved into the filler values.) The bitmask costs 1 bit per
# weight, values or not.

# %%
SEED = 0
trained = digits_mlp(seed=SEED)
train_digits_model(trained, seed=SEED)
train_loader, test_loader = digits_loaders(batch_size=DIGITS_BATCH_SIZE, seed=SEED)
dense_accuracy = evaluate(trained, test_loader)
print(f"dense digits MLP (seed {SEED}): {100 * dense_accuracy:.2f}% test accuracy")


def best_delta_bytes(weight: np.ndarray) -> tuple[int, int]:
    "(bytes, index_bits) of the cheapest delta index for `weight`: packed deltas plus the fillers' 8-bit values."
    survivors = int(np.count_nonzero(weight))
    sizes = []
    for bits in range(1, 9):
        entry = compress_weight(weight, bits=8, index="delta", index_bits=bits)
        fillers = entry["count"] - survivors          # each one stores a 1-byte zero value
        sizes.append((entry["arrays"]["deltas"].nbytes + fillers, bits))
    return min(sizes)


print(f"{'layer':<10}{'pattern':>8}{'N:M positions':>15}{'delta+fillers (bits)':>22}{'bitmask':>9}")
index_totals = {}
for n, m in ((2, 4), (1, 4)):
    unstructured = magnitude_prune(copy.deepcopy(trained), 1 - n / m, scope="layer")
    for (name, w), (_, u) in zip(prunable_weights(trained), prunable_weights(unstructured)):
        ours = nm_nbytes(w.shape, n, m)["positions"]
        delta, bits = best_delta_bytes(u.data)
        bitmask = -(-w.size // 8)
        totals = index_totals.setdefault(f"{n}:{m}", [0, 0, 0])
        for i, size in enumerate((ours, delta, bitmask)):
            totals[i] += size
        print(f"{name:<10}{f'{n}:{m}':>8}{ours:>15,}{f'{delta:,} ({bits})':>22}{bitmask:>9,}")
for pattern, (ours, delta, bitmask) in index_totals.items():
    print(f"{'total':<10}{pattern:>8}{ours:>15,}{delta:>22,}{bitmask:>9,}   delta / N:M = {delta / ours:.2f}")

# %% [markdown]
# At 50% the N:M positions cost 2 bits per survivor = 1 bit per weight, the same as a bitmask;
# the best delta index (2-bit deltas, plus the fillers that bridge longer gaps) costs 1.37x as
# much. At 75%, 1:4 stores half a bit per weight: half the bitmask, and the best delta index
# (4-bit deltas) costs 2.16x as much. This is not a trick of the encoders: an index that must
# describe any mask at sparsity s needs on average H(s) = -s log2 s - (1-s) log2(1-s) bits per
# weight (1 bit at 50%, 0.81 at 75%); the N:M pattern carries less because it is constrained
# (1:4: exactly log2(4) = 2 bits per group of four). Strictly, the 2:4 positions could be coded
# as one of the C(4,2) = 6 patterns per group, 2.6 bits instead of 4; hardware prefers the
# simple 2-bit fields.
#
# ## 4. What the pattern costs in accuracy
#
# The constraint is not free: if a group holds three important weights, 2:4 must drop one, while
# unstructured pruning would take a weight from a group of unimportant ones instead. We compare at equal
# sparsity, each layer pruned to the same fraction: 2:4 against unstructured 50%, 1:4 against
# unstructured 75%, with unstructured pruning both per layer (`scope="layer"`, the same
# sparsity in every layer, like N:M) and global (the lesson's default, free to spread zeros
# unevenly). Accuracy is measured right after pruning (one shot) and after the same fine-tuning
# for every method: `FINE_TUNE_EPOCHS` epochs of Adam at lr 1e-3 (what `iterative_prune` uses),
# the same seeded batch order, masks kept by the optimizer.

# %%
FINE_TUNE_EPOCHS = 3
METHODS = {  # name: (sparsity, how to prune a copy of the model)
    "2:4": (0.5, lambda model: nm_prune(model, 2, 4)),
    "unstructured 50%, per layer": (0.5, lambda model: magnitude_prune(model, 0.5, scope="layer")),
    "unstructured 50%, global": (0.5, lambda model: magnitude_prune(model, 0.5)),
    "1:4": (0.75, lambda model: nm_prune(model, 1, 4)),
    "unstructured 75%, per layer": (0.75, lambda model: magnitude_prune(model, 0.75, scope="layer")),
    "unstructured 75%, global": (0.75, lambda model: magnitude_prune(model, 0.75)),
}


def fine_tune(model, seed: int, epochs: int = FINE_TUNE_EPOCHS):
    "The same fine-tuning for every method: Adam, lr 1e-3, cross-entropy, batches shuffled by `seed`."
    train, _ = digits_loaders(batch_size=DIGITS_BATCH_SIZE, seed=seed)
    fit(model, train, CrossEntropyLoss(), Adam(model.parameters(), lr=1e-3), epochs=epochs, progress=False)
    return model


def compare_patterns(trained, seed: int) -> dict:
    "`{method: (accuracy one-shot, accuracy after fine-tuning)}` on the digits test set."
    _, test = digits_loaders(batch_size=DIGITS_BATCH_SIZE, seed=seed)
    results = {}
    for name, (sparsity, prune) in METHODS.items():
        model = prune(copy.deepcopy(trained))
        zeros = sum(int((w.data == 0).sum()) for _, w in prunable_weights(model))
        assert zeros == sparsity * sum(w.size for _, w in prunable_weights(model))
        one_shot = evaluate(model, test)
        results[name] = (one_shot, evaluate(fine_tune(model, seed), test))
    return results


results = compare_patterns(trained, SEED)
print(f"dense: {100 * dense_accuracy:.2f}%   (seed {SEED}; test accuracy in %)")
print(f"{'method':<30}{'one-shot':>10}{'fine-tuned':>12}")
for name, (one_shot, tuned) in results.items():
    print(f"{name:<30}{100 * one_shot:>10.2f}{100 * tuned:>12.2f}")

# %% [markdown]
# Over five seeds (`PYTHONPATH=. python /tmp/nm_measure.py`: the same protocol for seeds 0-4,
# each seed training its own model and shuffling its own batches; test accuracy in %, mean ± sd;
# dense 98.44 ± 0.37; the test set has 360 digits, so one digit is 0.28 points):
#
# | method | one-shot | fine-tuned (3 epochs) |
# | --- | --- | --- |
# | 2:4 | 96.89 ± 0.91 | 98.50 ± 0.37 |
# | unstructured 50%, per layer | 97.61 ± 0.70 | 98.39 ± 0.36 |
# | unstructured 50%, global | 98.17 ± 0.25 | 98.44 ± 0.25 |
# | 1:4 | 88.17 ± 2.55 | 97.33 ± 0.58 |
# | unstructured 75%, per layer | 91.61 ± 1.90 | 98.22 ± 0.32 |
# | unstructured 75%, global | 95.89 ± 1.67 | 98.39 ± 0.36 |
#
# - **2:4 is free after fine-tuning** here: 98.50 against 98.39 (per layer) and 98.44 (global),
#   a difference of +0.11 ± 0.42 and +0.06 ± 0.30 points, less than one digit. One-shot it loses
#   more than unstructured pruning (-0.7 and -1.3 points): the pattern forces some bad choices,
#   and three epochs repair them.
# - **1:4 is not free**: one-shot it falls to 88%, and after the same fine-tuning it stays
#   0.89 ± 0.69 points below per-layer and 1.06 ± 0.72 below global unstructured pruning, lower
#   or equal on every seed. With one survivor per four, a group holding two important inputs must
#   lose one; unstructured pruning would take a weight from a group that can spare it.
#
# The 2:4 result matches what NVIDIA reports on large networks (Mishra et al., 2021,
# "Accelerating Sparse Deep Neural Networks": train dense, prune 2:4, fine-tune, accuracy kept).
#
# ## 5. Where N:M runs faster, and why NumPy does not
#
# **On hardware that knows the pattern.** NVIDIA's sparse tensor cores (Ampere, 2020: A100, and
# later generations) multiply a 2:4 sparse matrix by a dense one at up to **twice the math
# throughput** of the dense tensor cores: the matrix is stored compressed (half the values plus
# the 2-bit positions we built above), and the hardware uses the positions to pick the matching
# half of the other operand. The support is specific: 2:4 for FP16, BF16 and INT8 (1:2 for
# TF32), reached through libraries, cuSPARSELt, TensorRT or PyTorch's semi-structured sparse
# tensors, not through a plain matmul call. 1:4 gets no more than 2:4's speedup there (a 1:4
# matrix is a 2:4 matrix with one more zero per group, and runs as one). The 2x is on the
# matmul; a whole network gains less, because not everything is a large matmul and small
# matmuls are limited by memory, not arithmetic.
#
# **On a CPU with NumPy.** `x @ w.T` calls BLAS, a dense GEMM: it multiplies every zero like any
# other number, so a 2:4 weight takes exactly as long as a dense one. To skip the zeros we must
# gather, for every output, the inputs its survivors need (`x.T[columns]`), which builds an
# `(out, in / 2, batch)` array: more memory traffic than the multiplies it saves, and the small
# dot products that follow get none of BLAS's blocking. We measure it on a 256 x 256 layer,
# batch 64, against dense BLAS and the lesson's CSR kernel (one BLAS thread).

# %%
def nm_matmul(x: np.ndarray, values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    "`x @ W.T` for W stored as its survivors: `values` and their input `columns`, both (out, kept per row)."
    # Rows of x.T are contiguous, so the gather copies whole rows; then one short dot product per
    # output, batched by matmul. (The fastest of the NumPy formulations we tried, einsum included.)
    gathered = np.ascontiguousarray(x.T)[columns]                # (out, kept, batch)
    return np.matmul(values[:, None, :], gathered)[:, 0, :].T    # (batch, out)


rng = np.random.default_rng(0)
w = rng.normal(size=(256, 256)).astype(np.float32)
w24 = w * nm_mask(w, 2, 4)
x = rng.normal(size=(64, 256)).astype(np.float32)
values, positions = encode_nm(w24, 2, 4)
# Input column of each survivor: its group's first column plus its position in the group.
places = unpack_bits(positions, position_bits(4), values.size).reshape(256, -1)
columns = (np.arange(places.shape[1]) // 2 * 4 + places).astype(np.intp)
values = values.reshape(256, -1)
data, indices, indptr = encode_csr(w24)
assert np.allclose(nm_matmul(x, values, columns), x @ w24.T, atol=1e-4)
assert np.allclose(csr_matmul(data, indices, indptr, x), x @ w24.T, atol=1e-4)

kernels = {"dense BLAS (x @ w.T, 2:4 zeros included)": lambda t: t.data @ w24.T,
           "2:4 gather (nm_matmul)": lambda t: nm_matmul(t.data, values, columns),
           "CSR (the lesson's csr_matmul)": lambda t: csr_matmul(data, indices, indptr, t.data)}
times = {name: benchmark_inference(kernel, x, repeats=7)["median"] for name, kernel in kernels.items()}
dense_time = times["dense BLAS (x @ w.T, 2:4 zeros included)"]
for name, seconds in times.items():
    print(f"{name:<45}{1e6 * seconds:>9.0f} us   {seconds / dense_time:>6.0f}x the dense time")

# %% [markdown]
# What we measured (256 x 256 layer, batch 64, one BLAS thread; medians, on this shared 2-core
# machine under load): dense BLAS about 0.1 ms; the 2:4 gather usually **about 10x slower**
# than dense (9-10x in most of a dozen runs, up to 19x when other processes were busy; an
# einsum version of it measured 18-60x); the lesson's CSR kernel, built for 90%+ sparsity,
# a few hundred times slower at 50%. The exact ratios move from run to run; the direction never
# did. Half the multiplies are saved and the time goes *up*, because the time was never in the
# multiplies: BLAS keeps the dense operands in cache and in vector registers, and the gather
# copies 256 x 128 x 64 floats (8 MB) that the dense GEMM never materialises. On a CPU, 2:4 is
# a storage format (section 3), not a speedup; a speedup needs hardware that reads the 2-bit
# positions itself.
#
# ## Summary
#
# - `nm_mask` keeps the `n` largest of every `m` consecutive weights along a row (lower index
#   wins a tie) and refuses rows that do not divide; `nm_prune` applies it through `apply_mask`
#   so fine-tuning keeps the pattern. The digits MLP divides everywhere; the CNN's first
#   convolution (9 weights per channel) stays dense.
# - `encode_nm` stores `log2(m)` bits per survivor: 1 bit per weight at 2:4, half a bit at 1:4,
#   with no fillers and an exact round trip. On the digits MLP the best unstructured delta index
#   at the same sparsity costs 1.37x (50%) and 2.16x (75%) as many bytes.
# - Accuracy after the same 3-epoch fine-tuning (5 seeds): 2:4 matches unstructured 50% (98.50
#   vs 98.39 / 98.44%); 1:4 loses about a point against unstructured 75% (97.33 vs 98.22 / 98.39%).
# - Speed: up to 2x on the matmul with NVIDIA's sparse tensor cores (Ampere and later, through
#   cuSPARSELt and friends); on a CPU with NumPy, about 10x *slower* than dense BLAS. The pattern
#   is a hardware contract: worth its price where hardware executes it, a storage format here.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
