# %% [markdown]
# # Module 18, given code: compress a model in one call
#
# > `compress` prunes a copy of a model and stores every weight with the lesson's `compress_weight`;
# > `save_dense` writes the FP32 baseline in the same format. Read it; you do not edit it.

# %%
#| default_exp compression.pipeline

# %%
#| export
import copy

from tinytorch.compression.prune import compress_weight, magnitude_prune, prunable_weights
from tinytorch.compression.storage import CompressedModel, _check_value_bits, _layer_spec

# %%
#| export
def compress(model, sparsity: float | None = None, bits: int = 8, index: str = "delta", index_bits: int = 8,
             per_channel: bool = False, bias_bits: int = 32, scope: str = "global",
             min_keep: float = 0.0) -> CompressedModel:
    """Prune a copy of `model` to `sparsity` (None: keep its zeros as they are) and store every prunable
    weight with `compress_weight`; the other parameters (biases) are stored densely with `bias_bits`."""
    architecture = _layer_spec(model)
    _check_value_bits(bias_bits)
    model = copy.deepcopy(model)
    if sparsity is not None:
        magnitude_prune(model, sparsity, scope=scope, min_keep=min_keep)
    weights = {name: compress_weight(w.data, bits=bits, index=index, index_bits=index_bits,
                                     per_channel=per_channel) for name, w in prunable_weights(model)}
    biases = {name: compress_weight(p.data, bits=bias_bits, index="dense")
              for name, p in model.named_parameters() if name not in weights}
    return CompressedModel(architecture, weights, biases)


def save_dense(model, path) -> int:
    "The FP32 baseline: every parameter as float32, in the same file format; returns bytes written."
    return compress(model, sparsity=None, bits=32, index="dense", bias_bits=32).save(path)

# %%
import tempfile
from pathlib import Path

from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.compression.prune import measure_sparsity

net = Sequential(Linear(8, 6, rng=0), ReLU(), Linear(6, 2, rng=0))
cm = compress(net, sparsity=0.5, bits=8)
assert measure_sparsity(cm.decompress()) == 0.5           # 30 of the 60 weights, ranked over both layers
with tempfile.TemporaryDirectory() as tmp:
    dense_bytes = save_dense(net, Path(tmp) / "dense.ttcz")
    small_bytes = cm.save(Path(tmp) / "small.ttcz")
assert small_bytes < dense_bytes
print(f"✓ compress: {small_bytes:,} bytes against {dense_bytes:,} for FP32")
