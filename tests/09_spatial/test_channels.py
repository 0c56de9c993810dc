"""Module 09, given code: the channel tracer (channel_groups, remove_channels).

Oracles: hand-written keep lists and column lists per layer (always run), and the same block model
built in PyTorch and pruned by hand, layer by layer (skipped without PyTorch)."""
import copy

import numpy as np
import pytest

from tinytorch.core.activations import ReLU, Softmax
from tinytorch.core.blocks import BatchNorm1d, BatchNorm2d, Residual
from tinytorch.core.channels import ChannelGroup, channel_groups, remove_channels
from tinytorch.core.layers import Dropout, Flatten, Linear, Module, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.core.tensor import Tensor


def randomize_batchnorms(model, seed):
    "Non-trivial scales, shifts and running statistics, so a wrongly sliced BatchNorm shows."
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            n = module.num_features
            module.weight.data[...] = rng.uniform(0.5, 1.5, n)
            module.bias.data[...] = rng.normal(0, 0.2, n)
            module.running_mean = rng.normal(0, 0.2, n).astype(np.float32)
            module.running_var = rng.uniform(0.5, 2.0, n).astype(np.float32)
    return model


def block_model(seed=0):
    """conv-BN-ReLU; a depthwise-separable residual block (identity shortcut); a residual block
    with a projection shortcut; Flatten; Linear-BN1d-ReLU; classifier."""
    rng = np.random.default_rng(seed)
    model = Sequential(
        Conv2d(1, 8, 3, padding=1, bias=False, rng=rng), BatchNorm2d(8), ReLU(),               # 0 1 2
        Residual(Sequential(Conv2d(8, 8, 3, padding=1, groups=8, rng=rng), BatchNorm2d(8), ReLU(),
                            Conv2d(8, 8, 1, rng=rng), BatchNorm2d(8))),                         # 3
        Residual(Sequential(Conv2d(8, 12, 3, stride=2, padding=1, rng=rng), BatchNorm2d(12), ReLU(),
                            Conv2d(12, 12, 3, padding=1, rng=rng), BatchNorm2d(12)),
                 shortcut=Sequential(Conv2d(8, 12, 1, stride=2, rng=rng), BatchNorm2d(12))),    # 4
        ReLU(), MaxPool2d(2), Flatten(),                                                        # 5 6 7
        Linear(12 * 2 * 2, 16, rng=rng), BatchNorm1d(16), ReLU(), Linear(16, 5, rng=rng))       # 8 9 10 11
    return randomize_batchnorms(model, seed).eval()


def random_keep(seed):
    "Random kept channels for the four prunable groups of block_model."
    rng = np.random.default_rng(seed)
    sizes = {"0": 8, "4.body.0": 12, "4.body.3": 12, "8": 16}
    return {name: np.sort(rng.choice(n, size=rng.integers(n // 4, n), replace=False)) for name, n in sizes.items()}


def gone(n, kept):
    return np.setdiff1d(np.arange(n), kept)


def images(seed=0, n=3):
    return Tensor(np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32))


# -- the groups found ---------------------------------------------------------------------

def test_mlp_has_one_group_per_layer_and_the_classifier_is_not_prunable():
    model = Sequential(Linear(6, 5, rng=0), ReLU(), Dropout(0.5), Linear(5, 4, rng=1), ReLU(), Linear(4, 3, rng=2))
    groups = channel_groups(model)
    assert all(isinstance(g, ChannelGroup) for g in groups)
    assert [(g.name, g.size, g.prunable) for g in groups] == [("0", 5, True), ("3", 4, True), ("5", 3, False)]
    assert groups[0].producers == [model[0]] and [c[0] for c in groups[0].consumers] == ["3"]
    assert len(groups[1].weights()) == 1 and np.array_equal(groups[1].weights()[0], model[3].weight.data)


def test_block_model_groups_follow_batchnorm_depthwise_and_residual_adds():
    model = block_model()
    groups = {g.name: g for g in channel_groups(model)}
    assert list(groups) == ["0", "4.body.0", "4.body.3", "8", "11"]
    first = groups["0"]          # the stem conv and the identity block's pointwise conv are added
    assert first.size == 8 and first.producer_names == ["0", "3.body.3"]
    assert [name for name, _ in first.members] == ["1", "3.body.0", "3.body.1", "3.body.4"]
    assert sorted(name for name, _, _ in first.consumers) == ["3.body.3", "4.body.0", "4.shortcut.0"]
    joined = groups["4.body.3"]  # the body's last conv and the projection shortcut are added
    assert joined.producer_names == ["4.body.3", "4.shortcut.0"]
    assert [(name, spatial) for name, _, spatial in joined.consumers] == [("8", 4)]
    assert [name for name, _ in groups["8"].members] == ["9"]
    assert [g.prunable for g in groups.values()] == [True, True, True, True, False]


def test_group_weights_are_one_row_per_channel_for_each_producer_and_member():
    model = block_model()
    first = channel_groups(model)[0]
    shapes = [w.shape for w in first.weights()]
    # stem conv (8, 1*3*3), pointwise conv (8, 8), then members: BN scale, depthwise (8, 9), BN, BN
    assert shapes == [(8, 9), (8, 8), (8, 1), (8, 9), (8, 1), (8, 1)]
    assert np.array_equal(first.weights()[2][:, 0], model[1].weight.data)


def test_residual_on_the_model_input_cannot_be_pruned():
    model = Sequential(Residual(Sequential(Linear(4, 4, rng=0), ReLU(), Linear(4, 4, rng=1))), Linear(4, 2, rng=2))
    groups = {g.name: g for g in channel_groups(model)}
    assert groups["0.body.0"].prunable
    assert not groups["0.body.2"].prunable      # added to the model's input, whose width is fixed


def test_softmax_before_the_end_makes_its_group_unprunable():
    model = Sequential(Linear(4, 6, rng=0), Softmax(), Linear(6, 2, rng=1))
    assert [g.prunable for g in channel_groups(model)] == [False, False]


# -- removing channels: hand-written oracles ----------------------------------------------

def test_flatten_boundary_slices_the_inputs_of_each_kept_channel():
    conv = Conv2d(1, 3, 1, rng=0)
    head = Linear(3 * 4, 2, rng=0)
    model = Sequential(conv, Flatten(), head)
    small = remove_channels(model, {"0": np.array([0, 2])})
    assert np.array_equal(small[2].weight.data, head.weight.data[:, [0, 1, 2, 3, 8, 9, 10, 11]])
    assert small[2].in_features == 8 and small[0].out_channels == 2


def test_every_member_of_a_group_is_sliced():
    model = block_model()
    keep = random_keep(3)
    small = remove_channels(model, keep)
    k0, ka, kb, k8 = keep["0"], keep["4.body.0"], keep["4.body.3"], keep["8"]
    assert np.array_equal(small[0].weight.data, model[0].weight.data[k0])
    for bn, kept in ((1, k0), (9, k8)):
        for attr in ("running_mean", "running_var"):
            assert np.array_equal(getattr(small[bn], attr), getattr(model[bn], attr)[kept])
        assert np.array_equal(small[bn].weight.data, model[bn].weight.data[kept]) and small[bn].num_features == len(kept)
    dw = small[3].body[0]
    assert dw.groups == dw.in_channels == dw.out_channels == len(k0)
    assert np.array_equal(dw.weight.data, model[3].body[0].weight.data[k0])
    assert np.array_equal(small[3].body[3].weight.data, model[3].body[3].weight.data[np.ix_(k0, k0)])
    assert np.array_equal(small[4].body[0].weight.data, model[4].body[0].weight.data[np.ix_(ka, k0)])
    assert np.array_equal(small[4].body[3].weight.data, model[4].body[3].weight.data[np.ix_(kb, ka)])
    assert np.array_equal(small[4].shortcut[0].weight.data, model[4].shortcut[0].weight.data[np.ix_(kb, k0)])
    assert np.array_equal(small[4].shortcut[0].bias.data, model[4].shortcut[0].bias.data[kb])
    columns = [c * 4 + s for c in kb for s in range(4)]
    assert np.array_equal(small[8].weight.data, model[8].weight.data[np.ix_(k8, columns)])
    assert np.array_equal(small[11].weight.data, model[11].weight.data[:, k8])
    assert {name: list(v) for name, v in small.kept_units.items()} == \
        {**{name: list(v) for name, v in keep.items()}, "11": list(range(5))}


def zero_removed_inputs(model, keep):
    "The original where every removed channel is read as zero: its columns in each reader, by hand."
    model = copy.deepcopy(model)
    k0, ka, kb, k8 = keep["0"], keep["4.body.0"], keep["4.body.3"], keep["8"]
    model[3].body[3].weight.data[:, gone(8, k0)] = 0
    model[4].body[0].weight.data[:, gone(8, k0)] = 0
    model[4].shortcut[0].weight.data[:, gone(8, k0)] = 0
    model[4].body[3].weight.data[:, gone(12, ka)] = 0
    model[8].weight.data[:, [c * 4 + s for c in gone(12, kb) for s in range(4)]] = 0
    model[11].weight.data[:, gone(16, k8)] = 0
    return model


@pytest.mark.parametrize("seed", range(4))
def test_pruned_model_computes_the_original_with_removed_channels_read_as_zero(seed):
    model = block_model(seed)
    keep = random_keep(seed)
    small = remove_channels(model, keep)
    x = images(seed)
    assert np.allclose(small(x).data, zero_removed_inputs(model, keep)(x).data, atol=1e-5)
    # and the kept channels of the stem compute exactly what they did
    assert np.allclose(small[:3](x).data, model[:3](x).data[:, keep["0"]], atol=1e-6)


def test_original_is_unchanged_and_groups_not_named_keep_everything():
    model = block_model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    small = remove_channels(model, {"4.body.0": np.array([0, 5])})
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert small[0].weight.shape == model[0].weight.shape and small[4].body[0].weight.shape == (2, 8, 3, 3)
    assert small.parameters()[0] is not model.parameters()[0]
    everything = remove_channels(model, {})
    x = images()
    assert np.allclose(everything(x).data, model(x).data, atol=0)


def test_masks_are_sliced_with_their_weights():
    model = Sequential(Linear(6, 5, rng=0), ReLU(), Linear(5, 3, rng=1))
    model[2].weight.mask = np.random.default_rng(0).random((3, 5)) > 0.5
    model[0].weight.mask = np.random.default_rng(1).random((5, 6)) > 0.5
    small = remove_channels(model, {"0": np.array([1, 4])})
    assert np.array_equal(small[0].weight.mask, model[0].weight.mask[[1, 4]])
    assert np.array_equal(small[2].weight.mask, model[2].weight.mask[:, [1, 4]])


def test_pruned_model_trains():
    model = block_model().train()
    small = remove_channels(model, random_keep(1))
    loss = (small(images(n=4)) * small(images(n=4))).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in small.parameters())


# -- refusals ----------------------------------------------------------------------------

class Scale(Module):
    def __init__(self):
        super().__init__()
        self.s = Tensor(np.ones(3), requires_grad=True)

    def forward(self, x):
        return x * self.s


class Identity(Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("model, error, words", [
    (Sequential(Conv2d(4, 4, 3, groups=2, rng=0), Flatten(), Linear(4, 2, rng=0)), ValueError, "groups=2"),
    (Sequential(Conv2d(1, 4, 3, rng=0), Linear(6, 2, rng=0)), ValueError, "without a Flatten"),
    (Sequential(Linear(3, 3, rng=0), Scale(), Linear(3, 2, rng=0)), TypeError, "'1' \\(Scale\\) has parameters"),
    (Sequential(Linear(3, 3, rng=0), Identity(), Linear(3, 2, rng=0)), TypeError, "'1' \\(Identity\\) is unknown"),
    (Sequential(Conv2d(1, 2, 3, rng=0), Flatten(start_dim=2), Linear(4, 2, rng=0)), ValueError, "start_dim=2"),
    (Sequential(Linear(4, 6, rng=0), Residual(Sequential(Linear(6, 5, rng=0))), Linear(5, 2, rng=0)),
     ValueError, "Residual '1' adds"),
    (Sequential(Linear(4, 6, rng=0), BatchNorm1d(5), Linear(6, 2, rng=0)), ValueError, "'1' \\(BatchNorm1d\\) has 5"),
    (Sequential(Conv2d(1, 2, 3, rng=0), Flatten(), Linear(7, 2, rng=0)), ValueError, "not a multiple of the 2"),
], ids=["grouped-conv", "linear-on-images", "unknown-parameters", "unknown-layer", "flatten-dim",
        "residual-sizes", "batchnorm-size", "flatten-size"])
def test_refuses_what_it_cannot_slice_naming_the_layer(model, error, words):
    with pytest.raises(error, match=words):
        channel_groups(model)


def test_refuses_a_layer_used_twice_and_a_model_that_is_not_sequential():
    shared = Linear(3, 3, rng=0)
    with pytest.raises(ValueError, match="appears twice"):
        channel_groups(Sequential(shared, ReLU(), shared))
    with pytest.raises(TypeError, match="needs a Sequential"):
        channel_groups(Linear(3, 3, rng=0))


@pytest.mark.parametrize("keep, words", [
    ({"7": np.array([0])}, "no channel group named"),
    ({"11": np.array([0, 1])}, "must keep all its 5 channels"),
    ({"0": np.array([3, 1])}, "sorted, distinct"),
    ({"0": np.array([1, 1])}, "sorted, distinct"),
    ({"0": np.array([0, 8])}, r"in \[0, 8\)"),
    ({"0": np.array([], dtype=int)}, "at least one"),
    ({"0": np.array([0.0, 1.0])}, "sorted, distinct"),
])
def test_remove_channels_rejects_bad_keep(keep, words):
    with pytest.raises(ValueError, match=words):
        remove_channels(block_model(), keep)
    with pytest.raises(TypeError, match="keep must be a dict"):
        remove_channels(block_model(), [0, 1])


# -- PyTorch oracle: the same model, pruned by hand -----------------------------------------

def torch_pruned(model, keep):
    "block_model in PyTorch (float64) with each layer sliced by hand to the kept channels."
    torch = pytest.importorskip("torch")
    nn = torch.nn
    k0, ka, kb, k8 = (list(keep[n]) for n in ("0", "4.body.0", "4.body.3", "8"))
    all5 = list(range(5))

    def t(array):
        return torch.tensor(np.asarray(array), dtype=torch.float64)

    def conv(layer, rows, cols, groups=1):
        w = layer.weight.data[rows] if groups > 1 else layer.weight.data[np.ix_(rows, cols)]
        new = nn.Conv2d(len(cols), len(rows), layer.kernel_size, layer.stride, layer.padding,
                        groups=groups, bias=layer.bias is not None).double()
        new.weight.data = t(w)
        if layer.bias is not None:
            new.bias.data = t(layer.bias.data[rows])
        return new

    def linear(layer, rows, cols):
        new = nn.Linear(len(cols), len(rows)).double()
        new.weight.data, new.bias.data = t(layer.weight.data[np.ix_(rows, cols)]), t(layer.bias.data[rows])
        return new

    def bn(layer, rows, kind):
        new = kind(len(rows), eps=layer.eps).double().eval()
        new.weight.data, new.bias.data = t(layer.weight.data[rows]), t(layer.bias.data[rows])
        new.running_mean, new.running_var = t(layer.running_mean[rows]), t(layer.running_var[rows])
        return new

    class Add(nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    body3, body4, short4 = model[3].body, model[4].body, model[4].shortcut
    flat = [c * 4 + s for c in kb for s in range(4)]
    return nn.Sequential(
        conv(model[0], k0, [0]), bn(model[1], k0, nn.BatchNorm2d), nn.ReLU(),
        Add(nn.Sequential(conv(body3[0], k0, k0, groups=len(k0)), bn(body3[1], k0, nn.BatchNorm2d), nn.ReLU(),
                          conv(body3[3], k0, k0), bn(body3[4], k0, nn.BatchNorm2d))),
        Add(nn.Sequential(conv(body4[0], ka, k0), bn(body4[1], ka, nn.BatchNorm2d), nn.ReLU(),
                          conv(body4[3], kb, ka), bn(body4[4], kb, nn.BatchNorm2d)),
            nn.Sequential(conv(short4[0], kb, k0), bn(short4[1], kb, nn.BatchNorm2d))),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        linear(model[8], k8, flat), bn(model[9], k8, nn.BatchNorm1d), nn.ReLU(), linear(model[11], all5, k8),
    ).eval()


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_model_pruned_by_hand_in_pytorch(seed):
    torch = pytest.importorskip("torch")
    model = block_model(seed)
    keep = random_keep(seed)
    x = images(seed, n=5)
    ours = remove_channels(model, keep)(x).data
    with torch.no_grad():
        theirs = torch_pruned(model, keep)(torch.tensor(x.data, dtype=torch.float64)).numpy()
    assert np.abs(ours - theirs).max() < 1e-6
    full = {name: np.arange(n) for name, n in (("0", 8), ("4.body.0", 12), ("4.body.3", 12), ("8", 16))}
    with torch.no_grad():
        dense = torch_pruned(model, full)(torch.tensor(x.data, dtype=torch.float64)).numpy()
    assert np.abs(model(x).data - dense).max() < 1e-4    # the unpruned models agree too


# -- the block models of core.models -------------------------------------------------------

def _cols(kept_out, n, spatial=1):
    "Input columns of the removed channels (of n), `spatial` inputs per channel."
    return [c * spatial + s for c in gone(n, kept_out) for s in range(spatial)]


@pytest.mark.parametrize("seed", range(2))
def test_block_models_rebuild_and_compute_the_original_with_removed_channels_read_as_zero(seed):
    from tinytorch.core.models import digits_mobilenet, digits_resnet

    rng = np.random.default_rng(seed)

    def keep(n):
        return np.sort(rng.choice(n, size=n // 2, replace=False))

    mobile = randomize_batchnorms(digits_mobilenet(seed), seed).eval()
    k = {"0": keep(16), "6": keep(32), "13": keep(64)}
    reads_zero = copy.deepcopy(mobile)        # readers of each group, by hand: pointwise convs, classifier
    reads_zero[6].weight.data[:, _cols(k["0"], 16)] = 0
    reads_zero[13].weight.data[:, _cols(k["6"], 32)] = 0
    reads_zero[18].weight.data[:, _cols(k["13"], 64, spatial=4)] = 0
    x = images(seed)
    small = remove_channels(mobile, k)
    assert small[3].groups == 8 and small[10].groups == 16 and small[18].in_features == 32 * 4
    assert np.allclose(small(x).data, reads_zero(x).data, atol=1e-5)

    resnet = randomize_batchnorms(digits_resnet(seed), seed).eval()
    k = {"0": keep(16), "3.body.0": keep(16), "5.body.0": keep(32), "5.body.3": keep(32)}
    reads_zero = copy.deepcopy(resnet)
    for path in ((3, "body", 0), (5, "body", 0), (5, "shortcut", 0)):
        getattr(reads_zero[path[0]], path[1])[path[2]].weight.data[:, _cols(k["0"], 16)] = 0
    reads_zero[3].body[3].weight.data[:, _cols(k["3.body.0"], 16)] = 0
    reads_zero[5].body[3].weight.data[:, _cols(k["5.body.0"], 32)] = 0
    reads_zero[9].weight.data[:, _cols(k["5.body.3"], 32, spatial=4)] = 0
    small = remove_channels(resnet, k)
    assert small[5].shortcut[0].weight.shape == (16, 8, 1, 1) and small[9].in_features == 16 * 4
    assert np.allclose(small(x).data, reads_zero(x).data, atol=1e-5)
