"""Structured pruning (task structured-prune) and the given sensitivity analysis built on it."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytorch.compression.prune import prunable_layers, sensitivity_analysis, structured_prune
from tinytorch.core.activations import ReLU
from tinytorch.core.blocks import Residual
from tinytorch.core.layers import Dropout, Flatten, Linear, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.core.tensor import Tensor
from tinytorch.core.training import evaluate
from compression_oracles import oracle_prune


def oracle_kept(arrays, ratio, norm):
    """Channels kept: score = sum over `arrays` of each row's L1/L2 norm; drop round(ratio*n) with the
    smallest score, ties dropping the lower index (a full sort, not magnitude_mask)."""
    rows = [np.abs(a.reshape(a.shape[0], -1).astype(np.float64)) for a in arrays]
    scores = sum(r.sum(axis=1) if norm == 1 else np.sqrt((r ** 2).sum(axis=1)) for r in rows)
    n = len(scores)
    order = np.lexsort((np.arange(n), scores))
    return np.sort(order[round(ratio * n):])


def zeroed(model, pruned):
    "The original with every removed unit's weights and bias set to zero (chain models, no BatchNorm)."
    model = copy.deepcopy(model)
    for name, layer in prunable_layers(model):
        gone = np.setdiff1d(np.arange(layer.weight.shape[0]), pruned.kept_units[name])
        layer.weight.data[gone] = 0.0
        if layer.bias is not None:
            layer.bias.data[gone] = 0.0
    return model


def small_cnn(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(1, 6, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),
                      Conv2d(6, 8, 3, padding=1, rng=rng), ReLU(), Dropout(0.5, rng=0), MaxPool2d(2),
                      Flatten(), Linear(8 * 2 * 2, 12, rng=rng), ReLU(), Linear(12, 5, rng=rng))


def tied_mlp():
    "Hidden layer '0' whose 4 neurons have L1 norms 3, 1, 1, 2 (a tie) and L2 norms 3, 1, 1, 2 too."
    model = Sequential(Linear(1, 4, rng=0), ReLU(), Linear(4, 2, rng=1))
    model[0].weight.data[:, 0] = [3.0, 1.0, -1.0, 2.0]
    return model


def residual_mlp():
    """Group '0' is made by two layers added together: '0' and '2.body.0'. Ranked by layer '0' alone,
    neuron 0 is the weakest; summed over both, neuron 1 is."""
    model = Sequential(Linear(3, 3, bias=False, rng=0), ReLU(),
                       Residual(Sequential(Linear(3, 3, bias=False, rng=1))), ReLU(), Linear(3, 2, rng=2))
    model[0].weight.data[...] = [[1, 0, 0], [0, 2, 0], [0, 0, 3]]
    model[2].body[0].weight.data[...] = [[4, 0, 0], [0, 0.5, 0], [0, 0, 1]]
    return model


@pytest.mark.task("structured-prune")
def test_mlp_halves_hidden_layers_keeps_classifier_and_original(mlp):
    original = [p.data.copy() for p in mlp.parameters()]
    small = structured_prune(mlp, 0.5)
    assert [small[i].weight.shape for i in (0, 2, 4)] == [(128, 64), (64, 128), (10, 64)]
    assert [small[i].bias.shape for i in (0, 2, 4)] == [(128,), (64,), (10,)]
    assert [type(l) for l in small] == [type(l) for l in mlp]
    assert all(np.array_equal(p.data, o) for p, o in zip(mlp.parameters(), original))
    assert small.parameters()[0] is not mlp.parameters()[0]


@pytest.mark.task("structured-prune")
def test_mlp_ranks_each_group_by_its_norm_on_the_original_weights(mlp):
    small = structured_prune(mlp, 0.5)
    kept0 = oracle_kept([mlp[0].weight.data], 0.5, 1)
    kept2 = oracle_kept([mlp[2].weight.data], 0.5, 1)
    assert np.array_equal(small.kept_units["0"], kept0)
    assert np.array_equal(small.kept_units["2"], kept2)
    assert np.array_equal(small[2].weight.data, mlp[2].weight.data[np.ix_(kept2, kept0)])


@pytest.mark.task("structured-prune")
def test_next_layer_loses_the_inputs_of_removed_neurons(mlp):
    small = structured_prune(mlp, 0.25)
    kept2 = small.kept_units["2"]
    assert np.array_equal(small[4].weight.data, mlp[4].weight.data[:, kept2])
    x = Tensor(np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32))
    assert small(x).shape == (3, 10)


@pytest.mark.task("structured-prune")
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_classifier_keeps_all_outputs(mlp, ratio):
    small = structured_prune(mlp, ratio)
    assert small[4].weight.shape[0] == 10
    assert np.array_equal(small.kept_units["4"], np.arange(10))


@pytest.mark.task("structured-prune")
@pytest.mark.parametrize("ratio, kept", [(0.25, [0, 2, 3]), (0.5, [0, 3]), (0.75, [0])])
def test_tied_scores_remove_the_lower_index_first(ratio, kept):
    # scores 3, 1, 1, 2: the two tied 1s go in index order (magnitude_mask's rule)
    assert structured_prune(tied_mlp(), ratio).kept_units["0"].tolist() == kept
    assert structured_prune(tied_mlp(), ratio, norm=2).kept_units["0"].tolist() == kept


@pytest.mark.task("structured-prune")
def test_scores_are_summed_over_every_layer_of_a_group():
    model = residual_mlp()
    # L1 scores of group '0': layer '0' rows 1, 2, 3 plus layer '2.body.0' rows 4, 0.5, 1 -> 5, 2.5, 4
    small = structured_prune(model, 0.34)
    assert small.kept_units["0"].tolist() == [0, 2]
    assert small[0].weight.shape == (2, 3) and small[2].body[0].weight.shape == (2, 2)
    assert small[4].weight.shape == (2, 2)
    weights = [model[0].weight.data, model[2].body[0].weight.data]
    assert np.array_equal(small.kept_units["0"], oracle_kept(weights, 0.34, 1))


@pytest.mark.task("structured-prune")
@given(st.floats(0.0, 0.85), st.floats(0.0, 0.85), st.sampled_from([1, 2]), st.integers(0, 1000))
def test_cnn_output_equals_zeroed_original(r0, r1, norm, seed):
    model = small_cnn(seed)
    model.eval()
    pruned = structured_prune(model, {"0": r0, "3": r1, "8": 0.5}, norm=norm)
    pruned.eval()
    widths = [l.weight.shape[0] for _, l in prunable_layers(pruned)]
    assert widths == [6 - round(r0 * 6), 8 - round(r1 * 8), 12 - round(0.5 * 12), 5]
    assert pruned[8].weight.shape[1] == widths[1] * 4           # Conv2d -> Flatten -> Linear boundary
    assert np.array_equal(pruned.kept_units["3"], oracle_kept([model[3].weight.data], r1, norm))
    x = Tensor(np.random.default_rng(seed).random((4, 1, 8, 8)).astype(np.float32))
    assert np.allclose(pruned(x).data, zeroed(model, pruned)(x).data, atol=1e-5)


@pytest.mark.task("structured-prune")
@given(st.floats(0.0, 0.95), st.sampled_from([1, 2]))
def test_mlp_output_equals_zeroed_original(ratio, norm):
    model = Sequential(Linear(10, 16, rng=1), ReLU(), Linear(16, 12, rng=2), ReLU(), Linear(12, 3, rng=3))
    pruned = structured_prune(model, ratio, norm=norm)
    x = Tensor(np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32))
    assert np.allclose(pruned(x).data, zeroed(model, pruned)(x).data, atol=1e-5)
    assert np.array_equal(pruned.kept_units["0"], oracle_kept([model[0].weight.data], ratio, norm))


@pytest.mark.task("structured-prune")
def test_groups_not_named_keep_everything(mlp):
    small = structured_prune(mlp, {"2": 0.5})
    assert small[0].weight.shape == (256, 64) and small[2].weight.shape == (64, 256)
    assert np.array_equal(small.kept_units["0"], np.arange(256))


@pytest.mark.task("structured-prune")
def test_masks_travel_with_the_kept_weights(mlp):
    oracle_prune(mlp, 0.5)
    pruned = structured_prune(mlp, 0.25)
    kept0, kept2 = pruned.kept_units["0"], pruned.kept_units["2"]
    assert np.array_equal(pruned[0].weight.mask, mlp[0].weight.mask[kept0])
    assert np.array_equal(pruned[2].weight.mask, mlp[2].weight.mask[np.ix_(kept2, kept0)])


@pytest.mark.task("structured-prune")
def test_structured_prune_bad_input(mlp):
    with pytest.raises(ValueError, match="no prunable group named"):
        structured_prune(mlp, {"7": 0.5})
    with pytest.raises(ValueError, match="classifier"):
        structured_prune(mlp, {"4": 0.5})
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        structured_prune(mlp, 1.0)
    with pytest.raises(ValueError, match="would remove all"):
        structured_prune(Sequential(Linear(2, 2, rng=0), ReLU(), Linear(2, 2, rng=0)), 0.9)
    pruned = structured_prune(mlp, 0.0)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(pruned.parameters(), mlp.parameters()))
    assert np.array_equal(pruned.kept_units["2"], np.arange(128))


def test_structured_sensitivity_matches_independent_evaluation(mlp, flat_loaders):
    _, test = flat_loaders
    state = mlp.state_dict()
    result = sensitivity_analysis(mlp, test, ratios=(0.0, 0.5, 0.9))
    assert result["ratios"] == [0.0, 0.5, 0.9]
    assert list(result["accuracy"]) == ["0", "2"]                # the classifier keeps its outputs
    assert result["baseline"] == evaluate(mlp, test)
    for name in ("0", "2"):
        expected = [evaluate(structured_prune(mlp, {name: r}), test) for r in (0.0, 0.5, 0.9)]
        assert result["accuracy"][name] == expected
    assert result["accuracy"]["0"][0] == result["baseline"]
    assert all(np.array_equal(v, mlp.state_dict()[k]) for k, v in state.items())
    assert mlp[0].weight.mask is None


def test_structured_sensitivity_prunes_one_channel_group_at_a_time(small_batches):
    model = residual_mlp()                       # prunable group '0' spans layers '0' and '2.body.0'
    data = [(x[:, :3], y) for x, y in small_batches(n=64, features=3)]
    result = sensitivity_analysis(model, data, ratios=(0.34,))
    assert list(result["accuracy"]) == ["0"]
    assert result["accuracy"]["0"] == [evaluate(structured_prune(model, {"0": 0.34}), data)]
