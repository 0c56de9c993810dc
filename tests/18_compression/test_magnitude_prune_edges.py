"""magnitude_prune at its edges: a guard that protects one weight per layer, a target that uses
up every unprotected weight exactly, the error naming the layers, and weights already pruned
ranked below a live weight that is exactly zero, whether some or all layers carry a mask.

Found by mutation testing (benchmarks/mutation.py): `protect > 1` for `protect > 0`, `>=` for
`>` in the "too many protected" check, the weights instead of their names in the message, and
`all`/`is None` in the test for existing masks all kept full marks.
"""
import numpy as np
import pytest

from tinytorch.compression.prune import magnitude_prune
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential


def two_layers(small=None, dead=()):
    """Linear 2->2 (weights `small`, default 0.1..0.4) and Linear 2->3 (weights 1..6); the flat
    indices `dead` of the second layer are already pruned (zeroed, mask False). No ties: these
    tests do not depend on the tie rule."""
    first, second = Linear(2, 2, rng=0), Linear(2, 3, rng=0)
    first.weight.data[...] = np.array([[0.1, 0.2], [0.3, 0.4]]) if small is None else small
    second.weight.data[...] = np.arange(1.0, 7.0).reshape(3, 2)
    if dead:
        keep = np.ones(6, dtype=bool)
        keep[list(dead)] = False
        second.weight.data[~keep.reshape(3, 2)] = 0.0
        second.weight.mask = keep.reshape(3, 2)
    return Sequential(first, ReLU(), second)


@pytest.mark.task("magnitude-prune")
def test_guard_of_one_weight_keeps_that_layers_largest():
    # min_keep 0.25: ceil(0.25 * 4) = 1 weight protected in layer 0, ceil(0.25 * 6) = 2 in layer 2.
    # k = round(0.4 * 10) = 4: without the guard all four of layer 0 would go.
    net = magnitude_prune(two_layers(), 0.4, min_keep=0.25)
    assert net[0].weight.mask.tolist() == [[False, False], [False, True]]
    assert net[2].weight.mask.tolist() == [[False, True], [True, True], [True, True]]


@pytest.mark.task("magnitude-prune")
def test_target_using_every_unprotected_weight_is_allowed():
    # 10 weights, 1 + 2 protected: k = round(0.7 * 10) = 7 is exactly what may go
    net = magnitude_prune(two_layers(), 0.7, min_keep=0.25)
    assert net[0].weight.mask.tolist() == [[False, False], [False, True]]
    assert net[2].weight.mask.tolist() == [[False, False], [False, False], [True, True]]


@pytest.mark.task("magnitude-prune")
def test_one_protected_weight_too_many_is_an_error_naming_the_layers():
    # k = round(0.8 * 10) = 8 > 10 - 3 protected, the single protected weight of layer 0 included
    with pytest.raises(ValueError, match=r"min_keep") as error:
        magnitude_prune(two_layers(), 0.8, min_keep=0.25)
    assert "'0.weight'" in str(error.value) and "'2.weight'" in str(error.value)


@pytest.mark.task("magnitude-prune")
def test_pruned_weights_go_before_a_live_zero_when_only_some_layers_have_masks():
    # layer 0 (no mask yet) holds a live weight that is exactly 0 at flat index 0; layer 2 has two
    # pruned weights (also 0). k = round(0.2 * 10) = 2 = the pruned ones: the live zero stays.
    net = magnitude_prune(two_layers(np.array([[0.0, 0.5], [0.7, 0.9]]), dead=(0, 1)), 0.2)
    assert net[0].weight.mask.tolist() == [[True, True], [True, True]]
    assert net[2].weight.mask.tolist() == [[False, False], [True, True], [True, True]]


@pytest.mark.task("magnitude-prune")
def test_pruned_weights_go_before_a_live_zero_when_every_layer_has_a_mask():
    net = two_layers(np.array([[0.0, 0.5], [0.7, 0.9]]), dead=(0, 1))
    net[0].weight.mask = np.ones((2, 2), dtype=bool)   # masked, nothing pruned yet
    magnitude_prune(net, 0.2)
    assert net[0].weight.mask.tolist() == [[True, True], [True, True]]
    assert net[2].weight.mask.tolist() == [[False, False], [True, True], [True, True]]
