"""structured_prune on models the other tests do not build: a Flatten before the first layer,
layers without a bias, and Conv2d -> Linear joins that cannot be sliced (no Flatten, or a
Linear whose inputs are not a whole number of channels), which must be refused, not guessed.

Found by mutation testing (benchmarks/mutation.py): deleting the checks of those joins, or the
start state they read, or giving bias-free layers a bias of 0, kept full marks.
"""
import numpy as np
import pytest

from tinytorch.compression.prune import structured_prune
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Linear, Sequential
from tinytorch.core.spatial import Conv2d
from tinytorch.core.tensor import Tensor


def with_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.weight.data[...] = rng.normal(size=layer.weight.shape)
    if layer.bias is not None:
        layer.bias.data[...] = rng.normal(size=layer.bias.shape)
    return layer


@pytest.mark.task("structured-prune")
def test_a_flatten_before_the_first_layer_is_fine():
    model = Sequential(Flatten(), with_weights(Linear(6, 4, rng=0), 1), ReLU(), with_weights(Linear(4, 3, rng=0), 2))
    pruned = structured_prune(model, 0.5)
    x = Tensor(np.random.default_rng(3).normal(size=(5, 2, 3)))
    assert pruned(x).shape == (5, 3)
    assert pruned[1].weight.shape == (2, 6) and pruned[3].weight.shape == (3, 2)


@pytest.mark.task("structured-prune")
def test_layers_without_bias_stay_without_bias():
    model = Sequential(with_weights(Linear(6, 4, bias=False, rng=0), 1), ReLU(),
                       with_weights(Linear(4, 3, bias=False, rng=0), 2))
    pruned = structured_prune(model, 0.5)
    assert pruned[0].bias is None and pruned[2].bias is None
    assert len(pruned.parameters()) == 2


@pytest.mark.task("structured-prune")
def test_conv_straight_into_linear_is_refused():
    model = Sequential(Conv2d(1, 4, 3, rng=0), ReLU(), Linear(4, 3, rng=0))
    with pytest.raises((ValueError, TypeError)):
        structured_prune(model, 0.5)


@pytest.mark.task("structured-prune")
def test_linear_inputs_not_a_whole_number_of_channels_are_refused():
    # 4 channels flattened cannot feed 10 inputs: which inputs belong to a removed channel?
    model = Sequential(Conv2d(1, 4, 3, rng=0), ReLU(), Flatten(), Linear(10, 3, rng=0))
    with pytest.raises((ValueError, TypeError)):
        structured_prune(model, 0.5)
