"""Structured pruning and sensitivity analysis (tasks structured-prune, sensitivity-analysis)."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytorch.compression.prune import prunable_layers, sensitivity_analysis, structured_prune
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Dropout, Flatten, Linear, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.core.tensor import Tensor
from tinytorch.core.training import evaluate
from compression_oracles import oracle_prune, zero_fraction


def oracle_keep(w, sparsity: float):
    "Keep-mask pruning round(sparsity * n) smallest |w| entries, ties by lower flat index (full sort)."
    scores = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    keep = np.ones(scores.size, bool)
    keep[np.lexsort((np.arange(scores.size), scores))[:round(sparsity * scores.size)]] = False
    return keep.reshape(np.shape(w))


def oracle_kept(weight_2d, ratio, norm):
    "Units kept: drop round(ratio*n) with the smallest norm, ties dropping the lower index (full sort)."
    w = np.abs(weight_2d.reshape(weight_2d.shape[0], -1).astype(np.float64))
    norms = w.sum(axis=1) if norm == 1 else np.sqrt((w ** 2).sum(axis=1))
    n = len(norms)
    k = round(ratio * n)
    order = np.lexsort((np.arange(n), norms))
    return np.sort(order[k:])


def zeroed(model, pruned):
    "The original with every removed unit's weights and bias set to zero."
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


@pytest.mark.task("structured-prune")
def test_mlp_shapes_kept_units_and_original_untouched(mlp):
    original = [p.data.copy() for p in mlp.parameters()]
    small = structured_prune(mlp, 0.5)
    assert [l.weight.shape for _, l in prunable_layers(small)] == [(128, 64), (64, 128), (10, 64)]
    assert [l.bias.shape for _, l in prunable_layers(small)] == [(128,), (64,), (10,)]
    assert [type(l) for l in small] == [type(l) for l in mlp]
    kept0 = oracle_kept(mlp[0].weight.data, 0.5, 1)
    assert np.array_equal(small.kept_units["0"], kept0)
    kept2 = oracle_kept(mlp[2].weight.data[:, kept0], 0.5, 1)     # norms after slicing the inputs
    assert np.array_equal(small.kept_units["2"], kept2)
    assert np.array_equal(small.kept_units["4"], np.arange(10))
    assert np.array_equal(small[2].weight.data, mlp[2].weight.data[np.ix_(kept2, kept0)])
    assert np.array_equal(small[4].weight.data, mlp[4].weight.data[:, kept2])
    assert all(np.array_equal(p.data, o) for p, o in zip(mlp.parameters(), original))
    assert small.parameters()[0] is not mlp.parameters()[0]


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
    x = Tensor(np.random.default_rng(seed).random((4, 1, 8, 8)).astype(np.float32))
    assert np.allclose(pruned(x).data, zeroed(model, pruned)(x).data, atol=1e-5)


@pytest.mark.task("structured-prune")
@given(st.floats(0.0, 0.95), st.sampled_from([1, 2]))
def test_mlp_output_equals_zeroed_original(ratio, norm):
    model = Sequential(Linear(10, 16, rng=1), ReLU(), Linear(16, 12, rng=2), ReLU(), Linear(12, 3, rng=3))
    pruned = structured_prune(model, ratio, norm=norm)
    x = Tensor(np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32))
    assert np.allclose(pruned(x).data, zeroed(model, pruned)(x).data, atol=1e-5)
    assert np.array_equal(pruned.kept_units["0"], oracle_kept(model[0].weight.data, ratio, norm))


@pytest.mark.task("structured-prune")
def test_flatten_boundary_slices_the_right_columns():
    conv = Conv2d(1, 3, 1, bias=False, rng=0)
    conv.weight.data[:, 0, 0, 0] = [1.0, 0.1, 2.0]              # channel 1 has the smallest norm
    head = Linear(3 * 4, 2, rng=0)
    head.weight.data[...] = np.arange(24, dtype=np.float32).reshape(2, 12)
    model = Sequential(conv, Flatten(), head)
    pruned = structured_prune(model, 0.34)                      # round(0.34 * 3) = 1 channel
    assert pruned.kept_units["0"].tolist() == [0, 2]
    expected = head.weight.data[:, [0, 1, 2, 3, 8, 9, 10, 11]]  # features c*4 .. c*4+3 of channels 0 and 2
    assert np.array_equal(pruned[2].weight.data, expected)


@pytest.mark.task("structured-prune")
def test_masks_travel_with_the_kept_weights(mlp):
    oracle_prune(mlp, 0.5)
    pruned = structured_prune(mlp, 0.25)
    kept0, kept2 = pruned.kept_units["0"], pruned.kept_units["2"]
    assert np.array_equal(pruned[0].weight.mask, mlp[0].weight.mask[kept0])
    assert np.array_equal(pruned[2].weight.mask, mlp[2].weight.mask[np.ix_(kept2, kept0)])


@pytest.mark.task("structured-prune")
def test_structured_prune_bad_input(mlp):
    with pytest.raises(ValueError, match="no prunable layer named"):
        structured_prune(mlp, {"7": 0.5})
    with pytest.raises(ValueError, match="classifier"):
        structured_prune(mlp, {"4": 0.5})
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        structured_prune(mlp, 1.0)
    with pytest.raises(ValueError, match="all"):
        structured_prune(Sequential(Linear(2, 2, rng=0), ReLU(), Linear(2, 2, rng=0)), 0.9)
    pruned = structured_prune(mlp, 0.0)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(pruned.parameters(), mlp.parameters()))


@pytest.mark.task("sensitivity-analysis")
def test_structured_sensitivity_matches_independent_evaluation(mlp, flat_loaders):
    _, test = flat_loaders
    state = mlp.state_dict()
    result = sensitivity_analysis(mlp, test, ratios=(0.0, 0.5, 0.9))
    assert result["kind"] == "structured" and result["ratios"] == [0.0, 0.5, 0.9]
    assert list(result["accuracy"]) == ["0", "2"]                # the classifier keeps its outputs
    assert result["baseline"] == evaluate(mlp, test)
    for name in ("0", "2"):
        expected = [evaluate(structured_prune(mlp, {name: r}), test) for r in (0.0, 0.5, 0.9)]
        assert result["accuracy"][name] == expected
    assert result["accuracy"]["0"][0] == result["baseline"]
    assert all(np.array_equal(v, mlp.state_dict()[k]) for k, v in state.items())
    assert mlp[0].weight.mask is None


@pytest.mark.task("sensitivity-analysis")
def test_magnitude_sensitivity_prunes_one_layer_at_a_time(cnn, image_loaders):
    _, test = image_loaders
    result = sensitivity_analysis(cnn, test, ratios=(0.5,), kind="magnitude")
    assert list(result["accuracy"]) == ["0", "3", "7"]
    for name, layer in prunable_layers(cnn):
        copy_ = copy.deepcopy(cnn)
        weight = dict(prunable_layers(copy_))[name].weight
        keep = oracle_keep(weight.data, 0.5)
        weight.data[~keep] = 0
        weight.mask = keep
        assert result["accuracy"][name] == [evaluate(copy_, test)]
    assert zero_fraction(cnn) == 0.0
    with pytest.raises(ValueError, match="kind"):
        sensitivity_analysis(cnn, test, kind="random")
