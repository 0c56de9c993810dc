# %% [markdown]
# # Module 18, given code: a sparse layer
#
# > `SparseLinear` stores a pruned `Linear` in CSR and multiplies with the lesson's `csr_matmul`;
# > `to_sparse` converts a whole model. Read it; you do not edit it.

# %%
#| default_exp compression.sparse

# %%
#| export
import copy

import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.layers import Linear, Module, Sequential
from tinytorch.compression.encoding import encode_csr
from tinytorch.compression.inference import benchmark_inference, csr_matmul

# %%
#| export
class SparseLinear(Module):
    "Inference-only Linear whose weight is stored in CSR form (values, int32 column indices, int32 row offsets)."

    def __init__(self, weight, bias=None):
        super().__init__()
        weight = np.asarray(weight.data if isinstance(weight, Tensor) else weight, dtype=np.float32)
        if weight.ndim != 2:
            raise ValueError(f"SparseLinear needs a 2-d weight (out, in), got shape {weight.shape}")
        self.out_features, self.in_features = weight.shape
        self.data, self.indices, self.indptr = encode_csr(weight)
        self.bias = None if bias is None else np.array(bias.data if isinstance(bias, Tensor) else bias,
                                                       dtype=np.float32)

    @classmethod
    def from_linear(cls, linear: Linear) -> "SparseLinear":
        return cls(linear.weight.data, None if linear.bias is None else linear.bias.data)

    @property
    def nnz(self) -> int:
        return int(self.data.size)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes +
                   (0 if self.bias is None else self.bias.nbytes))

    def forward(self, x) -> Tensor:
        x = x.data if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expected input with last dimension {self.in_features}, got {x.shape}")
        out = csr_matmul(self.data, self.indices, self.indptr, x.reshape(-1, self.in_features))
        if self.bias is not None:
            out = out + self.bias
        return Tensor(out.reshape(*x.shape[:-1], self.out_features))

    def extra_repr(self) -> str:
        density = self.nnz / (self.out_features * self.in_features)
        return f"in_features={self.in_features}, out_features={self.out_features}, density={density:.3f}"


def to_sparse(model):
    "A copy of a Sequential with every Linear replaced by a SparseLinear (for inference)."
    if not isinstance(model, Sequential):
        raise TypeError(f"to_sparse needs a Sequential, got {type(model).__name__}")
    layers = {}
    for name, child in model.named_children():
        layers[name] = SparseLinear.from_linear(child) if isinstance(child, Linear) else copy.deepcopy(child)
    return Sequential(layers)


def measure_speedup(baseline, candidate, x, **kwargs) -> float:
    "How many times faster `candidate(x)` runs than `baseline(x)` (ratio of median times)."
    return benchmark_inference(baseline, x, **kwargs)["median"] / benchmark_inference(candidate, x, **kwargs)["median"]

# %%
from tinytorch.core.layers import Linear as _Linear

dense = _Linear(6, 4, rng=0)
dense.weight.data[np.abs(dense.weight.data) < 0.3] = 0
x = Tensor(np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32))
sparse = SparseLinear.from_linear(dense)
assert np.allclose(sparse(x).data, dense(x).data, atol=1e-6)
print(f"✓ SparseLinear computes what the dense layer computes, storing {sparse.nnz} of {dense.weight.size} weights")
