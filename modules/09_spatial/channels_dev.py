# %% [markdown]
# # Module 09, given code: which channels belong together
#
# > `channel_groups` traces a model and lists the channels that must be removed together;
# > `remove_channels` rebuilds a smaller model that keeps the chosen ones. Read it; you do not edit it.
#
# Removing output channel `c` of a convolution is not one edit but several. Its filter goes
# (row `c` of the weight, entry `c` of the bias), and so does every place that reads or
# rescales that channel:
#
# - the `BatchNorm` right after it (`weight[c]`, `bias[c]`, `running_mean[c]`, `running_var[c]`),
# - a depthwise convolution (`groups == channels`), whose filter `c` only ever sees channel `c`,
# - the next convolution's **inputs**: slice `c` of every filter, `weight[:, c]`,
# - after a `Flatten`, the `H*W` consecutive inputs `c*H*W ... c*H*W + H*W - 1` of a `Linear`,
# - both sides of a residual addition `body(x) + x`: channel `c` of the sum is channel `c` of the
#   body's last layer *plus* channel `c` of whatever produced `x`, so the two producers lose `c`
#   together or not at all.
#
# A **channel group** is one such set: channel `i` of the group is channel `i` of each of its
# producers, members and consumers. Module 18's `structured_prune` scores whole groups and asks
# `remove_channels` to do the slicing, so the lesson's exercise is only the choice of channels.
# Pruning libraries call this a dependency graph (Torch-Pruning's DepGraph, CVPR 2023).
#
# The tracer reads the model's structure only, with no input: it walks a `Sequential`
# (nested `Sequential`s and `Residual` blocks allowed) once, layer by layer, remembering which
# group the current activation's channels belong to.

# %%
#| default_exp core.channels

# %%
#| export
import copy

import numpy as np

from tinytorch.core.tensor import Tensor
from tinytorch.core.activations import Activation, Softmax
from tinytorch.core.layers import Dropout, Flatten, Linear, Module, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.core.blocks import BatchNorm1d, BatchNorm2d, Residual

# %% [markdown]
# ## 1. A group
#
# `ChannelGroup` holds the layers of one group by their dotted names (those of
# `model.named_modules()`, so `"2.body.0"` is layer 0 of the body of block 2):
#
# - `producers`: the `Linear`/`Conv2d` layers whose output channel `i` is channel `i` of the group;
#   several when a residual addition joins them. The group is named after the first one.
# - `members`: layers acting on each channel on its own that lose the channel too (`BatchNorm`,
#   depthwise `Conv2d`).
# - `consumers`: layers whose *inputs* are the group's channels, with `spatial`, the number of
#   consecutive inputs one channel becomes (1, or `H*W` after a `Flatten`).
# - `prunable`: False when every channel must stay: the classifier's outputs (one per class),
#   channels added to the model's input by a residual, channels a `Softmax` normalises together.
#
# `weights()` is what a pruning criterion scores: one `(size, -1)` array per producer and per
# member, row `i` holding the weights that make channel `i` (a BatchNorm contributes its scale).

# %%
#| export
class ChannelGroup:
    "Channels removed together: channel i of the group is channel i of every producer, member and consumer."

    def __init__(self, name: str, size: int | None, order: int):
        self.name, self.size, self.order = name, size, order
        self.producers, self.producer_names = [], []
        self.members = []       # (name, layer): BatchNorm, depthwise Conv2d
        self.consumers = []     # (name, layer, spatial): inputs c*spatial ... c*spatial + spatial - 1
        self.prunable = True

    def weights(self) -> list:
        "One (size, -1) array per producer, then per member: row i holds the weights making channel i."
        arrays = [layer.weight.data.reshape(self.size, -1) for layer in self.producers]
        for _, layer in self.members:
            if getattr(layer, "weight", None) is not None:
                arrays.append(layer.weight.data.reshape(self.size, -1))
        return arrays

    def __repr__(self) -> str:
        consumers = [name for name, _, _ in self.consumers]
        members = [name for name, _ in self.members]
        return (f"ChannelGroup('{self.name}', size={self.size}, producers={self.producer_names}, "
                f"members={members}, consumers={consumers}, prunable={self.prunable})")

# %% [markdown]
# ## 2. Walking the model
#
# The walk carries a *state*: the group the current activation's channels belong to, and its
# layout: `"image"` (N, C, H, W), `"features"` (N, F) or `"flat"` (a flattened image, whose
# feature `c*H*W + k` belongs to channel `c`). The model's input is a group of its own with no
# producer, which can never be pruned.
#
# | layer | what the walk does |
# | --- | --- |
# | `Linear`, `Conv2d` (groups=1) | consumer of the current group; starts a new group of its outputs |
# | depthwise `Conv2d`, `BatchNorm` | member of the current group (sizes checked) |
# | activations, `MaxPool2d`, `Dropout` | nothing: they act on each channel on its own |
# | `Softmax` | marks the group not prunable (it normalises across channels) |
# | `Flatten` | `"image"` becomes `"flat"`; the next `Linear` finds `spatial = in_features / channels` |
# | `Sequential` | walks its children |
# | `Residual` | walks the body and the shortcut from the same state, then **merges** the two groups |
#
# Anything else stops the walk with an error naming the layer: a layer whose parameters the
# tracer cannot slice, a grouped convolution that is not depthwise, a `Linear` reading an
# image without a `Flatten`, a layer used twice. Refusing is better than a model that runs and
# computes something else.
#
# Merging uses a *union-find*: every group points to the group it was merged into, and
# `_find` follows the pointers. Layers recorded on a group before a merge stay recorded.

# %%
#| export
_PER_CHANNEL = (Dropout, MaxPool2d)   # act on each channel on its own: channels pass through


class _Tracer:
    "One walk over a model, building its channel groups."

    def __init__(self):
        self.groups = []       # every group ever made, in model order
        self.merged_into = {}  # id(group) -> the group it was merged into
        self.seen = set()      # ids of the layers visited (a layer used twice is refused)
        self.input = self._new_group("input", None)
        self.input.prunable = False

    def _new_group(self, name, size):
        group = ChannelGroup(name, size, order=len(self.groups))
        self.groups.append(group)
        return group

    def _find(self, group):
        while id(group) in self.merged_into:
            group = self.merged_into[id(group)]
        return group

    def _produce(self, path, layer, size):
        group = self._new_group(path, size)
        group.producers.append(layer)
        group.producer_names.append(path)
        return group

    def _merge(self, a, b, path):
        a, b = self._find(a), self._find(b)
        if a is b:
            return a
        if a.size is not None and b.size is not None and a.size != b.size:
            raise ValueError(f"Residual '{path}' adds {b.size} channels to {a.size}: "
                             "both branches must give the same number of channels")
        first, second = sorted((a, b), key=lambda g: g.order)
        first.size = first.size if first.size is not None else second.size
        first.producers += second.producers
        first.producer_names += second.producer_names
        first.members += second.members
        first.consumers += second.consumers
        first.prunable = first.prunable and second.prunable
        first.name = first.producer_names[0]    # the model input has no producer and no name
        self.merged_into[id(second)] = first
        return first

    def walk(self, model, prefix, state):
        for name, layer in model.named_children():
            state = self.visit(f"{prefix}.{name}" if prefix else name, layer, state)
        return state

    def visit(self, path, layer, state):
        if id(layer) in self.seen:
            raise ValueError(f"layer '{path}' ({type(layer).__name__}) appears twice in the model: "
                             "channel pruning needs every layer to be used once")
        self.seen.add(id(layer))
        group, layout = self._find(state[0]), state[1]
        kind = type(layer).__name__
        if isinstance(layer, Sequential):
            return self.walk(layer, path, (group, layout))
        if isinstance(layer, Residual):
            return self._residual(path, layer, (group, layout))
        if isinstance(layer, Conv2d):
            return self._conv(path, layer, group, layout)
        if isinstance(layer, Linear):
            return self._linear(path, layer, group, layout)
        if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            wanted = "image" if isinstance(layer, BatchNorm2d) else "features"
            if layout not in (wanted, None):
                raise ValueError(f"{kind} '{path}' reads a {layout} activation; it expects {wanted}")
            self._check_size(path, layer, _num_features(layer), group, "features")
            group.members.append((path, layer))
            return group, wanted
        if isinstance(layer, Flatten):
            if layer.start_dim != 1:
                raise ValueError(f"Flatten '{path}' has start_dim={layer.start_dim}; the tracer handles start_dim=1")
            return group, "flat" if layout in ("image", None) else layout
        if isinstance(layer, Softmax):
            group.prunable = False   # each output depends on every channel
            return group, layout
        if isinstance(layer, Activation) or isinstance(layer, _PER_CHANNEL):
            return group, layout
        if isinstance(layer, Module) and layer.parameters():
            raise TypeError(f"layer '{path}' ({kind}) has parameters the tracer cannot slice: it knows "
                            "Linear, Conv2d, BatchNorm1d/2d, Residual and nested Sequential")
        raise TypeError(f"layer '{path}' ({kind}) is unknown to the tracer, which cannot tell whether it "
                        "acts on each channel on its own; known: activations, MaxPool2d, Dropout, Flatten")

    def _check_size(self, path, layer, size, group, what):
        if group.size is None:     # the model input: its size is first known here
            group.size = size
        elif size != group.size:
            raise ValueError(f"layer '{path}' ({type(layer).__name__}) has {size} input {what}, "
                             f"but the layer before it gives {group.size}")

    def _conv(self, path, layer, group, layout):
        if layout not in ("image", None):
            raise ValueError(f"Conv2d '{path}' reads a {layout} activation; it needs (N, C, H, W) images")
        groups = getattr(layer, "groups", 1)
        self._check_size(path, layer, layer.in_channels, group, "channels")
        if groups == 1:
            group.consumers.append((path, layer, 1))
            return self._produce(path, layer, layer.out_channels), "image"
        if groups == layer.in_channels == layer.out_channels:   # depthwise: channel c in, channel c out
            group.members.append((path, layer))
            return group, "image"
        raise ValueError(f"Conv2d '{path}' has groups={groups} with {layer.in_channels} input and "
                         f"{layer.out_channels} output channels; the tracer handles groups=1 and "
                         "depthwise convolutions (groups == in_channels == out_channels)")

    def _linear(self, path, layer, group, layout):
        spatial = 1
        if layout == "image":
            raise ValueError(f"Linear '{path}' reads (N, C, H, W) images without a Flatten before it")
        if layout == "flat" and group.size is not None:
            spatial, rest = divmod(layer.in_features, group.size)
            if rest:
                raise ValueError(f"Linear '{path}' has {layer.in_features} inputs, not a multiple of "
                                 f"the {group.size} channels flattened before it")
        elif layout != "flat":
            self._check_size(path, layer, layer.in_features, group, "features")
        group.consumers.append((path, layer, spatial))
        return self._produce(path, layer, layer.out_features), "features"

    def _residual(self, path, block, state):
        body_group, body_layout = self.visit(f"{path}.body", block.body, state)
        if block.shortcut is None:
            short_group, short_layout = state
        else:
            short_group, short_layout = self.visit(f"{path}.shortcut", block.shortcut, state)
        if body_layout != short_layout and None not in (body_layout, short_layout):
            raise ValueError(f"Residual '{path}' adds a {body_layout} body to a {short_layout} shortcut")
        if "flat" in (body_layout, short_layout):
            raise ValueError(f"Residual '{path}' adds flattened images; the tracer handles additions "
                             "of (N, C, H, W) images or (N, F) features")
        return self._merge(body_group, short_group, path), body_layout or short_layout


def _num_features(bn) -> int:
    "Channel count of a BatchNorm (its scale's length)."
    return int(bn.running_mean.shape[0])

# %% [markdown]
# `channel_groups` runs the walk and returns the groups that have producers, in model order.
# The group holding the model's output is the classifier's: not prunable.

# %%
#| export
def channel_groups(model) -> list:
    """The channel groups of `model` (a Sequential; nested Sequential and Residual blocks allowed),
    in model order. Each is a `ChannelGroup`; the classifier's outputs are not prunable.

    Raises TypeError for a model that is not a Sequential or a layer the tracer does not know, and
    ValueError naming the layer for a structure it cannot slice."""
    if not isinstance(model, Sequential):
        raise TypeError(f"channel_groups needs a Sequential, got {type(model).__name__}")
    tracer = _Tracer()
    output, _ = tracer.walk(model, "", (tracer.input, None))
    tracer._find(output).prunable = False    # the classifier: one output per class
    groups = [g for g in tracer.groups if id(g) not in tracer.merged_into and g.producers]
    if not groups:
        raise ValueError("model has no Linear or Conv2d layer: nothing to prune")
    return groups

# %% [markdown]
# A plain MLP has one group per layer; its last is the classifier's.

# %%
from tinytorch.core.activations import ReLU

mlp = Sequential(Linear(6, 5, rng=0), ReLU(), Linear(5, 4, rng=1), ReLU(), Linear(4, 3, rng=2))
groups = channel_groups(mlp)
for g in groups:
    print(g)
assert [(g.name, g.size, g.prunable) for g in groups] == [("0", 5, True), ("2", 4, True), ("4", 3, False)]
assert [name for name, _, _ in groups[0].consumers] == ["2"]
assert [w.shape for w in groups[1].weights()] == [(4, 5)]
print("✓ an MLP: one group per layer, the classifier's not prunable")

# %% [markdown]
# ## 3. Removing channels
#
# `remove_channels(model, keep)` takes `{group name: kept channel indices}` and builds a new
# model (a deep copy, sliced): producers keep the rows `keep`, members the same entries,
# consumers the inputs `c*spatial + k` of each kept `c`. Pruning masks (module 18's
# `weight.mask`) are sliced with their weights. Groups not named keep everything, and the new
# model's `kept_units` records the kept indices of every group.
#
# Each kept channel is made by the same weights as before; the only difference is that the
# removed channels no longer reach the layers that read them. So the small model computes
# exactly what the original computes when every removed channel is read as zero (its columns
# in the consumers set to zero): at every layer, the kept channels have the same values. That
# is the check below, and the PyTorch oracle of `tests/09_spatial/test_channels.py`.

# %%
#| export
def _check_keep(keep: dict, groups: dict) -> dict:
    "`{group name: sorted int indices}` for every group, after checking `keep`."
    if not isinstance(keep, dict):
        raise TypeError(f"keep must be a dict {{group name: kept channel indices}}, got {type(keep).__name__}")
    unknown = [name for name in keep if name not in groups]
    if unknown:
        raise ValueError(f"no channel group named {unknown}; the groups are {list(groups)}")
    kept = {}
    for name, group in groups.items():
        if name not in keep:
            kept[name] = np.arange(group.size)
            continue
        idx = np.asarray(keep[name])
        ok = (idx.ndim == 1 and idx.size > 0 and np.issubdtype(idx.dtype, np.integer)
              and idx.min() >= 0 and idx.max() < group.size and np.all(np.diff(idx) > 0))
        if not ok:
            raise ValueError(f"keep['{name}'] must be sorted, distinct channel indices in [0, {group.size}), "
                             f"at least one; got {keep[name]!r}")
        if not group.prunable and idx.size != group.size:
            raise ValueError(f"group '{name}' must keep all its {group.size} channels (the classifier's "
                             "outputs, channels added to the model input, or channels a Softmax normalises)")
        kept[name] = idx.astype(np.int64)
    return kept


def _sliced(param: Tensor, rows=None, cols=None) -> Tensor:
    "A new parameter holding `param[rows][:, cols]`, with its pruning mask sliced the same way."
    data, mask = param.data, param.mask
    if rows is not None:
        data, mask = data[rows], None if mask is None else mask[rows]
    if cols is not None:
        data, mask = data[:, cols], None if mask is None else mask[:, cols]
    new = Tensor(np.ascontiguousarray(data), requires_grad=param.requires_grad, dtype=data.dtype)
    if mask is not None:
        new.mask = np.ascontiguousarray(mask)
    return new


def _slice_layer(layer, rows, cols) -> None:
    "Keep output channels `rows` and inputs `cols` (None: all) of one layer, in place."
    layer.weight = _sliced(layer.weight, rows, cols)
    if getattr(layer, "bias", None) is not None and rows is not None:
        layer.bias = _sliced(layer.bias, rows)
    if isinstance(layer, Linear):
        layer.out_features, layer.in_features = layer.weight.shape
    elif isinstance(layer, Conv2d) and getattr(layer, "groups", 1) > 1:   # depthwise
        layer.in_channels = layer.out_channels = layer.groups = layer.weight.shape[0]
    elif isinstance(layer, Conv2d):
        layer.out_channels, layer.in_channels = layer.weight.shape[:2]
    else:   # BatchNorm: its statistics are per channel too
        layer.running_mean = layer.running_mean[rows].copy()
        layer.running_var = layer.running_var[rows].copy()
        for attr in ("num_features", "num_channels"):
            if hasattr(layer, attr):
                setattr(layer, attr, len(rows))


def remove_channels(model, keep: dict):
    """A new model keeping, for each group named in `keep`, the channels `keep[name]` (sorted
    indices): every producer, member and consumer of the group is sliced, also across Flatten.
    Groups not named keep all channels; the original model is unchanged. The new model's
    `kept_units` maps every group name to its kept indices; kept channels compute what they did."""
    groups = {g.name: g for g in channel_groups(model)}
    kept = _check_keep(keep, groups)
    rows, cols = {}, {}      # layer name -> kept output channels / kept inputs
    for name, group in groups.items():
        idx = kept[name]
        if idx.size == group.size:
            continue
        for path in group.producer_names + [path for path, _ in group.members]:
            rows[path] = idx
        for path, _, spatial in group.consumers:
            cols[path] = (idx[:, None] * spatial + np.arange(spatial)).ravel()
    new = copy.deepcopy(model)
    layers = dict(new.named_modules())
    for path in sorted(set(rows) | set(cols)):
        _slice_layer(layers[path], rows.get(path), cols.get(path))
    new.kept_units = kept
    return new

# %% [markdown]
# A CNN across `Flatten`: channel `c` of the second convolution is inputs `4c ... 4c + 3` of
# the classifier (a 2x2 map per channel). After removing channels, compare every top-level
# layer's output, kept channels only, with the original's where the removed channels are read
# as zeros.

# %%
from tinytorch.core.spatial import Conv2d, MaxPool2d

cnn = Sequential(Conv2d(1, 4, 3, padding=1, rng=0), ReLU(), MaxPool2d(2),
                 Conv2d(4, 6, 3, padding=1, rng=1), ReLU(), MaxPool2d(2), Flatten(), Linear(24, 3, rng=2))
print(channel_groups(cnn))
small = remove_channels(cnn, {"0": np.array([0, 2, 3]), "3": np.array([1, 4])})
assert small[3].weight.shape == (2, 3, 3, 3) and small[7].weight.shape == (3, 8)
assert np.array_equal(small[7].weight.data, cnn[7].weight.data[:, [4, 5, 6, 7, 16, 17, 18, 19]])
assert cnn[3].weight.shape == (6, 4, 3, 3), "the original is unchanged"
reads_zeros = copy.deepcopy(cnn)
reads_zeros[3].weight.data[:, 1] = 0                                   # channel 1 of group "0"
reads_zeros[7].weight.data[:, [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23]] = 0  # 0, 2, 3, 5
x = Tensor(np.random.default_rng(0).random((2, 1, 8, 8)))
for cut, channels in ((2, [0, 2, 3]), (5, [1, 4]), (7, [0, 1, 2])):
    assert np.allclose(small[:cut + 1](x).data, reads_zeros[:cut + 1](x).data[:, channels], atol=1e-6)
print("✓ removed channels: kept channels compute what they did, across Flatten")

# %% [markdown]
# ## 4. Blocks: BatchNorm, depthwise convolution, residual additions
#
# A MobileNet-style block (depthwise 3x3, BatchNorm, pointwise 1x1) inside a residual block
# with an identity shortcut: the block's input channels and its output channels are added, so
# the first convolution, the pointwise convolution and everything per channel between them form
# **one** group. A projection shortcut (a 1x1 convolution) instead joins its own output channels
# to the body's last convolution's.

# %%
from tinytorch.core.blocks import BatchNorm2d, Residual

rng = np.random.default_rng(0)
blocks = Sequential(
    Conv2d(1, 4, 3, padding=1, bias=False, rng=rng), BatchNorm2d(4), ReLU(),
    Residual(Sequential(Conv2d(4, 4, 3, padding=1, groups=4, rng=rng), BatchNorm2d(4), ReLU(),
                        Conv2d(4, 4, 1, rng=rng), BatchNorm2d(4))),
    Residual(Sequential(Conv2d(4, 6, 3, stride=2, padding=1, rng=rng), BatchNorm2d(6), ReLU(),
                        Conv2d(6, 6, 3, padding=1, rng=rng), BatchNorm2d(6)),
             shortcut=Sequential(Conv2d(4, 6, 1, stride=2, rng=rng), BatchNorm2d(6))),
    ReLU(), MaxPool2d(4), Flatten(), Linear(6, 3, rng=rng))
for g in channel_groups(blocks):
    print(g)
first, inner, joined, head = channel_groups(blocks)
assert first.producer_names == ["0", "3.body.3"] and [n for n, _ in first.members] == ["1", "3.body.0", "3.body.1", "3.body.4"]
assert joined.producer_names == ["4.body.3", "4.shortcut.0"] and joined.consumers[0][2] == 1
assert [w.shape for w in first.weights()] == [(4, 9), (4, 4), (4, 1), (4, 9), (4, 1), (4, 1)]
blocks.eval()
small = remove_channels(blocks, {"0": np.array([1, 3]), "4.body.0": np.array([0, 2, 5])})
assert small[3].body[0].groups == 2 and small[4].shortcut[0].weight.shape == (6, 2, 1, 1)
assert np.array_equal(small[1].running_var, blocks[1].running_var[[1, 3]])
x = Tensor(np.random.default_rng(1).random((2, 1, 8, 8)))
assert np.allclose(small[:3](x).data, blocks[:3](x).data[:, [1, 3]], atol=1e-6)
print("✓ one group through BatchNorm, a depthwise convolution and a residual addition")
