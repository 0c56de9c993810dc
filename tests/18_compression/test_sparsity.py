"""Sparsity measurement and masks: given code of the lesson (measure_sparsity, apply_mask, remove_pruning), ungraded."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytorch.compression.prune import apply_mask, layer_sparsity, measure_sparsity, remove_pruning
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Linear, Sequential
from tinytorch.core.optimizers import SGD, Adam
from tinytorch.core.spatial import Conv2d
from tinytorch.core.tensor import Tensor


def conv_net():
    return Sequential(Conv2d(1, 2, 3, padding=1, rng=0), ReLU(), Flatten(), Linear(2 * 4 * 4, 3, rng=0))


def test_measure_sparsity_hand_computed_with_conv_and_biases():
    net = conv_net()
    net[0].weight.data[0] = 0.0          # 9 of the 18 conv weights
    net[3].weight.data[:, :4] = 0.0      # 12 of the 96 linear weights
    net[0].bias.data[:] = 0.0            # biases never count
    net[3].bias.data[:] = 0.0
    assert measure_sparsity(net) == pytest.approx(21 / 114, abs=0)
    assert layer_sparsity(net) == {"0.weight": 0.5, "3.weight": 0.125}


@given(st.integers(0, 2 ** 32 - 1), st.floats(0.0, 1.0))
def test_measure_sparsity_matches_count(seed, density):
    rng = np.random.default_rng(seed)
    net = Sequential(Linear(5, 7, rng=0), ReLU(), Linear(7, 3, rng=0))
    for layer in (net[0], net[2]):
        layer.weight.data[rng.random(layer.weight.shape) < density] = 0.0
    zeros = sum(int((layer.weight.data == 0).sum()) for layer in (net[0], net[2]))
    assert measure_sparsity(net) == zeros / (35 + 21)


def test_measure_sparsity_rejects_models_without_weights():
    with pytest.raises(ValueError, match="nothing to prune"):
        measure_sparsity(Sequential(ReLU(), Flatten()))


def test_apply_mask_zeroes_stores_and_stacks():
    p = Tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    p.grad = np.ones((2, 3), dtype=np.float32)
    keep = np.array([[True, False, True], [True, True, False]])
    assert apply_mask(p, keep) is p
    assert p.data.tolist() == [[1, 0, 3], [4, 5, 0]]
    assert p.mask.tolist() == keep.tolist() and p.grad.tolist() == [[1, 0, 1], [1, 1, 0]]
    keep[0, 0] = False                   # the caller changing its array must not change our mask
    assert p.mask[0, 0]
    apply_mask(p, np.array([[True, True, True], [False, True, True]]))   # cannot revive (0,1) or (1,2)
    assert p.mask.tolist() == [[True, False, True], [False, True, False]]
    assert p.data.tolist() == [[1, 0, 3], [0, 5, 0]]


def test_apply_mask_rejects_bad_masks():
    p = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(ValueError, match="shape"):
        apply_mask(p, np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        apply_mask(p, np.ones((2, 2)))
    apply_mask(p, np.ones((2, 2), dtype=bool))
    assert p.mask is not None and (p.data == 1).all()


@given(st.integers(0, 2 ** 32 - 1), st.sampled_from(["sgd", "adam"]))
def test_masks_survive_training_with_momentum_and_weight_decay(seed, kind):
    rng = np.random.default_rng(seed)
    net = Sequential(Linear(4, 6, rng=0), ReLU(), Linear(6, 2, rng=0))
    masks = [rng.random(layer.weight.shape) < 0.5 for layer in (net[0], net[2])]
    params = net.parameters()
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1) if kind == "sgd" else Adam(params, lr=0.05, weight_decay=0.1)
    x = Tensor(rng.normal(size=(8, 4)).astype(np.float32))
    for _ in range(2):                    # momentum builds up before pruning: stale buffers must not leak
        opt.zero_grad()
        (net(x) ** 2).sum().backward()
        opt.step()
    for layer, keep in zip((net[0], net[2]), masks):
        apply_mask(layer.weight, keep)
    for _ in range(4):
        opt.zero_grad()
        (net(x) ** 2).sum().backward()
        opt.step()
    for layer, keep in zip((net[0], net[2]), masks):
        assert (layer.weight.data[~keep] == 0).all()


def test_remove_pruning_keeps_zeros_and_frees_weights():
    net = Sequential(Linear(3, 2, rng=0))
    apply_mask(net[0].weight, np.array([[True, False, True], [False, True, True]]))
    remove_pruning(net)
    assert net[0].weight.mask is None and np.count_nonzero(net[0].weight.data == 0) == 2
    opt = SGD(net.parameters(), lr=0.5)
    opt.zero_grad()
    (net(Tensor(np.ones((1, 3)))) ** 2).sum().backward()
    opt.step()
    assert np.count_nonzero(net[0].weight.data == 0) == 0, "without a mask, training regrows the zeros"
