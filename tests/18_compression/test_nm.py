"""N:M semi-structured sparsity (tinytorch.compression.nm, a given notebook): masks, pruning, storage.

The oracle for the masks ranks each group with a Python sort by (-|w|, index), one group at a
time: the implementation must agree with it while working on all groups at once.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytorch.compression.nm import (decode_nm, encode_nm, is_nm_sparse, nm_mask, nm_nbytes, nm_prune,
                                      position_bits)
from tinytorch.compression.prune import magnitude_prune, prunable_weights
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.models import digits_cnn
from tinytorch.core.optimizers import SGD
from tinytorch.core.training import fit


def oracle_mask(w, n, m, axis=1, alive=None):
    "Keep-mask by brute force: per row, per group of m, keep the n first in order (-|w|, index); dead last."
    w = np.asarray(w, dtype=np.float64)
    axis %= w.ndim
    rows = w.reshape(int(np.prod(w.shape[:axis])), -1)
    dead = np.zeros(rows.shape, bool) if alive is None else ~np.asarray(alive).reshape(rows.shape)
    keep = np.zeros(rows.shape, bool)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], m):
            group = range(start, start + m)
            ranked = sorted(group, key=lambda i: (dead[r, i], -abs(rows[r, i]), i))
            for i in ranked[:n]:
                keep[r, i] = not dead[r, i]
    return keep.reshape(w.shape)


@st.composite
def nm_cases(draw, ties=False):
    "(weights, n, m, axis): a shape whose rows divide into groups of m, values tie-heavy if `ties`."
    m = draw(st.sampled_from([2, 3, 4, 8]))
    n = draw(st.integers(1, m))
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    groups = draw(st.integers(1, 4))
    shape = (*lead, groups * m) if draw(st.booleans()) or m != 4 else (*lead, groups, 2, 2)
    axis = len(lead) if lead else 0
    axis = draw(st.sampled_from([axis, axis - len(shape)]))   # negative axes count from the end
    size = int(np.prod(shape))
    if ties:
        values = draw(st.lists(st.integers(-2, 2), min_size=size, max_size=size))
    else:
        values = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=size, max_size=size))
    return np.array(values, dtype=np.float64).reshape(shape), n, m, axis


def groups_of(array, m, axis):
    "The array as (rows, groups, m), the grouping nm_mask promises."
    axis %= array.ndim
    return np.asarray(array).reshape(int(np.prod(array.shape[:axis])), -1, m)


@given(nm_cases())
def test_mask_keeps_exactly_n_per_group(case):
    w, n, m, axis = case
    keep = nm_mask(w, n, m, axis=axis)
    assert keep.dtype == bool and keep.shape == w.shape
    assert (groups_of(keep, m, axis).sum(axis=-1) == n).all()


@given(nm_cases(ties=True))
def test_mask_keeps_the_n_largest_lower_index_on_ties(case):
    w, n, m, axis = case
    assert np.array_equal(nm_mask(w, n, m, axis=axis), oracle_mask(w, n, m, axis))


def test_tie_rule_lower_index_wins():
    assert nm_mask(np.ones((1, 4)), 2, 4).tolist() == [[True, True, False, False]]
    assert nm_mask(np.array([[1.0, -1.0, 1.0, -1.0]]), 3, 4).tolist() == [[True, True, True, False]]
    assert nm_mask(np.array([[0.0, -0.0, 0.5, -0.5]]), 1, 4).tolist() == [[False, False, True, False]]
    assert nm_mask(np.array([[0.2, np.inf, 0.3, -np.inf]]), 2, 4).tolist() == [[False, True, False, True]]


def test_conv_weights_group_over_each_output_channel():
    w = np.zeros((2, 2, 2, 2))
    w[0, 1, 1, 1], w[0, 1, 1, 0] = 5.0, 4.0   # channel 0, flat entries 7 and 6: the second group
    keep = nm_mask(w, 2, 4)
    assert keep[0, 1, 1, 1] and keep[0, 1, 1, 0] and keep.reshape(2, 2, 4).sum(axis=-1).tolist() == [[2, 2], [2, 2]]


@given(nm_cases(ties=True), st.data())
def test_dead_entries_rank_last_and_stay_pruned(case, data):
    w, n, m, axis = case
    alive = np.array(data.draw(st.lists(st.booleans(), min_size=w.size, max_size=w.size))).reshape(w.shape)
    keep = nm_mask(w, n, m, axis=axis, mask=alive)
    assert np.array_equal(keep, oracle_mask(w, n, m, axis, alive))
    assert not keep[~alive].any()


@pytest.mark.parametrize("n, m, match", [(0, 4, "n must be an int from 1 to m=4"),
                                         (5, 4, "n must be an int from 1 to m=4"),
                                         (2.0, 4, "n must be an int from 1 to m=4"),
                                         (1, 1, "m must be an int >= 2"),
                                         (1, True, "m must be an int >= 2")])
def test_bad_n_or_m(n, m, match):
    with pytest.raises(ValueError, match=match):
        nm_mask(np.ones((2, 8)), n, m)


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        nm_mask(np.ones((16, 9)), 2, 4)
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        nm_mask(np.ones((16, 1, 3, 3)), 2, 4)
    with pytest.raises(ValueError, match="axis must be an int in"):
        nm_mask(np.ones(8), 2, 4)                         # axis=1 does not exist in a vector
    assert nm_mask(np.ones(8), 2, 4, axis=0).sum() == 4
    with pytest.raises(ValueError, match="NaN"):
        nm_mask(np.array([[1.0, np.nan, 0.0, 2.0]]), 2, 4)
    with pytest.raises(ValueError, match="a boolean array of shape"):
        nm_mask(np.ones((2, 4)), 2, 4, mask=np.ones((2, 4)))


def test_is_nm_sparse():
    assert is_nm_sparse(np.array([[0.0, 3.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0]]), 2, 4)
    assert not is_nm_sparse(np.array([[1.0, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]), 2, 4)
    assert is_nm_sparse(np.zeros((3, 8)), 1, 4)


def test_nm_prune_masks_survive_an_optimizer_step(mlp, flat_loaders):
    nm_prune(mlp, 2, 4)
    masks = [w.mask.copy() for _, w in prunable_weights(mlp)]
    assert all(is_nm_sparse(w.data, 2, 4) and w.mask.sum() == w.size // 2 for _, w in prunable_weights(mlp))
    train, _ = flat_loaders
    fit(mlp, list(train)[:4], CrossEntropyLoss(), SGD(mlp.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
        epochs=1, progress=False)
    for (_, w), keep in zip(prunable_weights(mlp), masks):
        assert np.array_equal(w.mask, keep) and (w.data[~keep] == 0).all() and is_nm_sparse(w.data, 2, 4)


def test_nm_prune_keeps_earlier_pruning():
    net = Sequential(Linear(16, 8, rng=0), ReLU(), Linear(8, 4, rng=1))
    magnitude_prune(net, 0.7)
    before = [w.mask.copy() for _, w in prunable_weights(net)]
    nm_prune(net, 2, 4)
    for (_, w), old in zip(prunable_weights(net), before):
        assert not w.mask[~old].any() and is_nm_sparse(w.data, 2, 4)
    # A live weight that happens to be 0 outranks a pruned one: the group keeps two live weights.
    one = Sequential(Linear(4, 1, rng=0))
    one[0].weight.data[...] = [[0.0, 0.0, 1.0, 0.0]]
    one[0].weight.mask = np.array([[False, True, True, False]])
    nm_prune(one, 2, 4)
    assert one[0].weight.mask.tolist() == [[False, True, True, False]]


def test_nm_prune_refuses_an_indivisible_layer_and_changes_nothing():
    cnn = digits_cnn(seed=0)
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\).*not a multiple of m=4"):
        nm_prune(cnn, 2, 4)
    assert all(w.mask is None for _, w in prunable_weights(cnn))
    nm_prune(cnn, 2, 4, layers=["3", "7"])
    masks = {name: w.mask for name, w in prunable_weights(cnn)}
    assert masks["0.weight"] is None and masks["3.weight"].mean() == 0.5 and masks["7.weight"].mean() == 0.5


def test_nm_prune_bad_layers():
    net = Sequential(Linear(8, 4, rng=0))
    with pytest.raises(ValueError, match="no prunable layer named"):
        nm_prune(net, layers=["1"])
    with pytest.raises(ValueError, match="list of layer names"):
        nm_prune(net, layers="0")
    with pytest.raises(ValueError, match="nothing to prune"):
        nm_prune(Sequential(ReLU(), Flatten()))
    with pytest.raises(ValueError, match="n must be an int from 1 to m=4"):
        nm_prune(net, 0, 4)


@given(nm_cases(), st.data())
def test_encode_decode_round_trip_is_exact(case, data):
    w, n, m, axis = case
    w = (w * nm_mask(w, n, m, axis=axis)).astype(data.draw(st.sampled_from([np.float32, np.float64])))
    extra = np.array(data.draw(st.lists(st.booleans(), min_size=w.size, max_size=w.size))).reshape(w.shape)
    w[extra] = 0.0                                   # groups with fewer than n nonzeros too
    values, positions = encode_nm(w, n, m, axis=axis)
    count = w.size // m * n
    assert values.dtype == w.dtype and values.shape == (count,)
    assert positions.dtype == np.uint8 and positions.size == -(-count * position_bits(m) // 8)
    decoded = decode_nm(values, positions, w.shape, n, m, axis=axis)
    assert decoded.dtype == w.dtype and np.array_equal(decoded, w)


def test_encoding_by_hand():
    # Groups [0, a, 0, b] and [c, 0, 0, 0]: values a, b, c and a zero (the lowest free place),
    # positions 1, 3, 0, 1 -> bits 01 11 00 01 = 0b01110001, most significant first.
    w = np.array([[0.0, 2.5, 0.0, -1.5, 4.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    values, positions = encode_nm(w, 2, 4)
    assert values.tolist() == [2.5, -1.5, 4.0, 0.0]
    assert positions.tolist() == [0b01110001]


def test_encode_refuses_a_weight_without_the_pattern():
    with pytest.raises(ValueError, match="not 2:4 sparse: 1 of its 2 groups"):
        encode_nm(np.array([[1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0]]), 2, 4)


def test_decode_refuses_inconsistent_arrays():
    w = np.array([[0.0, 2.5, 0.0, -1.5, 4.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    values, positions = encode_nm(w, 2, 4)
    with pytest.raises(ValueError, match="values must have length 4"):
        decode_nm(values[:3], positions, w.shape, 2, 4)
    with pytest.raises(ValueError, match="positions must be 1 packed uint8 bytes"):
        decode_nm(values, np.zeros(2, np.uint8), w.shape, 2, 4)
    with pytest.raises(ValueError, match="rise within each group"):
        decode_nm(values, np.array([0b01010001], np.uint8), w.shape, 2, 4)    # positions 1, 1 in group 0
    with pytest.raises(ValueError, match=r"lie in 0\.\.2"):
        decode_nm(np.ones(2), np.array([0b11000000], np.uint8), (1, 6), 1, 3)  # position 3 with m=3
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        decode_nm(values, positions, (1, 9), 2, 4)


def test_position_bits():
    assert [position_bits(m) for m in (2, 3, 4, 5, 8, 16)] == [1, 2, 2, 3, 3, 4]


def test_byte_accounting_by_hand():
    # 256 x 64 at 2:4: 8,192 float32 values = 32,768 bytes; 8,192 x 2 bits = 2,048 bytes.
    assert nm_nbytes((256, 64), 2, 4) == {"values": 32768, "positions": 2048, "total": 34816}
    # 10 x 128 at 1:4 with 8-bit values: 320 values = 320 bytes; 320 x 2 bits = 80 bytes.
    assert nm_nbytes((10, 128), 1, 4, value_bits=8) == {"values": 320, "positions": 80, "total": 400}
    # 3 x 8 at 3:8: 3 groups, 9 values (36 bytes), 9 x 3 bits = 27 bits -> 4 bytes.
    assert nm_nbytes((3, 8), 3, 8) == {"values": 36, "positions": 4, "total": 40}
    # Conv2d (32, 16, 3, 3) at 2:4: 32 x 144 / 2 = 2,304 values, 4,608 bits = 576 bytes.
    assert nm_nbytes((32, 16, 3, 3), 2, 4)["positions"] == 576
    with pytest.raises(ValueError, match="value_bits must be an int from 1 to 64"):
        nm_nbytes((4, 4), 2, 4, value_bits=0)


def test_byte_accounting_matches_the_encoded_arrays():
    w = np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32)
    for n, m in ((2, 4), (1, 4), (3, 8)):
        values, positions = encode_nm(w * nm_mask(w, n, m), n, m)
        sizes = nm_nbytes(w.shape, n, m)
        assert (values.nbytes, positions.nbytes) == (sizes["values"], sizes["positions"])
