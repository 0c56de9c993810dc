# %% [markdown]
# # Module 18, given code: compress a model in one call
#
# > `compress` prunes a copy of a model and stores every weight with the lesson's `compress_weight` (or as N:M positions, or with a weight-sharing codebook); `save_dense` writes the FP32 baseline in the same format.
#
# Read it; you do not edit it. The file format itself (version 2: a binary header, optional
# Huffman coding of every stream of codes) is in `storage_dev.py`.

# %%
#| default_exp compression.pipeline

# %%
#| export
import copy

import numpy as np

from tinytorch.compression.nm import encode_nm, is_nm_sparse, nm_prune, position_bits
from tinytorch.compression.encoding import check_value_bits, compress_weight, pack_bits, unpack_bits
from tinytorch.compression.prune import (iterative_prune, magnitude_prune, measure_sparsity, prunable_layers,
                                         prunable_weights)
from tinytorch.compression.qat import quantize_aware_finetune, share_weights
from tinytorch.compression.storage import CODINGS, CompressedModel, _entry_layout, _layer_spec, _varint
from tinytorch.core.checks import is_int

# %% [markdown]
# Two kinds of entry go beyond the lesson's `compress_weight` (`storage_dev.py` describes them):
#
# - `_nm_entry`: an N:M sparse weight (every group of `m` consecutive inputs holds at most `n`
#   nonzeros) stores `n` values per group and their places in it, `log2(m)` bits each, instead of
#   delta gaps. The values are quantized exactly as `compress_weight` quantizes them.
# - `_codebook_entry`: a weight whose surviving values all come from a codebook (k-means weight
#   sharing, `share_weights` in `qat_dev.py`) stores the codebook and one index per value.

# %%
#| export
def _nm_entry(weight: np.ndarray, bits: int, n: int, m: int, per_channel: bool) -> dict:
    "An N:M entry of the `n`:`m` sparse `weight`, its values stored like `compress_weight`'s."
    values, positions = encode_nm(weight, n, m)
    count, width = values.size, position_bits(m)
    flat = np.arange(count) // n * m + unpack_bits(positions, width, count)   # group g, place p: g * m + p
    arrays = {}
    if bits in (32, 16):
        arrays["values"] = weight.ravel()[flat].astype(np.float32 if bits == 32 else np.float16)
    else:  # compress_weight's codes for every weight, of which we keep the stored ones
        dense = compress_weight(weight, bits=bits, index="dense", per_channel=per_channel)["arrays"]
        arrays["values"] = pack_bits(unpack_bits(dense["values"], bits, weight.size)[flat], bits)
        arrays["scale"] = dense["scale"]
    arrays["positions"] = positions
    return {"shape": list(weight.shape), "index": "nm", "bits": int(bits), "index_bits": width,
            "count": int(count), "n": int(n), "m": int(m), "arrays": arrays}


def _codebook_entry(name: str, entry: dict, codebook: np.ndarray) -> dict:
    """`entry` (float32 values) with its values replaced by indices into `codebook`, which is stored too.
    A zero at a stored position (a delta filler, a zero in an N:M group) needs 0.0 in the codebook:
    it is appended if no centroid is exactly 0. Raises ValueError if a value is not in the codebook."""
    values = entry["arrays"]["values"]
    if (values == 0).any() and not (codebook == 0).any():
        codebook = np.append(codebook, np.float32(0.0))
    order = np.argsort(codebook, kind="stable")          # equal centroids: the first one is used
    at = np.minimum(np.searchsorted(codebook[order], values), codebook.size - 1)
    missing = codebook[order][at] != values
    if missing.any():
        raise ValueError(f"codebooks[{name!r}]: {int(missing.sum())} of the weight's {values.size} stored values "
                         f"are not in its codebook (e.g. {values[missing][0]!r}); weights shared by share_weights "
                         "take codebook values only")
    bits = max(1, (codebook.size - 1).bit_length())
    arrays = {key: a for key, a in entry["arrays"].items() if key != "values"}
    arrays |= {"codebook": codebook, "values": pack_bits(order[at], bits)}
    return {**entry, "bits": bits, "arrays": arrays}

# %%
_w = np.array([[0.5, 0.0, -0.25, 0.0, 0.0, 0.0, 1.0, 0.5]], dtype=np.float32)   # 2:4 sparse
_nm = _nm_entry(_w, 32, 2, 4, per_channel=False)
assert _nm["count"] == 4 and _nm["arrays"]["values"].tolist() == [0.5, -0.25, 1.0, 0.5]
assert unpack_bits(_nm["arrays"]["positions"], 2, 4).tolist() == [0, 2, 2, 3]
_shared = _codebook_entry("w", _nm, np.array([1.0, -0.25, 0.5], dtype=np.float32))
assert _shared["bits"] == 2 and unpack_bits(_shared["arrays"]["values"], 2, 4).tolist() == [2, 1, 0, 2]
print("✓ an N:M entry stores 2 values and 2 places per group; a codebook entry stores indices")

# %% [markdown]
# `compress` checks its arguments before it touches the model, then builds one entry per weight:
# with a codebook if one is given for it, else as N:M positions if `nm` is given and the weight
# is N:M sparse (its rows must tile into groups of `m`), else with the lesson's `compress_weight`.
#
# **One call, the smallest file.** The defaults are the recipe's best storage, so that
# `compress(model, 0.95, bits=3, train_data=train)` with nothing else writes the smallest file
# the recipe knows: `coding="huffman"` (each stream is Huffman-coded only where that is smaller,
# so it is never larger than `"fixed"`), INT8 biases (`bias_bits=8`: a bias is one number per
# output, 8 bits lose nothing measurable) and `index_bits=None`, which tries every delta width
# from 2 to 16 bits for each weight and keeps the one whose entry takes the fewest bytes. The
# best width depends on the sparsity: narrow deltas need filler entries across long gaps, wide
# ones waste bits on short gaps, and Huffman coding shifts the balance again, so it is measured,
# not guessed. Pass `coding="fixed"`, `bias_bits=32` or an `index_bits` to store exactly what
# you ask for (the lesson's exercises do).

# %%
#| export
def _check_nm(nm) -> tuple | None:
    ok = nm is None or (isinstance(nm, (tuple, list)) and len(nm) == 2
                        and all(is_int(v) for v in nm)
                        and 2 <= nm[1] <= 1 << 16 and 1 <= nm[0] <= nm[1])
    if not ok:
        raise ValueError(f"nm must be None or a pair (n, m) of ints with 1 <= n <= m and 2 <= m <= 65536, got {nm!r}")
    return None if nm is None else (int(nm[0]), int(nm[1]))


def _check_codebooks(codebooks, names: list) -> dict:
    "`{weight name: float32 codebook}`; a value may be a codebook or `share_weights`' (codebook, indices)."
    if codebooks is None:
        return {}
    if not isinstance(codebooks, dict):
        raise ValueError(f"codebooks must be a dict {{weight name: codebook}}, got {type(codebooks).__name__}")
    unknown = sorted(set(codebooks) - set(names))
    if unknown:
        raise ValueError(f"codebooks: no prunable weight named {unknown}; prunable weights are {names}")
    checked = {}
    for name, value in codebooks.items():
        book = np.asarray(value[0] if isinstance(value, tuple) else value)
        if book.ndim != 1 or not 1 <= book.size <= 256 or book.dtype.kind not in "fiu" \
                or not np.isfinite(book).all():
            raise ValueError(f"codebooks[{name!r}] must be a 1-d array of 1 to 256 finite numbers, "
                             f"got shape {book.shape} and dtype {book.dtype}")
        checked[name] = book.astype(np.float32)
    return checked


def _fits_nm(weight: np.ndarray, n: int, m: int) -> bool:
    "Whether `weight` is `n`:`m` sparse along its inputs (False when its rows do not tile into groups of `m`)."
    try:
        return weight.ndim >= 2 and is_nm_sparse(weight, n, m)
    except ValueError:   # rows not a multiple of m: no N:M storage for this layer
        return False


DELTA_WIDTHS = tuple(range(2, 17))   # the delta widths index_bits=None chooses from (the format allows 1..16)


def _entry_bytes(entry: dict, coding: str) -> int:
    "Bytes an entry takes in a version-2 file: its header fields and its payload."
    fields, chunks = _entry_layout(entry, coding)
    return sum(len(_varint(field)) for field in fields) + sum(len(data) for _, data in chunks)


def _smallest_delta_entry(name: str, weight: np.ndarray, bits: int, per_channel: bool, coding: str,
                          codebook: np.ndarray | None) -> dict:
    "The delta entry of `weight` at the width in DELTA_WIDTHS that stores it in the fewest bytes (narrowest on a tie)."
    best, best_bytes = None, None
    for width in DELTA_WIDTHS:
        entry = compress_weight(weight, bits=bits, index="delta", index_bits=width, per_channel=per_channel)
        if codebook is not None:
            entry = _codebook_entry(name, entry, codebook)
        size = _entry_bytes(entry, coding)
        if best_bytes is None or size < best_bytes:
            best, best_bytes = entry, size
    return best


def _train_recipe(model, train_data, sparsity, bits: int, nm, per_channel: bool, steps: int,
                  epochs_per_step: int, qat_epochs: int, lr: float, share: bool) -> tuple:
    "Prune (if needed) and fine-tune `model` in place with its quantizer in the loop; returns it and its codebooks."
    if share and bits > 8:
        raise ValueError(f"share=True needs bits from 2 to 8 (a codebook of 2**bits centroids), got {bits}")
    if nm is not None:
        nm_prune(model, *nm, layers=[name for name, layer in prunable_layers(model)
                                      if _fits_nm(np.zeros(layer.weight.shape), *nm)])
    elif sparsity is not None:
        weights = prunable_weights(model)
        total = sum(w.size for _, w in weights)
        if measure_sparsity(model) < sparsity - 0.5 / total:   # not yet pruned that far
            iterative_prune(model, train_data, sparsity, steps=steps, epochs_per_step=epochs_per_step,
                            lr=lr, progress=False)
    if bits > 8:
        return model, {}                                       # FP16/FP32 values: nothing to fine-tune for
    if share:
        model, shared = share_weights(model, bits, train_data=train_data, epochs=qat_epochs, lr=lr)
        return model, {name: book for name, (book, _) in shared.items()}
    quantize_aware_finetune(model, train_data, bits, epochs=qat_epochs, lr=lr, per_channel=per_channel)
    return model, {}


def compress(model, sparsity: float | None = None, bits: int = 8, index: str = "delta", index_bits: int | None = None,
             per_channel: bool = False, bias_bits: int = 8, scope: str = "global", min_keep: float = 0.0,
             coding: str = "huffman", nm=None, codebooks=None, train_data=None, steps: int = 10,
             epochs_per_step: int = 3, qat_epochs: int = 10, lr: float = 3e-3, share: bool = False) -> CompressedModel:
    """Prune a copy of `model` to `sparsity` (None: keep its zeros as they are) and store every prunable
    weight with `compress_weight`; the other parameters (biases) are stored densely with `bias_bits`.

    With `train_data` ((X, y) batches, as for `iterative_prune`) it runs the whole recipe on a copy:
    a model not yet at `sparsity` is pruned gradually with fine-tuning (`iterative_prune`: `steps`
    steps of `epochs_per_step` epochs; with `nm`, one-shot to the n:m pattern instead), then it is
    fine-tuned for `qat_epochs` with its `bits`-bit quantizer in the forward pass and its masks kept
    (`quantize_aware_finetune`), or, with `share=True`, its weights are shared through a k-means
    codebook per layer whose centroids are fine-tuned (`share_weights`). Adam from `lr` throughout.

    The defaults write the smallest file the recipe knows: `coding="huffman"` (each stream of codes,
    values, deltas, N:M positions and INT8 bias codes, Huffman-coded when that is smaller; "fixed":
    every code at its bit width), `bias_bits=8`, and `index_bits=None`: each delta-indexed weight
    takes the width (2..16 bits) that stores it in the fewest bytes; an int fixes the width.
    `nm=(n, m)`: weights that are n:m sparse along their inputs store their positions with
    log2(m) bits each (the others use `index`). `codebooks={weight name: codebook}` (a 1-d array,
    or `share_weights`' `(codebook, indices)`): that weight stores the codebook and one index per
    value instead of `bits`-bit codes and scales; every surviving weight must be a codebook value.

    Error contract (ValueError): "coding must be one of"; "nm must be None or a pair"; a codebook
    that "must be a 1-d array"; "no prunable weight named"; stored values "not in its codebook";
    and the errors of `compress_weight` and `magnitude_prune`.
    """
    architecture = _layer_spec(model)
    check_value_bits(bias_bits)
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    nm = _check_nm(nm)
    books = _check_codebooks(codebooks, [name for name, _ in prunable_weights(model)])
    model = copy.deepcopy(model)
    if train_data is not None:
        model, recipe_books = _train_recipe(model, train_data, sparsity, bits, nm, per_channel, steps,
                                            epochs_per_step, qat_epochs, lr, share)
        books |= recipe_books
    elif sparsity is not None:
        magnitude_prune(model, sparsity, scope=scope, min_keep=min_keep)
    weights = {}
    for name, w in prunable_weights(model):
        data = np.asarray(w.data, dtype=np.float32)
        value_bits = 32 if name in books else bits   # a codebook entry starts from the exact values
        if nm is not None and _fits_nm(data, *nm):
            entry = _nm_entry(data, value_bits, *nm, per_channel=per_channel)
        elif index == "delta" and index_bits is None:   # the width measured to store this weight smallest
            weights[name] = _smallest_delta_entry(name, data, value_bits, per_channel, coding, books.get(name))
            continue
        else:
            entry = compress_weight(data, bits=value_bits, index=index, index_bits=8 if index_bits is None else index_bits,
                                    per_channel=per_channel)
        weights[name] = _codebook_entry(name, entry, books[name]) if name in books else entry
    biases = {name: compress_weight(p.data, bits=bias_bits, index="dense")
              for name, p in model.named_parameters() if name not in weights}
    return CompressedModel(architecture, weights, biases, coding=coding)


# The recipe settings for the course's reference digits models (digits_mlp, digits_cnn) that the
# benchmark's table 3b measures (tito bench 18) and `tito compress` uses by default.
DIGITS_RECIPES = {"mlp": {"sparsity": 0.95, "bits": 3, "index_bits": 6},
                  "cnn": {"sparsity": 0.9, "bits": 4, "index_bits": 4}}


def save_dense(model, path) -> int:
    "The FP32 baseline: every parameter as float32, in the same file format; returns bytes written."
    return compress(model, sparsity=None, bits=32, index="dense", bias_bits=32).save(path)

# %%
import tempfile
from pathlib import Path

from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.compression.nm import nm_prune
from tinytorch.compression.prune import measure_sparsity
from tinytorch.compression.storage import load_compressed

net = Sequential(Linear(8, 6, rng=0), ReLU(), Linear(6, 2, rng=0))
cm = compress(net, sparsity=0.5, bits=8)
assert measure_sparsity(cm.decompress()) == 0.5           # 30 of the 60 weights, ranked over both layers
with tempfile.TemporaryDirectory() as tmp:
    dense_bytes = save_dense(net, Path(tmp) / "dense.ttcz")
    small_bytes = cm.save(Path(tmp) / "small.ttcz")
    nm_net = nm_prune(Sequential(Linear(8, 6, rng=0), ReLU(), Linear(6, 2, rng=0)), 2, 4, layers=["0"])
    book = np.unique(np.round(nm_net[0].weight.data, 1))
    nm_net[0].weight.data[...] = np.round(nm_net[0].weight.data, 1)   # shared values: a codebook
    nm_cm = compress(nm_net, bits=4, nm=(2, 4), coding="huffman", codebooks={"0.weight": book})
    nm_cm.save(Path(tmp) / "nm.ttcz")
    loaded = load_compressed(Path(tmp) / "nm.ttcz").decompress()
assert small_bytes < dense_bytes
assert nm_cm.weights["0.weight"]["index"] == "nm" and "codebook" in nm_cm.weights["0.weight"]["arrays"]
assert np.array_equal(loaded[0].weight.data, nm_net[0].weight.data)     # codebook values, exactly
print(f"✓ compress: {small_bytes:,} bytes against {dense_bytes:,} for FP32; 2:4 with a codebook round-trips exactly")
