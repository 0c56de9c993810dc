"""Magnitude masks and magnitude pruning (tasks magnitude-mask, magnitude-prune).

The oracle ranks entries with a full lexicographic sort (by magnitude, then by index), which
the implementation is not allowed to use.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.compression.prune import layer_sparsity, magnitude_mask, magnitude_prune, prunable_weights
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import SGD
from tinytorch.core.training import fit
from compression_oracles import zero_fraction


def oracle_mask(w, sparsity, alive=None):
    "Keep-mask pruning round(s*n) entries: dead first, then smallest |w|, ties by lower flat index."
    scores = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    n = scores.size
    dead = np.zeros(n, bool) if alive is None else ~np.asarray(alive).ravel()
    k = max(round(sparsity * n), int(dead.sum()))
    order = np.lexsort((np.arange(n), scores, ~dead))   # last key first: dead, then |w|, then index
    keep = np.ones(n, bool)
    keep[order[:k]] = False
    return keep.reshape(np.shape(w))


# Small integer values make ties common, which is where exact-count rules go wrong.
tie_heavy = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                       elements=st.integers(-3, 3).map(float))
fractions = st.floats(0.0, 0.999, exclude_max=False)


@pytest.mark.task("magnitude-mask")
def test_magnitude_mask_hand_computed():
    w = np.array([0.1, -3.0, 0.5, 2.0, -0.5])
    assert magnitude_mask(w, 0.6).tolist() == [False, True, False, True, False]   # both tied 0.5s go: no tie rule needed
    assert magnitude_mask(w, 0.2).tolist() == [False, True, True, True, True]     # k = 1
    assert magnitude_mask(w, 0.1).tolist() == [True] * 5                          # k = round(0.5) = 0
    m = magnitude_mask(np.array([[4.0, 1.0], [2.0, -3.0]]), 0.5)
    assert m.dtype == bool and m.shape == (2, 2) and m.tolist() == [[True, False], [False, True]]


@pytest.mark.task("magnitude-mask")
@given(tie_heavy, fractions)
def test_magnitude_mask_on_tie_heavy_inputs_matches_sort_oracle(w, sparsity):
    keep = magnitude_mask(w, sparsity)
    assert keep.shape == w.shape
    assert int((~keep).sum()) == round(sparsity * w.size)
    assert np.array_equal(keep, oracle_mask(w, sparsity))


# Distinct magnitudes: the tie rule plays no part here.
distinct = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                      elements=st.floats(0.01, 100.0), unique=True)


@pytest.mark.task("magnitude-mask")
@given(distinct, fractions, st.integers(0, 2 ** 32 - 1))
def test_magnitude_mask_keeps_dead_entries_dead(w, sparsity, seed):
    alive = np.random.default_rng(seed).random(w.shape) < 0.7
    keep = magnitude_mask(w, sparsity, mask=alive)
    assert not keep[~alive].any()
    assert np.array_equal(keep, oracle_mask(w, sparsity, alive))


# Ungraded: it watches the student's own process (patched NumPy functions), which the grader keeps apart from
# the tests (tito/grading/DESIGN.md); `tito test` runs it, so a student still sees it fail.
def test_magnitude_mask_uses_no_sort(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("use np.partition (linear time), not a sort or a percentile")
    w = np.random.default_rng(0).normal(size=(64, 32))
    expected = oracle_mask(w, 0.9)
    for name in ("sort", "argsort", "lexsort", "percentile", "quantile", "median"):
        monkeypatch.setattr(np, name, forbidden)
    assert np.array_equal(magnitude_mask(w, 0.9), expected)


# The argument checks are given code (above the solution block), so these tests are not graded.
@pytest.mark.parametrize("bad", [1.0, -0.01, 1.5, float("nan"), True, "0.5"])
def test_given_check_rejects_bad_sparsity(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_mask(np.ones(4), bad)


def test_given_checks_reject_nan_and_bad_masks():
    with pytest.raises(ValueError, match="NaN"):
        magnitude_mask(np.array([1.0, np.nan]), 0.5)
    with pytest.raises(ValueError, match="mask"):
        magnitude_mask(np.ones(4), 0.5, mask=np.ones(3, dtype=bool))


@pytest.mark.task("magnitude-mask")
def test_magnitude_mask_tie_rule_prunes_lower_index_first():
    assert magnitude_mask(np.array([0.1, 0.5, 0.5, 0.5]), 0.5).tolist() == [False, False, True, True]
    assert magnitude_mask(np.ones(4), 0.75).tolist() == [False, False, False, True]
    assert magnitude_mask(np.array([[2.0, 2.0], [2.0, 1.0]]), 0.5).tolist() == [[False, True], [True, False]]


@pytest.mark.task("magnitude-mask")
def test_magnitude_mask_ranks_inf_above_finite():
    assert magnitude_mask(np.array([np.inf, 1.0, -np.inf, 2.0]), 0.5).tolist() == [True, False, True, False]


def net_with(weights):
    layers = []
    for i, w in enumerate(weights):
        if i:
            layers.append(ReLU())
        layer = Linear(w.shape[1], w.shape[0], rng=0)
        layer.weight.data[...] = w
        layers.append(layer)
    return Sequential(*layers)


@pytest.mark.task("magnitude-prune")
def test_global_prune_matches_concatenated_oracle(mlp):
    before = [w.data.copy() for _, w in prunable_weights(mlp)]
    magnitude_prune(mlp, 0.9)
    flat = np.concatenate([w.ravel() for w in before])
    expected = oracle_mask(flat, 0.9)
    got = np.concatenate([w.mask.ravel() for _, w in prunable_weights(mlp)])
    assert np.array_equal(got, expected)
    assert int((~got).sum()) == round(0.9 * flat.size)
    assert zero_fraction(mlp) == pytest.approx(round(0.9 * flat.size) / flat.size, abs=1e-12)
    for (_, w), old in zip(prunable_weights(mlp), before):
        assert np.array_equal(w.data, np.where(w.mask, old, 0.0))
    assert (mlp[0].bias.data != 0).all(), "biases are not pruned"


@pytest.mark.task("magnitude-prune")
def test_layer_scope_prunes_each_layer_exactly(mlp):
    before = [w.data.copy() for _, w in prunable_weights(mlp)]
    magnitude_prune(mlp, 0.7, scope="layer")
    for (_, w), old in zip(prunable_weights(mlp), before):
        assert int((~w.mask).sum()) == round(0.7 * old.size)
        assert np.array_equal(w.mask, oracle_mask(old, 0.7))


@pytest.mark.task("magnitude-prune")
def test_global_ranking_takes_the_smallest_layer_first():
    small, large = np.full((2, 2), 0.1), np.arange(1.0, 7.0).reshape(3, 2)
    net = magnitude_prune(net_with([small, large]), 0.4)              # k = 4: all of the small layer
    assert layer_sparsity(net) == {"0.weight": 1.0, "2.weight": 0.0}


@pytest.mark.task("magnitude-prune")
def test_guard_protects_each_layers_largest_weights():
    small, large = np.array([[0.1, 0.4], [0.2, 0.3]]), np.arange(1.0, 7.0).reshape(3, 2)
    net = magnitude_prune(net_with([small, large]), 0.4, min_keep=0.5)  # 2 of 4 protected in layer 0
    assert net[0].weight.mask.tolist() == [[False, True], [False, True]]
    assert net[2].weight.mask.tolist() == [[False, False], [True, True], [True, True]]


@pytest.mark.task("magnitude-prune")
def test_guard_ties_protect_the_higher_index():
    small, large = np.full((2, 2), 0.1), np.arange(1.0, 7.0).reshape(3, 2)
    net = magnitude_prune(net_with([small, large]), 0.4, min_keep=0.5)  # four tied weights, two protected
    assert net[0].weight.mask.tolist() == [[False, False], [True, True]]


@pytest.mark.task("magnitude-prune")
def test_impossible_guard_target_raises_naming_min_keep():
    small, large = np.full((2, 2), 0.1), np.arange(1.0, 7.0).reshape(3, 2)
    with pytest.raises(ValueError, match="min_keep"):
        magnitude_prune(net_with([small, large]), 0.8, min_keep=0.5)     # 8 to prune, only 5 unprotected


@pytest.mark.task("magnitude-prune")
@given(st.floats(0.5, 0.99), st.floats(0.005, 0.05))
def test_guard_keeps_a_floor_in_every_layer(sparsity, min_keep):
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(20, 8)), rng.normal(size=(30, 20)) * 0.01, rng.normal(size=(4, 30))]
    net = net_with(weights)
    total = sum(w.size for w in weights)
    try:
        magnitude_prune(net, sparsity, min_keep=min_keep)
    except ValueError:
        protected = sum(math.ceil(min_keep * w.size) for w in weights)
        assert round(sparsity * total) > total - protected
        return
    for (_, w), original in zip(prunable_weights(net), weights):
        assert int(w.mask.sum()) >= math.ceil(min_keep * original.size)
    assert int(sum((~w.mask).sum() for _, w in prunable_weights(net))) == round(sparsity * total)


@pytest.mark.task("magnitude-prune")
@given(st.lists(st.floats(0.0, 0.99), min_size=1, max_size=4), st.sampled_from(["global", "layer"]))
def test_sparsity_is_monotone_and_pruned_stays_pruned(targets, scope):
    net = net_with([np.random.default_rng(1).normal(size=(12, 6)), np.random.default_rng(2).normal(size=(3, 12))])
    previous_mask = None
    previous = 0.0
    for target in targets:
        magnitude_prune(net, target, scope=scope)
        masks = np.concatenate([w.mask.ravel() for _, w in prunable_weights(net)])
        if previous_mask is not None:
            assert not masks[~previous_mask].any(), "a pruned weight came back"
        now = zero_fraction(net)
        assert now >= previous
        if scope == "global":
            assert int((~masks).sum()) == max(round(target * masks.size), int((~previous_mask).sum()) if previous_mask is not None else 0)
        previous_mask, previous = masks, now


@pytest.mark.task("magnitude-prune")
@given(st.floats(0.0, 0.99), st.sampled_from(["global", "layer"]))
def test_pruning_twice_is_idempotent(sparsity, scope):
    net = net_with([np.random.default_rng(3).normal(size=(10, 5)), np.random.default_rng(4).normal(size=(4, 10))])
    magnitude_prune(net, sparsity, scope=scope)
    first = [(w.data.copy(), w.mask.copy()) for _, w in prunable_weights(net)]
    magnitude_prune(net, sparsity, scope=scope)
    for (data, mask), (_, w) in zip(first, prunable_weights(net)):
        assert np.array_equal(mask, w.mask) and np.array_equal(data, w.data)


@pytest.mark.task("magnitude-prune")
def test_masks_survive_fine_tuning(mlp, flat_loaders):
    magnitude_prune(mlp, 0.8)
    masks = [w.mask.copy() for _, w in prunable_weights(mlp)]
    train, _ = flat_loaders
    fit(mlp, list(train)[:4], CrossEntropyLoss(), SGD(mlp.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
        epochs=1, progress=False)
    for (_, w), keep in zip(prunable_weights(mlp), masks):
        assert (w.data[~keep] == 0).all() and np.array_equal(w.mask, keep)
    assert zero_fraction(mlp) >= 0.8 - 1e-9


@pytest.mark.task("magnitude-prune")
def test_magnitude_prune_works_on_conv_layers(cnn):
    magnitude_prune(cnn, 0.5, scope="layer")
    assert set(layer_sparsity(cnn)) == {"0.weight", "3.weight", "7.weight"}
    for _, w in prunable_weights(cnn):
        assert int((~w.mask).sum()) == round(0.5 * w.size)


def test_given_checks_reject_bad_magnitude_prune_input(mlp):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_prune(mlp, 1.5)
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(mlp, 0.5, scope="row")
    with pytest.raises(ValueError, match="min_keep"):
        magnitude_prune(mlp, 0.5, min_keep=2.0)
    with pytest.raises(ValueError, match="nothing to prune"):
        magnitude_prune(Sequential(ReLU(), Flatten()), 0.5)
    mlp[2].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        magnitude_prune(mlp, 0.5)
    mlp[2].weight.data[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        magnitude_prune(mlp, 0.5)
    assert mlp[0].weight.mask is None, "nothing may be pruned when the input is rejected"
