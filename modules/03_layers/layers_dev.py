# %% [markdown]
# # Module 03: Layers
#
# > `Module`, `Linear`, `Sequential`, `Flatten` and `Dropout`: networks as trees of layers that own their parameters.
#
# A network is a tree: a `Sequential` holds layers, a layer holds weight tensors. Training
# needs every weight (`parameters()`), compression needs them by name (`"0.weight"`), and
# saving needs plain arrays (`state_dict()`). `Module` gives all of that to any layer that
# simply assigns its tensors and sub-layers as attributes, exactly like PyTorch's
# `nn.Module`.

# %%
#| default_exp core.layers

# %%
#| export
import numpy as np
from tinytorch.core.tensor import Tensor, get_rng
from tinytorch.core.activations import Activation
from tinytorch.core.checks import is_int, is_real

# %% [markdown]
# ## 1. Module: automatic bookkeeping
# `Module.__setattr__` watches attribute assignment:
#
# - a `Tensor` with `requires_grad=True` becomes a **parameter**,
# - a `Module` (or a weight-free `Activation` from Module 02) becomes a **child**.
#
# Both are remembered in assignment order, so `parameters()` is stable, and names are
# built by joining attribute names with dots: a `Linear` stored as child `"0"` of a
# `Sequential` owns `"0.weight"` and `"0.bias"`.
#
# `state_dict()` copies every parameter into a plain `name -> np.ndarray` dict;
# `load_state_dict()` checks names and shapes *before* copying anything, so a bad
# checkpoint never leaves a model half-loaded.

# %%
#| export
def _rng(rng) -> np.random.Generator:
    "A Generator from `rng` (Generator, int seed or None = the library-wide generator)."
    if rng is None:
        return get_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if is_int(rng):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


class Module:
    "Base class for layers: registers parameters and sub-layers assigned as attributes."

    def __init__(self):
        # object.__setattr__ because our own __setattr__ needs these dicts to exist.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes (tried to set '{name}')")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Tensor) and value.requires_grad:
            self._parameters[name] = value
        elif isinstance(value, (Module, Activation)):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # -- running --------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- walking the tree -----------------------------------------------------------
    def named_children(self) -> list:
        return list(self._modules.items())

    def children(self) -> list:
        return [child for _, child in self.named_children()]

    def named_modules(self, prefix: str = "") -> list:
        "(name, module) pairs: self first (name ''), then children depth-first."
        found = [(prefix, self)]
        for name, child in self._modules.items():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, Module):
                found.extend(child.named_modules(full))
            else:
                found.append((full, child))
        return found

    def modules(self) -> list:
        return [module for _, module in self.named_modules()]

    def named_parameters(self, prefix: str = "") -> list:
        "(dotted name, Tensor) pairs in registration order; a shared Tensor is listed once."
        found, seen = [], set()
        for module_name, module in self.named_modules(prefix):
            if not isinstance(module, Module):
                continue
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    found.append((f"{module_name}.{name}" if module_name else name, param))
        return found

    def parameters(self) -> list:
        return [param for _, param in self.named_parameters()]

    # -- modes and gradients ----------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        "Set training mode here and in every sub-module (Dropout cares); returns self."
        for module in self.modules():
            if isinstance(module, Module):
                object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None

    # -- saving and loading -------------------------------------------------------------
    def state_dict(self) -> dict:
        "Parameter name -> a copy of its array."
        return {name: param.data.copy() for name, param in self.named_parameters()}

    def load_state_dict(self, state_dict: dict) -> None:
        "Copy arrays (or Tensors) into the parameters; names and shapes must match exactly."
        params = dict(self.named_parameters())
        arrays = {name: value.data if isinstance(value, Tensor) else value for name, value in state_dict.items()}
        missing = [name for name in params if name not in arrays]
        unexpected = [name for name in arrays if name not in params]
        if missing or unexpected:
            raise KeyError(f"state_dict does not match {type(self).__name__}: "
                           f"missing keys {missing}, unexpected keys {unexpected}")
        for name, param in params.items():
            shape = np.shape(arrays[name])
            if shape != param.shape:
                raise ValueError(f"state_dict['{name}'] has shape {shape}, "
                                 f"but the parameter has shape {param.shape}")
        for name, param in params.items():
            # In place, so optimizers holding this Tensor keep seeing the live weights.
            param.data[...] = np.asarray(arrays[name], dtype=param.data.dtype)

    # -- printing -------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        # PyTorch's layout: one line if there are no children, else one indented line each.
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        if self.extra_repr():
            lines.insert(0, self.extra_repr())
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

# %% [markdown]
# A quick check with a hand-made module: the weight registers, a plain attribute does
# not, and a nested module's parameters get dotted names.

# %%
class Scale(Module):
    def __init__(self):
        super().__init__()
        self.gain = Tensor(np.ones(3), requires_grad=True)
        self.note = "not a parameter"

    def forward(self, x):
        return x * self.gain

class Outer(Module):
    def __init__(self):
        super().__init__()
        self.inner = Scale()
        self.offset = Tensor(np.zeros(3), requires_grad=True)

outer = Outer()
# PyTorch's order: a module's own parameters first, then each child's, depth-first
assert [name for name, _ in outer.named_parameters()] == ["offset", "inner.gain"]
assert [name for name, _ in outer.named_modules()] == ["", "inner"]
assert outer.eval().inner.training is False and outer.train().inner.training is True
saved = outer.state_dict()
saved["offset"] += 5.0                                    # a copy: the model is untouched
assert outer.offset.data.sum() == 0.0
outer.load_state_dict(saved)
assert np.all(outer.offset.data == 5.0)
print("✓ Module registers parameters and children by name, in order")

# %% [markdown]
# ## 2. Linear
# `y = x @ W.T + b` with `W` of shape `(out_features, in_features)`: PyTorch's layout,
# one row of weights per output unit (handy later: pruning a whole output neuron is
# zeroing one row).
#
# Initialisation follows PyTorch: `W` and `b` uniform in `[-1/sqrt(in), 1/sqrt(in)]`, so
# each output starts with a variance that does not grow with the number of inputs.

# %%
#| export
def _check_input(x, layer) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(layer).__name__} expects a Tensor, got {type(x).__name__}; wrap it: Tensor(x)")


def _positive_int(value, name: str) -> int:
    if not is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class Linear(Module):
    "Fully connected layer `y = x @ weight.T + bias`, weight of shape (out_features, in_features)."

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        generator = _rng(rng)
        bound = 1.0 / np.sqrt(self.in_features)
        weight = generator.uniform(-bound, bound, size=(self.out_features, self.in_features))
        self.weight = Tensor(weight, requires_grad=True)
        if bias:
            self.bias = Tensor(generator.uniform(-bound, bound, size=self.out_features), requires_grad=True)
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expected input with last dimension {self.in_features} "
                             f"(in_features), got input of shape {x.shape}")
        out = x @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

# %%
layer = Linear(3, 2, rng=np.random.default_rng(0))
assert layer.weight.shape == (2, 3) and layer.bias.shape == (2,)
assert np.all(np.abs(layer.weight.data) <= 1 / np.sqrt(3))
x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
assert np.allclose(layer(Tensor(x)).data, x @ layer.weight.data.T + layer.bias.data, atol=1e-6)
assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
assert [name for name, _ in Linear(3, 2, bias=False).named_parameters()] == ["weight"]
try:
    layer(Tensor(np.ones((4, 5))))
    raise AssertionError("a wrong input width must raise")
except ValueError as err:
    assert "3" in str(err) and "(4, 5)" in str(err)
print("✓ Linear computes x @ W.T + b and checks its input width")

# %% [markdown]
# ## 3. Sequential and Flatten
# `Sequential` runs its layers in order and names them `"0"`, `"1"`, ... It behaves like a
# list: `len`, iteration, indexing, and slicing (which keeps the original names, as in
# PyTorch, so `model[2:]` still owns `"2.weight"`).
#
# `Flatten` turns `(N, C, H, W)` images into `(N, C*H*W)` rows so a `Linear` can read them.

# %%
#| export
class Sequential(Module):
    "Layers applied in order; `Sequential(a, b)` or `Sequential({'name': a, ...})`."

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], dict):
            named = list(layers[0].items())
        else:
            named = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in named:
            if not isinstance(layer, (Module, Activation)):
                raise TypeError(f"Sequential layer '{name}' must be a Module or an activation, "
                                f"got {type(layer).__name__}")
            self._modules[str(name)] = layer
            object.__setattr__(self, str(name), layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(dict(items[index]))
        if not is_int(index):
            raise TypeError(f"Sequential indices must be ints or slices, got {type(index).__name__}")
        if not -len(items) <= index < len(items):
            raise IndexError(f"index {index} is out of range for a Sequential of {len(items)} layers")
        return items[index][1]


class Flatten(Module):
    "Flatten dimensions `start_dim`..last into one: (N, C, H, W) -> (N, C*H*W)."

    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self)
        if not -x.ndim <= self.start_dim < x.ndim:
            raise ValueError(f"Flatten start_dim={self.start_dim} is out of range for input of shape {x.shape}")
        start = self.start_dim % x.ndim
        kept = tuple(x.shape[:start])
        return x.reshape(*kept, int(np.prod(x.shape[start:])))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"

# %% [markdown]
# A three-layer network and its PyTorch-style names: ReLU has no weights, so the names
# jump from `"0.*"` to `"2.*"`.

# %%
from tinytorch.core.activations import ReLU

rng = np.random.default_rng(0)
net = Sequential(Flatten(), Linear(4, 5, rng=rng), ReLU(), Linear(5, 2, rng=rng))
names = [name for name, _ in net.named_parameters()]
assert names == ["1.weight", "1.bias", "3.weight", "3.bias"], names
assert [name for name, _ in net.named_modules()] == ["", "0", "1", "2", "3"]
assert net(Tensor(np.ones((6, 2, 2)))).shape == (6, 2)
assert len(net) == 4 and isinstance(net[-1], Linear)
assert [name for name, _ in net[3:].named_parameters()] == ["3.weight", "3.bias"]
print(net)
print("✓ Sequential chains layers and names parameters like PyTorch")

# %% [markdown]
# ## 4. Dropout
# During training, Dropout zeroes each activation with probability `p`, so the network
# cannot rely on any single unit. Survivors are scaled by `1/(1-p)` ("inverted dropout")
# so the expected activation is unchanged, which means evaluation needs no correction:
# in `eval()` mode Dropout is the identity.

# %%
#| export
class Dropout(Module):
    "Inverted dropout: in training, zero each entry with probability p and scale the rest by 1/(1-p)."

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if not is_real(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout probability p must be in [0, 1], got {p!r}")
        self.p = float(p)
        # None: draw from the library-wide generator at call time, so manual_seed() applies.
        self.rng = None if rng is None else _rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self)
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * np.zeros(x.shape, dtype=x.data.dtype)
        generator = self.rng if self.rng is not None else get_rng()
        keep = generator.random(x.shape) >= self.p
        return x * (keep / (1.0 - self.p)).astype(x.data.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"

# %%
drop = Dropout(p=0.25, rng=np.random.default_rng(0))
out = drop(Tensor(np.ones((200, 50)))).data
assert np.allclose(np.unique(out), [0.0, 1 / 0.75])     # dropped, or scaled by 1/(1-p)
assert abs((out == 0).mean() - 0.25) < 0.02          # about p of the entries dropped
assert np.all(drop.eval()(Tensor(np.ones((2, 3)))).data == 1.0)
print("✓ Dropout drops about p of the entries, rescales the rest, and is the identity in eval()")

# %% [markdown]
# ## Summary
# - Assigning a `Tensor(requires_grad=True)` or a layer as an attribute is all a layer
#   needs: `Module` finds parameters, names them and saves them.
# - Names like `"0.weight"` are how later modules (optimizers, pruning, quantization)
#   address individual weight tensors.
# - `train()`/`eval()` flip every sub-layer; only Dropout changes behaviour here.
