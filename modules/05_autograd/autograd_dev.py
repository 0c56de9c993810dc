# %% [markdown]
# # Module 05: Autograd
#
# > Reverse-mode automatic differentiation: every Tensor operation records how to send gradients back.
#
# Training needs the gradient of a loss with respect to every weight. Writing those
# derivatives by hand for each network would be hopeless; instead each *operation* knows its
# own local derivative, and the chain rule strings them together:
#
# 1. **Forward**: while computing, every result remembers the operation (a `Function`) and the
#    inputs that made it. Together they form a graph from the weights to the loss.
# 2. **Backward**: starting from the loss with gradient 1, visit the graph in reverse
#    topological order; each `Function.backward` turns the gradient of its output into
#    gradients of its inputs. Gradients arriving at a tensor by several paths are added.
#
# At the end, every *leaf* tensor with `requires_grad=True` (the weights) holds `.grad`.

# %%
#| default_exp core.autograd

# %%
#| export
import contextlib
import functools

import numpy as np

from tinytorch.core.tensor import Tensor, _broadcast_op, _coerce, _matmul, _reshape_target, _index_key, _axis

# %% [markdown]
# ## 1. Grad mode
#
# Evaluating a model does not need a graph, and building one costs time and memory. Inside
# `with no_grad():` operations compute values only. `is_grad_enabled()` tells which mode is on.

# %%
#| export
# The switch lives on the Tensor class, so every copy of this code (the package, or this
# notebook run as a script) reads and flips the same one.
Tensor._grad_enabled = True


def is_grad_enabled() -> bool:
    "True unless the code runs inside `no_grad()`."
    return Tensor._grad_enabled


class no_grad(contextlib.ContextDecorator):
    "Context manager (or decorator) that stops operations from recording the graph."

    def __init__(self):
        self._previous = []  # a stack, so one instance can be re-entered (e.g. as a decorator)

    def __enter__(self):
        self._previous.append(Tensor._grad_enabled)
        Tensor._grad_enabled = False
        return self

    def __exit__(self, *exc_info):
        Tensor._grad_enabled = self._previous.pop()
        return False

# %%
assert is_grad_enabled()
with no_grad():
    assert not is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
    assert not is_grad_enabled(), "leaving an inner no_grad must not switch grad mode back on"
assert is_grad_enabled()
print("✓ no_grad switches grad mode off and restores it")

# %% [markdown]
# ## 2. `Function`: one operation, forward and backward
#
# A `Function` subclass implements two methods on plain NumPy arrays:
#
# - `forward(self, *arrays, **kw) -> np.ndarray` computes the result and saves on `self`
#   whatever backward will need (inputs, output, shapes);
# - `backward(self, grad_output) -> tuple` returns one gradient per positional input, with
#   that input's shape (or `None` for inputs that need none). `self.needs_input_grad` says
#   which inputs want one, so expensive unused gradients can be skipped.
#
# `MyFunction.apply(*inputs, **kw)` makes a fresh instance, runs `forward` on the inputs'
# arrays and wraps the result in a Tensor. If grad mode is on and any input requires grad,
# the result remembers the instance (`result._ctx`) and the instance remembers its inputs: one
# new node in the graph. Non-Tensor inputs (numbers, arrays) are constants. Keyword arguments
# are settings such as `axis`, never differentiated. `backward` must not modify `grad_output`
# in place: the same array may be passed to several inputs.

# %%
#| export
class Function:
    "Base class of differentiable operations; subclasses define `forward` and `backward`."

    inputs = ()
    needs_input_grad = ()

    def forward(self, *arrays, **kwargs) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(self, *arrays)")

    def backward(self, grad_output: np.ndarray) -> tuple:
        raise NotImplementedError(f"{type(self).__name__} must implement backward(self, grad_output)")

    @classmethod
    def apply(cls, *inputs, **kwargs) -> Tensor:
        "Run the operation on Tensors (or constants) and record it in the graph when needed."
        fn = cls()
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        result = Tensor._wrap(fn.forward(*arrays, **kwargs))
        if Tensor._grad_enabled:
            needs = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
            if True in needs:
                fn.inputs = inputs
                fn.needs_input_grad = needs
                result.requires_grad = True
                result._ctx = fn
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backward>"


# Tensors made by the user (leaves) have no creating Function.
Tensor._ctx = None

# %%
class _Double(Function):
    def forward(self, a):
        return 2 * a

    def backward(self, grad_output):
        return (2 * grad_output,)

w = Tensor([1.0, 2.0], requires_grad=True)
y = _Double.apply(w)
assert y.data.tolist() == [2.0, 4.0] and y.requires_grad and isinstance(y._ctx, _Double)
assert y._ctx.inputs[0] is w and y._ctx.needs_input_grad == (True,)
assert _Double.apply(Tensor([1.0]))._ctx is None, "no input requires grad: no graph"
with no_grad():
    assert _Double.apply(w)._ctx is None, "no_grad: no graph"
print("✓ Function.apply records a graph node only when needed")

# %% [markdown]
# ## 3. Broadcasting in reverse
#
# If `b` of shape `(10,)` was stretched to `(64, 10)` in `x + b`, each entry of `b` influenced
# 64 outputs, so its gradient is the *sum* of their gradients. `_unbroadcast` sums the
# gradient over the axes that broadcasting added or stretched, returning it to the input shape.

# %%
#| export
def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    "Sum `grad` down to `shape`, undoing NumPy broadcasting."
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)

# %%
g = np.ones((64, 10))
assert _unbroadcast(g, (10,)).tolist() == [64.0] * 10
assert _unbroadcast(g, (64, 1)).shape == (64, 1) and _unbroadcast(g, (64, 1))[0, 0] == 10
assert _unbroadcast(g, ()).item() == 640
print("✓ _unbroadcast sums gradients back to the input shape")

# %% [markdown]
# ## 4. Arithmetic
#
# Local derivatives, with `g` the gradient arriving from the output:
#
# | op | gradient for `a` | gradient for `b` |
# | --- | --- | --- |
# | `a + b` | `g` | `g` |
# | `a - b` | `g` | `-g` |
# | `a * b` | `g * b` | `g * a` |
# | `a / b` | `g / b` | `-g * a / b²` |
# | `-a` | `-g` | |
# | `a ** p` | `g * p * a^(p-1)` | (p is a constant) |

# %%
#| export
class Add(Function):
    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return _broadcast_op(np.add, a, b, "add")

    def backward(self, g):
        need_a, need_b = self.needs_input_grad
        return (_unbroadcast(g, self.shapes[0]) if need_a else None,
                _unbroadcast(g, self.shapes[1]) if need_b else None)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return _broadcast_op(np.subtract, a, b, "subtract")

    def backward(self, g):
        need_a, need_b = self.needs_input_grad
        return (_unbroadcast(g, self.shapes[0]) if need_a else None,
                _unbroadcast(-g, self.shapes[1]) if need_b else None)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return _broadcast_op(np.multiply, a, b, "multiply")

    def backward(self, g):
        need_a, need_b = self.needs_input_grad
        return (_unbroadcast(g * self.b, np.shape(self.a)) if need_a else None,
                _unbroadcast(g * self.a, np.shape(self.b)) if need_b else None)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return _broadcast_op(np.divide, a, b, "divide")

    def backward(self, g):
        need_a, need_b = self.needs_input_grad
        grad_a = g / self.b
        return (_unbroadcast(grad_a, np.shape(self.a)) if need_a else None,
                _unbroadcast(-grad_a * self.a / self.b, np.shape(self.b)) if need_b else None)


class Neg(Function):
    def forward(self, a):
        return np.negative(a)

    def backward(self, g):
        return (-g,)


class Pow(Function):
    "`a ** exponent` for a constant number `exponent`."

    def forward(self, a, exponent):
        self.a, self.exponent = a, exponent
        return np.power(a, exponent)

    def backward(self, g):
        p = self.exponent
        if p == 0:
            return (np.zeros_like(g),)  # a**0 is constant, even at a = 0
        return (g * p * np.power(self.a, p - 1),)

# %%
f = Mul()
f.needs_input_grad = (True, True)
f.forward(np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]]))   # (1, 2) * (2, 1) -> (2, 2)
ga, gb = f.backward(np.ones((2, 2)))
assert ga.tolist() == [[7.0, 7.0]] and gb.tolist() == [[3.0], [3.0]]
f = Div()
f.needs_input_grad = (True, True)
f.forward(np.array(6.0), np.array(2.0))
assert [x.item() for x in f.backward(np.array(1.0))] == [0.5, -1.5]
f = Pow()
f.forward(np.array([3.0]), 2)
assert f.backward(np.array([1.0]))[0].tolist() == [6.0]
print("✓ arithmetic backward rules, including broadcasting")

# %% [markdown]
# ## 5. Matrix multiply
#
# For `C = A @ B` with `A: (n, k)` and `B: (k, m)`: `dA = g @ Bᵀ` and `dB = Aᵀ @ g`; the
# shapes alone tell you where the transposes go. Stacked (batched) inputs work the same on the
# last two axes, with the batch axes summed back by `_unbroadcast`. A 1-D vector is treated as
# a one-row (left) or one-column (right) matrix, as NumPy does in the forward pass.

# %%
#| export
class MatMul(Function):
    def forward(self, a, b):
        out = _matmul(a, b)
        # Work with matrices: a vector on the left is a row, on the right a column.
        self.a2 = a[None, :] if a.ndim == 1 else a
        self.b2 = b[:, None] if b.ndim == 1 else b
        self.a_shape, self.b_shape = a.shape, b.shape
        return out

    def backward(self, g):
        need_a, need_b = self.needs_input_grad
        g2 = g  # put back the axes the vector cases dropped: column first, then row
        if len(self.b_shape) == 1:
            g2 = g2[..., None]
        if len(self.a_shape) == 1:
            g2 = g2[..., None, :]
        grad_a = grad_b = None
        if need_a:
            grad_a = _unbroadcast(g2 @ np.swapaxes(self.b2, -1, -2), self.a2.shape).reshape(self.a_shape)
        if need_b:
            grad_b = _unbroadcast(np.swapaxes(self.a2, -1, -2) @ g2, self.b2.shape).reshape(self.b_shape)
        return grad_a, grad_b

# %%
f = MatMul()
f.needs_input_grad = (True, True)
A, B = np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]])
assert f.forward(A, B).tolist() == [[11.0]]
ga, gb = f.backward(np.array([[1.0]]))
assert ga.tolist() == [[3.0, 4.0]] and gb.tolist() == [[1.0], [2.0]]
f = MatMul()
f.needs_input_grad = (True, True)
f.forward(np.array([1.0, 2.0]), np.array([3.0, 4.0]))          # vector . vector -> scalar
assert [x.tolist() for x in f.backward(np.array(1.0))] == [[3.0, 4.0], [1.0, 2.0]]
print("✓ matmul backward for matrices and vectors")

# %% [markdown]
# ## 6. Shapes and indexing
#
# `reshape` and `transpose` only move values around, so their backward moves the gradient
# back. Indexing picks entries; its backward puts the gradient into a zero array at the picked
# places. An integer array may pick the same entry twice (`x[[0, 0]]`), and then both
# gradients must be added: `np.add.at` adds for every occurrence, where `grad[key] += g`
# would keep only one.

# %%
#| export
class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.in_shape),)


class Transpose(Function):
    def forward(self, a, dim0, dim1):
        self.dims = (dim0, dim1)
        return np.swapaxes(a, dim0, dim1)

    def backward(self, g):
        return (np.swapaxes(g, *self.dims),)


def _has_int_array(key) -> bool:
    "True if an index can repeat entries (it holds an integer array)."
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, np.ndarray) and k.dtype != np.bool_ for k in keys)


class GetItem(Function):
    def forward(self, a, key):
        self.in_shape, self.dtype, self.key = a.shape, a.dtype, key
        return a[key]

    def backward(self, g):
        grad = np.zeros(self.in_shape, dtype=self.dtype)
        if _has_int_array(self.key):
            np.add.at(grad, self.key, g)
        else:
            grad[self.key] = g  # slices, ints and masks never pick an entry twice
        return (grad,)

# %%
f = GetItem()
f.forward(np.arange(4.0), np.array([0, 0, 3]))
assert f.backward(np.array([1.0, 2.0, 5.0]))[0].tolist() == [3.0, 0.0, 0.0, 5.0]
f = GetItem()
f.forward(np.zeros((2, 3)), (slice(None), 1))
assert f.backward(np.array([1.0, 2.0]))[0].tolist() == [[0, 1, 0], [0, 2, 0]]
f = Transpose()
f.forward(np.zeros((2, 3, 4)), 0, 2)
assert f.backward(np.zeros((4, 3, 2)))[0].shape == (2, 3, 4)
print("✓ reshape, transpose and indexing backward (repeated indices add up)")

# %% [markdown]
# ## 7. Reductions
#
# `sum` copies the output gradient to every input it summed; `mean` also divides by how many
# there were. `max` sends the gradient to the entry that won. When several entries tie for
# the max, we **split the gradient evenly** between them (as PyTorch's `amax` does), so the
# total still equals the output gradient.
#
# Without `keepdims` the reduced axes are gone from `g`; `_expand` puts them back as size-1
# axes so `g` broadcasts against the input.

# %%
#| export
def _expand(g: np.ndarray, in_shape: tuple, axis, keepdims: bool) -> np.ndarray:
    "Gradient of a reduction, broadcast back to the input shape (read-only view)."
    if axis is not None and not keepdims:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, in_shape)


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.in_shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return np.sum(a, axis=axis, keepdims=keepdims)

    def backward(self, g):
        return (_expand(g, self.in_shape, self.axis, self.keepdims),)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.in_shape, self.axis, self.keepdims = a.shape, axis, keepdims
        out = np.mean(a, axis=axis, keepdims=keepdims)
        self.count = a.size // max(np.size(out), 1) if a.size else 1
        return out

    def backward(self, g):
        return (_expand(g / self.count, self.in_shape, self.axis, self.keepdims),)


class Max(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims
        top = np.max(a, axis=axis, keepdims=True)
        winners = (a == top).astype(a.dtype)
        # Ties share the gradient: each winner gets 1/(number of winners).
        self.share = winners / winners.sum(axis=axis, keepdims=True)
        return top if keepdims else (top.reshape(()) if axis is None else np.squeeze(top, axis))

    def backward(self, g):
        if not self.keepdims:
            g = g.reshape((1,) * self.share.ndim) if self.axis is None else np.expand_dims(g, self.axis)
        return (g * self.share,)

# %%
f = Sum()
f.forward(np.ones((2, 3)), axis=1)
assert f.backward(np.array([1.0, 2.0]))[0].tolist() == [[1, 1, 1], [2, 2, 2]]
f = Mean()
f.forward(np.ones((2, 3)), axis=0, keepdims=True)
assert np.allclose(f.backward(np.array([[3.0, 6.0, 9.0]]))[0], [[1.5, 3, 4.5]] * 2)
f = Max()
assert f.forward(np.array([[1.0, 5.0, 5.0], [4.0, 0.0, 2.0]]), axis=1).tolist() == [5.0, 4.0]
assert f.backward(np.array([1.0, 1.0]))[0].tolist() == [[0, 0.5, 0.5], [1, 0, 0]], "ties split evenly"
print("✓ sum, mean and max backward")

# %% [markdown]
# ## 8. Elementwise math
#
# `d/dx exp(x) = exp(x)` (saved from the forward pass), `d/dx log(x) = 1/x`,
# `d/dx sqrt(x) = 1 / (2 sqrt(x))`.

# %%
#| export
class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return (g / self.a,)


class Sqrt(Function):
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)

# %%
f = Exp()
f.forward(np.array([0.0, 1.0]))
assert np.allclose(f.backward(np.array([1.0, 1.0]))[0], [1.0, np.e])
f = Log()
f.forward(np.array([2.0]))
assert f.backward(np.array([1.0]))[0].tolist() == [0.5]
f = Sqrt()
f.forward(np.array([4.0]))
assert f.backward(np.array([1.0]))[0].tolist() == [0.25]
print("✓ exp, log and sqrt backward")

# %% [markdown]
# ## 9. The backward pass
#
# `loss.backward()` first lists the graph in *topological order* (every tensor after all the
# tensors computed from it), then walks it once, calling each `Function.backward` after all
# gradients for its output have arrived.
#
# The ordering is an iterative depth-first search with an explicit stack: a recursive one
# would hit Python's recursion limit (about 1000) on a graph 10,000 operations deep.
#
# Only leaves (tensors the user made, such as weights) keep `.grad`; gradients are *added*
# to what is there, so call the optimizer's `zero_grad()` between steps. A non-scalar output
# needs an explicit `grad` (the gradient of some final scalar with respect to it).

# %%
#| export
def _topological_order(root: Tensor) -> list:
    "Tensors that need gradients, from `root` back to the leaves, each after all its consumers."
    post_order = []
    seen = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            post_order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.inputs:
                if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
    # post-order lists inputs before results; reversed, every result precedes its inputs
    post_order.reverse()
    return post_order


def backward(self: Tensor, grad=None) -> None:
    "Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad."
    if not self.requires_grad:
        raise RuntimeError("backward() needs a tensor that requires grad; none of its inputs had "
                           "requires_grad=True, or it was computed inside no_grad()")
    if grad is None:
        if self.data.size != 1:
            raise RuntimeError(f"backward() without a gradient needs a scalar output, got shape "
                               f"{self.shape}; call .sum() first or pass grad= of that shape")
        grad = np.ones_like(self.data)
    else:
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.data.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(grad): grad must have the output's shape {self.shape}, got {grad.shape}")

    grads = {self: grad}
    for node in _topological_order(self):
        g = grads.pop(node, None)
        if g is None:
            continue
        fn = node._ctx
        if fn is None:  # a leaf: keep the gradient (copied: later steps may modify it in place)
            g = np.array(g, dtype=node.data.dtype)
            node.grad = g if node.grad is None else node.grad + g
            continue
        input_grads = fn.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(fn.inputs):
            raise RuntimeError(f"{type(fn).__name__}.backward returned {len(input_grads)} gradients "
                               f"for {len(fn.inputs)} inputs")
        for parent, pg, needed in zip(fn.inputs, input_grads, fn.needs_input_grad):
            if not needed or pg is None:
                continue
            if np.shape(pg) != parent.shape:
                raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape "
                                   f"{np.shape(pg)} for an input of shape {parent.shape}")
            previous = grads.get(parent)
            grads[parent] = pg if previous is None else previous + pg


def detach(self: Tensor) -> Tensor:
    "The same data, cut off from the graph (no gradient flows through it)."
    return Tensor._wrap(self.data)

# %% [markdown]
# ## 10. Switching it on
#
# Module 01's `Tensor` methods only compute values. `enable_autograd()` replaces each of them
# with a version that calls the matching `Function`, and adds `backward` and `detach`. Methods
# that 01 built from others (`__radd__`, `__rsub__`, `.T`, `@`) follow automatically.
# Importing this module runs it, and `import tinytorch` imports this module: gradients are
# always on once the package is loaded. Running this notebook calls it again, so the
# `Function`s defined here are the ones your Tensor uses while you work on them.

# %%
#| export
def _binary(function):
    def method(self, other):
        if not isinstance(other, Tensor):
            other = _coerce(other, self.data.dtype)
            if other is None:
                return NotImplemented
        return function.apply(self, other)
    return method


def _pow(self, exponent):
    if not isinstance(exponent, (int, float, np.number)) or isinstance(exponent, (bool, np.bool_)):
        raise TypeError(f"tensor ** exponent needs a number exponent, got {type(exponent).__name__}")
    if isinstance(exponent, np.generic):
        exponent = exponent.item()  # a float64 NumPy scalar would upcast float32 data
    return Pow.apply(self, exponent=exponent)


def _matmul_method(self, other):
    if not isinstance(other, Tensor):
        b = _coerce(other, self.data.dtype)
        if not isinstance(b, np.ndarray):
            raise TypeError(f"matmul needs a Tensor or array operand, got {type(other).__name__}")
        other = b
    return MatMul.apply(self, other)


def _reshape(self, *shape):
    return Reshape.apply(self, shape=_reshape_target(self.data.shape, shape))


def _transpose(self, dim0=-2, dim1=-1):
    nd = self.data.ndim
    for d in (dim0, dim1):
        if not -nd <= d < nd:
            raise ValueError(f"transpose({dim0}, {dim1}): dimension {d} is out of range "
                             f"for a tensor of shape {self.shape}")
    return Transpose.apply(self, dim0=dim0, dim1=dim1)


def _getitem(self, key):
    return GetItem.apply(self, key=_index_key(key))


def _reduction(function):
    def method(self, axis=None, keepdims=False):
        return function.apply(self, axis=_axis(axis), keepdims=keepdims)
    return method


def _unary(function):
    def method(self):
        return function.apply(self)
    return method


def enable_autograd() -> None:
    "Make Tensor operations record the graph and give Tensor `backward()` and `detach()`."
    patches = {
        "__add__": _binary(Add), "__sub__": _binary(Sub), "__mul__": _binary(Mul),
        "__truediv__": _binary(Div), "__neg__": _unary(Neg), "__pow__": _pow,
        "matmul": _matmul_method, "reshape": _reshape, "transpose": _transpose,
        "__getitem__": _getitem, "sum": _reduction(Sum), "mean": _reduction(Mean),
        "max": _reduction(Max), "exp": _unary(Exp), "log": _unary(Log), "sqrt": _unary(Sqrt),
    }
    for name, method in patches.items():
        original = getattr(Tensor, name)
        functools.update_wrapper(method, original)  # keep 01's name and docstring
        setattr(Tensor, name, method)
    Tensor.backward = backward
    Tensor.detach = detach


enable_autograd()

# %% [markdown]
# ### Checking gradients numerically
#
# The honest test of a backward rule is the definition of a derivative. Nudge one input entry
# by `±h` and watch the output: `(f(x + h) - f(x - h)) / 2h` approximates the derivative with
# error `O(h²)`. In float64 with `h = 1e-6` it agrees with a correct rule to ~7 digits.

# %%
def numerical_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    "Central finite differences of the scalar f(x) for every entry of x (float64)."
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


rng = np.random.default_rng(0)
xv, wv, bv = rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=2)

def loss_of(x, w, b):
    "A small network-like expression touching many operations."
    h = x @ w.T + b
    return ((h * h).mean(axis=0) / (1 + h.max())).sum() + (x.exp() + 1).log().sum() ** 0.5

x = Tensor(xv, requires_grad=True, dtype=np.float64)
w = Tensor(wv, requires_grad=True, dtype=np.float64)
b = Tensor(bv, requires_grad=True, dtype=np.float64)
loss_of(x, w, b).backward()
as64 = lambda a: Tensor(a, dtype=np.float64)
checks = [(x, lambda a: loss_of(as64(a), as64(wv), as64(bv)).item(), xv),
          (w, lambda a: loss_of(as64(xv), as64(a), as64(bv)).item(), wv),
          (b, lambda a: loss_of(as64(xv), as64(wv), as64(a)).item(), bv)]
for tensor, f, value in checks:
    assert np.allclose(tensor.grad, numerical_grad(f, value.copy()), atol=1e-6), tensor.grad
print("✓ backward agrees with central finite differences")

# %% [markdown]
# ### Accumulation, `no_grad` and `detach`

# %%
x = Tensor([1.0, 2.0], requires_grad=True)
(x * x).sum().backward()
assert x.grad.tolist() == [2.0, 4.0]
(x * 3).sum().backward()
assert x.grad.tolist() == [5.0, 7.0], "a second backward adds to .grad"
y = x * x
assert y.requires_grad and not y.detach().requires_grad
with no_grad():
    assert not (x * x).requires_grad
try:
    (x * x).backward()
    raise AssertionError("a non-scalar output needs grad=")
except RuntimeError as err:
    assert "(2,)" in str(err)
deep = x
for _ in range(10_000):
    deep = deep * 1.0
deep.sum().backward()  # no RecursionError: the graph is walked with an explicit stack
print("✓ gradients accumulate; no_grad and detach cut the graph; deep graphs work")

# %% [markdown]
# ### Training a tiny model
#
# Everything together: fit `y = 3x - 1` with gradient descent on a weight and a bias.

# %%
rng = np.random.default_rng(1)
X = rng.uniform(-1, 1, size=(32, 1)).astype(np.float32)
Y = 3 * X - 1
weight = Tensor([[0.0]], requires_grad=True)
bias = Tensor([0.0], requires_grad=True)
for step in range(200):
    loss = ((X @ weight.T + bias - Y) ** 2).mean()
    weight.grad = bias.grad = None
    loss.backward()
    weight.data -= 0.3 * weight.grad
    bias.data -= 0.3 * bias.grad
assert abs(weight.item() - 3) < 1e-3 and abs(bias.item() + 1) < 1e-3, (weight, bias)
print(f"✓ gradient descent finds w = {weight.item():.3f}, b = {bias.item():.3f}")
