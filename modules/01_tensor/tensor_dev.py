# %% [markdown]
# # Module 01: Tensor
#
# > A NumPy-backed `Tensor`: the data structure every later module builds on.
#
# A neural network is arithmetic on arrays of numbers. `Tensor` wraps a NumPy array and gives
# it the operations networks need: elementwise arithmetic with broadcasting, matrix multiply,
# reshaping, indexing and reductions. This module only computes values (the *forward* pass);
# module 05 teaches the same operations to compute gradients.

# %%
#| default_exp core.tensor

# %%
#| export
import numbers

import numpy as np

from tinytorch.core.checks import is_int

# %% [markdown]
# ## 1. One seeded random generator
#
# Layers draw initial weights, dropout draws masks, data loaders shuffle. If each of them made
# its own unseeded generator, no two runs would agree. The library keeps one
# `np.random.Generator`; `manual_seed(seed)` replaces it, so a whole experiment becomes
# reproducible with one call. Code that needs randomness and got no `rng`/`seed` argument uses
# `get_rng()`.

# %%
#| export
_default_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    "Reset the library-wide random generator to `seed` (a non-negative int) and return it."
    global _default_rng
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _default_rng = np.random.default_rng(int(seed))
    return _default_rng


def get_rng() -> np.random.Generator:
    "The library-wide generator used when no `rng` or `seed` is given."
    return _default_rng

# %%
manual_seed(42)
first = get_rng().random(3)
manual_seed(42)
assert np.array_equal(get_rng().random(3), first), "same seed must give the same numbers"
try:
    manual_seed(-1)
    raise AssertionError("a negative seed must be rejected")
except ValueError as err:
    assert "got -1" in str(err)
print("✓ manual_seed makes get_rng() reproducible")

# %% [markdown]
# ## 2. Array helpers with clear errors
#
# NumPy already broadcasts and multiplies matrices; we only wrap it so that a shape mistake
# says which shapes met and what was expected. Module 05 reuses these helpers, so the messages
# stay the same once gradients are switched on.
#
# *Broadcasting* lines shapes up from the right; each pair of sizes must be equal or one of
# them 1, and size-1 axes are stretched: `(64, 10) + (10,)` adds the bias row to every sample.

# %%
#| export
def _coerce(value, dtype):
    "A non-Tensor operand as something NumPy can combine with a `dtype` array, or None if it is not numeric."
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value  # Python numbers adapt to the array's dtype (NumPy 2 promotion rules)
    # NumPy scalars keep their own dtype (np.sqrt(2) is float64), so convert them like arrays.
    if isinstance(value, (np.ndarray, np.generic, list, tuple, numbers.Number)):
        try:
            return np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"expected numbers (a scalar, nested list or np.ndarray), "
                            f"got {type(value).__name__}: {exc}") from None
    return None


def _broadcast_op(op, a, b, name: str) -> np.ndarray:
    "Apply the NumPy ufunc `op` to `a` and `b`, naming both shapes if they do not broadcast."
    try:
        return op(a, b)
    except ValueError:
        raise ValueError(f"cannot {name} shapes {np.shape(a)} and {np.shape(b)}: they do not "
                         "broadcast (compared from the right, sizes must match or be 1)") from None


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    "`a @ b` with NumPy's rules (1-D vectors, batched stacks), naming the shapes on a mismatch."
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs operands with at least 1 dimension, got shapes {a.shape} "
                         f"and {b.shape} (use * to multiply by a scalar)")
    inner_a = a.shape[-1]
    inner_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if inner_a != inner_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are incompatible: the last "
                         f"dimension of the left ({inner_a}) must equal the "
                         f"{'second-to-last' if b.ndim > 1 else 'only'} dimension of the right ({inner_b})")
    try:
        return np.matmul(a, b)
    except ValueError:
        raise ValueError(f"matmul: the batch dimensions of shapes {a.shape} and {b.shape} "
                         "do not broadcast") from None


def _reshape_target(old_shape: tuple, shape: tuple) -> tuple:
    "Validate `shape` (ints, at most one -1) against `old_shape` and return the resolved shape."
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])  # reshape((2, 3)) and reshape(2, 3) both work
    if not all(is_int(n) for n in shape):
        raise TypeError(f"reshape expects integer sizes, got {shape}")
    shape = tuple(int(n) for n in shape)
    size = int(np.prod(old_shape, dtype=np.int64))
    unknown = [i for i, n in enumerate(shape) if n == -1]
    known = int(np.prod([n for n in shape if n != -1], dtype=np.int64))
    if len(unknown) > 1 or any(n < -1 for n in shape):
        raise ValueError(f"reshape sizes must be >= 0 with at most one -1, got {shape}")
    if unknown:
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape tensor of shape {old_shape} ({size} elements) into {shape}")
        shape = shape[:unknown[0]] + (size // known,) + shape[unknown[0] + 1:]
    elif known != size:
        raise ValueError(f"cannot reshape tensor of shape {old_shape} ({size} elements) "
                         f"into {shape} ({known} elements)")
    return shape

# %%
assert _broadcast_op(np.add, np.ones((2, 3)), np.arange(3.0), "add").tolist() == [[1, 2, 3], [1, 2, 3]]
try:
    _broadcast_op(np.add, np.ones((2, 3)), np.ones(2), "add")
    raise AssertionError("(2, 3) and (2,) must not broadcast")
except ValueError as err:
    assert "(2, 3)" in str(err) and "(2,)" in str(err)
assert _matmul(np.ones((2, 3)), np.ones(3)).tolist() == [3.0, 3.0]
try:
    _matmul(np.ones((2, 3)), np.ones((4, 5)))
    raise AssertionError("inner dimensions 3 and 4 must be rejected")
except ValueError as err:
    assert "(3)" in str(err) and "(4)" in str(err)
assert _reshape_target((2, 6), (3, -1)) == (3, 4)
assert _reshape_target((2, 6), ((4, 3),)) == (4, 3)
print("✓ array helpers broadcast, multiply and reshape with shape-naming errors")

# %% [markdown]
# ## 3. The Tensor class
#
# A `Tensor` holds `.data`, a NumPy array (float32 unless you ask for another `dtype`; an
# array that already has that dtype is used as is, not copied, like `torch.from_numpy`). Three
# more attributes wait for later modules:
#
# - `requires_grad` and `grad`: module 05 fills `.grad` with the gradient of a loss;
# - `mask`: `None`, or a boolean array of the tensor's shape. Optimizers (06) keep the entries
#   where the mask is `False` at exactly zero; that is how pruning (18) removes weights.
#
# Every operation returns a new Tensor. A Python number, list or `np.ndarray` may stand on
# either side of an operator; it is converted to the tensor's dtype first.

# %%
#| export
class Tensor:
    "An n-dimensional array of numbers (float32 by default) with the operations networks need."

    # NumPy must not absorb a Tensor into an array: `ndarray + Tensor` calls Tensor.__radd__.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=np.float32):
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, (str, bytes)) or data is None or isinstance(data, (dict, set)):
            raise TypeError(f"Tensor data must be numbers (a scalar, nested list or np.ndarray), "
                            f"got {type(data).__name__}: {data!r}")
        try:
            self.data = np.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Tensor data must be numbers (a scalar, nested list or np.ndarray), "
                            f"got {type(data).__name__}: {exc}") from None
        if self.data.dtype == object:
            raise TypeError(f"Tensor data must be numbers, got an array of Python objects: {data!r}")
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._mask = None

    @staticmethod
    def _wrap(array) -> "Tensor":
        "A Tensor around an array an operation just produced (fast: no conversion, no checks)."
        t = Tensor.__new__(Tensor)
        t.data = array if type(array) is np.ndarray else np.asarray(array)
        t.requires_grad = False
        t.grad = None
        t._mask = None
        return t

    # ---- the pruning mask -------------------------------------------------------------
    @property
    def mask(self):
        "None, or a boolean array of `.shape`; False entries are frozen at zero by optimizers."
        return self._mask

    @mask.setter
    def mask(self, value):
        if value is not None:
            if not isinstance(value, np.ndarray) or value.dtype != np.bool_:
                raise TypeError(f"mask must be None or a boolean np.ndarray, got "
                                f"{type(value).__name__}{'' if not isinstance(value, np.ndarray) else ' of dtype ' + str(value.dtype)}")
            if value.shape != self.data.shape:
                raise ValueError(f"mask shape must equal the tensor shape {self.data.shape}, got {value.shape}")
        self._mask = value

    # ---- what it is ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def numpy(self) -> np.ndarray:
        "The underlying array (shared, not copied)."
        return self.data

    def item(self) -> float:
        "The single value of a one-element tensor as a Python number."
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, got shape {self.shape}")
        return self.data.item()

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor is undefined; use .item()")
        return self.data.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(", precision=4)
        extras = "" if self.data.dtype == np.float32 else f", dtype={self.data.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        return f"Tensor({body}{extras})"

    # ---- elementwise arithmetic (broadcasting) -------------------------------------------
    def _other(self, other):
        "The other operand as an array (or Python scalar); None means 'not something we add'."
        if isinstance(other, Tensor):
            return other.data
        return _coerce(other, self.data.dtype)

    def _elementwise(self, other, op, name: str):
        "`op(self, other)` with broadcasting; NotImplemented lets Python try the other operand's method."
        b = self._other(other)
        if b is None:
            return NotImplemented
        return Tensor._wrap(_broadcast_op(op, self.data, b, name))

    def __add__(self, other):
        return self._elementwise(other, np.add, "add")

    def __sub__(self, other):
        return self._elementwise(other, np.subtract, "subtract")

    def __mul__(self, other):
        return self._elementwise(other, np.multiply, "multiply")

    def __truediv__(self, other):
        return self._elementwise(other, np.divide, "divide")

    def __neg__(self):
        return Tensor._wrap(np.negative(self.data))

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Real) or isinstance(exponent, (bool, np.bool_)):
            raise TypeError(f"tensor ** exponent needs a number exponent, got {type(exponent).__name__}")
        if isinstance(exponent, np.generic):
            exponent = exponent.item()  # np.float64(2) would upcast float32 data; 2.0 does not
        return Tensor._wrap(np.power(self.data, exponent))

    # The reflected forms (`2 - t`, `array / t`) turn the left operand into a Tensor and
    # reuse the forward methods, so module 05 has one method per operation to upgrade.
    def _reflect(self, other):
        b = _coerce(other, self.data.dtype)
        return None if b is None else Tensor._wrap(np.asarray(b, dtype=self.data.dtype))

    def __radd__(self, other):
        return self.__add__(other)

    def __rmul__(self, other):
        return self.__mul__(other)

    def __rsub__(self, other):
        left = self._reflect(other)
        return NotImplemented if left is None else left.__sub__(self)

    def __rtruediv__(self, other):
        left = self._reflect(other)
        return NotImplemented if left is None else left.__truediv__(self)

    # ---- linear algebra and shapes ------------------------------------------------------
    def matmul(self, other) -> "Tensor":
        "Matrix product with NumPy's rules: 2-D @ 2-D, batched stacks, 1-D vectors."
        b = other.data if isinstance(other, Tensor) else _coerce(other, self.data.dtype)
        if b is None or np.ndim(b) == 0 and not isinstance(b, np.ndarray):
            raise TypeError(f"matmul needs a Tensor or array operand, got {type(other).__name__}")
        return Tensor._wrap(_matmul(self.data, b))

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        left = self._reflect(other)
        return NotImplemented if left is None else left.matmul(self)

    def reshape(self, *shape) -> "Tensor":
        "Same values, new shape: `t.reshape(2, 3)` or `t.reshape((2, -1))`."
        return Tensor._wrap(self.data.reshape(_reshape_target(self.data.shape, shape)))

    def transpose(self, dim0: int = -2, dim1: int = -1) -> "Tensor":
        "Swap two axes (by default the last two: the matrix transpose)."
        nd = self.data.ndim
        for d in (dim0, dim1):
            if not -nd <= d < nd:
                raise ValueError(f"transpose({dim0}, {dim1}): dimension {d} is out of range "
                                 f"for a tensor of shape {self.shape}")
        return Tensor._wrap(np.swapaxes(self.data, dim0, dim1))

    @property
    def T(self) -> "Tensor":
        "The matrix transpose (last two axes swapped); a 0-d or 1-D tensor is returned unchanged."
        return self if self.data.ndim < 2 else self.transpose(-2, -1)

    def __getitem__(self, key) -> "Tensor":
        "NumPy indexing: ints, slices, None, ..., boolean masks and integer arrays."
        return Tensor._wrap(self.data[_index_key(key)])

    # ---- reductions ---------------------------------------------------------------------
    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        return Tensor._wrap(np.sum(self.data, axis=_axis(axis), keepdims=keepdims))

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        return Tensor._wrap(np.mean(self.data, axis=_axis(axis), keepdims=keepdims))

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        return Tensor._wrap(np.max(self.data, axis=_axis(axis), keepdims=keepdims))

    # ---- elementwise math ---------------------------------------------------------------
    def exp(self) -> "Tensor":
        return Tensor._wrap(np.exp(self.data))

    def log(self) -> "Tensor":
        return Tensor._wrap(np.log(self.data))

    def sqrt(self) -> "Tensor":
        return Tensor._wrap(np.sqrt(self.data))


def _index_key(key):
    "Unwrap Tensors (and lists) inside an index so NumPy sees plain integer or boolean arrays."
    if isinstance(key, tuple):
        return tuple(_index_key(k) for k in key)
    if isinstance(key, Tensor):
        key = key.data
        if np.issubdtype(key.dtype, np.floating):
            if not np.all(key == np.round(key)):
                raise IndexError(f"tensor indices must be whole numbers, got {key}")
            key = key.astype(np.intp)
        return key
    if isinstance(key, list):
        return np.asarray(key)
    return key


def _axis(axis):
    "Reductions take an int, a tuple/list of ints, or None (all axes)."
    return tuple(axis) if isinstance(axis, list) else axis

# %% [markdown]
# ### Creating tensors
# `Tensor([[1, 2], [3, 4]])` is a 2x2 float32 tensor. Strings, `None` or ragged lists are
# rejected at once, with the type that arrived.

# %%
t = Tensor([[1, 2], [3, 4]])
assert t.dtype == np.float32 and t.shape == (2, 2) and t.ndim == 2 and t.size == 4 and len(t) == 2
assert t.grad is None and t.requires_grad is False and t.mask is None
assert Tensor(t).data is t.data, "a Tensor passed in is unwrapped"
assert Tensor([1, 2], dtype=np.float64).dtype == np.float64
assert Tensor(3.5).item() == 3.5
for bad in ["abc", None, [[1, 2], [3]]]:
    try:
        Tensor(bad)
        raise AssertionError(f"Tensor({bad!r}) must fail")
    except TypeError as err:
        assert "got" in str(err)
t.mask = np.array([[True, False], [True, True]])
try:
    t.mask = np.ones((3, 3), dtype=bool)
    raise AssertionError("a mask of the wrong shape must be rejected")
except ValueError as err:
    assert "(2, 2)" in str(err) and "(3, 3)" in str(err)
print(repr(Tensor([1.5, 2.0], requires_grad=True)))
print("✓ Tensor creation, attributes and errors")

# %% [markdown]
# ### Arithmetic and broadcasting
# Check a few values by hand: `[1, 2] * 10 + [[0], [100]]` stretches the row and the column.

# %%
a = Tensor([1.0, 2.0])
b = Tensor([[0.0], [100.0]])
assert (a * 10 + b).data.tolist() == [[10, 20], [110, 120]]
assert (a - 1).data.tolist() == [0, 1] and (1 - a).data.tolist() == [0, -1]
assert (a / 2).data.tolist() == [0.5, 1.0] and (2 / a).data.tolist() == [2.0, 1.0]
assert (-a).data.tolist() == [-1, -2] and (a ** 2).data.tolist() == [1, 4]
assert (np.array([1.0, 1.0]) + a).data.tolist() == [2, 3], "ndarray + Tensor must give a Tensor"
assert (a + np.array([1.0, 1.0])).dtype == np.float32, "operands take the tensor's dtype"
assert (a / np.sqrt(4.0)).dtype == np.float32, "NumPy float64 scalars must not upcast"
try:
    Tensor(np.ones((2, 3))) + Tensor(np.ones(2))
    raise AssertionError("(2, 3) + (2,) must fail")
except ValueError as err:
    assert "(2, 3)" in str(err) and "(2,)" in str(err)
print("✓ + - * / ** and broadcasting")

# %% [markdown]
# ### Matrix multiply, reshape, transpose, indexing
# `x @ W.T` is what a linear layer computes: `(batch, in) @ (in, out) -> (batch, out)`.

# %%
x = Tensor([[1.0, 2.0, 3.0]])
W = Tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
assert (x @ W.T).data.tolist() == [[1.0, 5.0]]
assert (np.ones((1, 2)) @ W).data.tolist() == [[1.0, 1.0, 1.0]]
try:
    x @ W
    raise AssertionError("(1, 3) @ (2, 3) must fail")
except ValueError as err:
    assert "(1, 3)" in str(err) and "(2, 3)" in str(err)
r = Tensor(np.arange(6)).reshape(2, 3)
assert r.data.tolist() == [[0, 1, 2], [3, 4, 5]] and r.reshape(-1).shape == (6,)
assert r.transpose().shape == (3, 2) and r.T.data[2, 1] == 5
try:
    r.reshape(4, 2)
    raise AssertionError("6 elements cannot become (4, 2)")
except ValueError as err:
    assert "(2, 3)" in str(err) and "(4, 2)" in str(err)
assert r[1].data.tolist() == [3, 4, 5] and r[:, 1:].data.tolist() == [[1, 2], [4, 5]]
assert r[np.array([0, 1, 1]), np.array([2, 0, 0])].data.tolist() == [2, 3, 3]
print("✓ matmul, reshape, transpose and indexing")

# %% [markdown]
# ### Reductions and elementwise math
# `axis` picks the axis that disappears; `keepdims=True` keeps it with size 1, which makes the
# result broadcast back against the input (`x - x.max(axis=1, keepdims=True)`).

# %%
m = Tensor([[1.0, 5.0], [3.0, 2.0]])
assert m.sum().item() == 11 and m.sum(axis=0).data.tolist() == [4, 7]
assert m.mean(axis=1, keepdims=True).shape == (2, 1) and m.mean().item() == 2.75
assert m.max().item() == 5 and m.max(axis=1).data.tolist() == [5, 3]
assert (m - m.max(axis=1, keepdims=True)).data.tolist() == [[-4, 0], [0, -1]]
assert np.allclose(Tensor([0.0, 1.0]).exp().data, [1.0, np.e])
assert np.allclose(Tensor([1.0, np.e]).log().data, [0.0, 1.0])
assert Tensor([4.0, 9.0]).sqrt().data.tolist() == [2.0, 3.0]
print("✓ sum, mean, max, exp, log, sqrt")
