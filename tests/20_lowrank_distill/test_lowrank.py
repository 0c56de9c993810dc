"""Low-rank factorization (tasks rank-for-energy, low-rank-factorize, choose-ranks).

Oracles: energies summed rank by rank in float64, NumPy's SVD, and the Eckart-Young error
sqrt(sum of the dropped s_i^2 / sum of all s_i^2).
"""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.compression.lowrank import (choose_ranks, count_flops, factorize_model, low_rank_factorize,
                                           rank_for_energy)
from tinytorch.compression.prune import magnitude_prune
from tinytorch.compression.sparse import to_sparse
from tinytorch.compression.quantize import quantize_model
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.optimizers import SGD
from tinytorch.core.tensor import Tensor


def as_int(value) -> int:
    "A rank the student code returned: it must be a real integer, not an object that compares equal."
    assert isinstance(value, (int, np.integer)) and not isinstance(value, bool), type(value)
    return int(value)


def energy(s, r: int) -> float:
    "Fraction of the squared singular values that the r largest hold (oracle, rank by rank)."
    squares = np.sort(np.asarray(s, dtype=np.float64))[::-1] ** 2
    return float(squares[:r].sum() / squares.sum()) if squares.sum() > 0 else 1.0


def factors(seq):
    "(A, B, bias) of a factorized layer, as float64 arrays checked to be real arrays."
    assert type(seq) is Sequential and len(seq) == 2, seq
    first, second = seq[0], seq[1]
    assert type(first) is Linear and type(second) is Linear
    assert first.bias is None, "the first factor has no bias"
    A, B = first.weight.data, second.weight.data
    assert type(A) is np.ndarray and type(B) is np.ndarray
    bias = None if second.bias is None else np.asarray(second.bias.data, dtype=np.float64)
    return A.astype(np.float64), B.astype(np.float64), bias


def linear_with(weight, bias=True):
    weight = np.asarray(weight, dtype=np.float32)
    layer = Linear(weight.shape[1], weight.shape[0], bias=bias, rng=0)
    layer.weight.data[...] = weight
    return layer


nonnegative = hnp.arrays(np.float64, st.integers(1, 12),
                         elements=st.floats(0.0, 100.0) | st.sampled_from([0.0, 1.0, 2.0]))
energies = st.floats(0.01, 1.0)


# -- rank-for-energy --------------------------------------------------------------------------


@pytest.mark.task("rank-for-energy")
def test_rank_for_energy_hand_computed():
    assert as_int(rank_for_energy([4.0, 3.0], 0.6)) == 1             # E(1) = 16/25 = 0.64
    assert as_int(rank_for_energy([4.0, 3.0], 0.64)) == 1            # exactly reached counts
    assert as_int(rank_for_energy([4.0, 3.0], 0.65)) == 2
    assert as_int(rank_for_energy([3.0, 4.0], 0.6)) == 1             # any order of the input
    assert [as_int(rank_for_energy([1.0] * 4, e)) for e in (0.2, 0.25, 0.26, 0.75, 1.0)] == [1, 1, 2, 3, 4]
    assert as_int(rank_for_energy(np.array([10.0, 0.0, 0.0]), 1.0)) == 1
    assert as_int(rank_for_energy(np.zeros(5), 0.5)) == 1            # a zero matrix: one rank is enough


@pytest.mark.task("rank-for-energy")
@given(nonnegative, energies)
def test_rank_for_energy_is_the_smallest_rank_meeting_the_fraction(s, e):
    r = as_int(rank_for_energy(s, e))
    assert 1 <= r <= s.size
    if s.sum() == 0:
        assert r == 1
        return
    assert energy(s, r) >= e - 1e-12
    assert r == 1 or energy(s, r - 1) < e + 1e-12


@pytest.mark.task("rank-for-energy")
def test_rank_for_energy_full_energy_is_never_more_than_full_rank():
    # Summing in a different order than the implementation: energy 1.0 must still give exactly n.
    rng = np.random.default_rng(0)
    for n in (3, 17, 64, 200):
        s = rng.random(n) * 10 ** rng.uniform(-3, 3, size=n)
        assert as_int(rank_for_energy(s, 1.0)) == n - int(np.sum(s == 0))


@pytest.mark.task("rank-for-energy")
def test_rank_for_energy_bad_input():
    for bad in (0.0, -0.5, 1.01, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="energy"):
            rank_for_energy([1.0, 2.0], bad)
    for bad in ([], [[1.0, 2.0]], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            rank_for_energy(bad, 0.5)
    assert as_int(rank_for_energy([2.0, 1.0], 0.5)) == 1


# -- low-rank-factorize -----------------------------------------------------------------------


@pytest.mark.task("low-rank-factorize")
def test_full_rank_reproduces_the_trained_layers(mlp):
    x = Tensor(np.random.default_rng(0).random((7, 64)).astype(np.float32))
    h = x
    for layer in (mlp[0], mlp[2], mlp[4]):
        full = min(layer.in_features, layer.out_features)
        seq = low_rank_factorize(layer, rank=full)
        A, B, bias = factors(seq)
        assert A.shape == (full, layer.in_features) and B.shape == (layer.out_features, full)
        out = seq(h)
        assert type(out) is Tensor
        assert np.allclose(out.data, layer(h).data, rtol=1e-4, atol=1e-4)
        h = Tensor(np.maximum(layer(h).data, 0))
    whole = factorize_model(mlp, {"0": 64, "2": 128, "4": 10})
    assert np.allclose(whole(x).data, mlp(x).data, rtol=1e-4, atol=1e-4)


@pytest.mark.task("low-rank-factorize")
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.floats(-5, 5)),
       st.data())
def test_factors_are_the_truncated_svd(w, data):
    w = w.astype(np.float32).astype(np.float64)       # what a float32 layer holds
    k = min(w.shape)
    r = data.draw(st.integers(1, k))
    A, B, bias = factors(low_rank_factorize(linear_with(w), rank=r))
    U, s, Vt = np.linalg.svd(w, full_matrices=False)
    scale = max(1.0, np.abs(w).max())
    assert A.shape == (r, w.shape[1]) and B.shape == (w.shape[0], r)
    # Eckart-Young: the error of the best rank-r approximation, whichever one it is.
    tail = np.sqrt(np.sum(s[r:] ** 2))
    assert abs(np.linalg.norm(w - B @ A) - tail) < 1e-4 * scale
    if r == k or s[r - 1] - s[r] > 1e-3 * scale:      # a unique best approximation: the truncated SVD
        best = (U[:, :r] * s[:r]) @ Vt[:r]
        assert np.allclose(B @ A, best, atol=1e-4 * scale)
    # sqrt(s) in each factor: the rows of A and the columns of B have norms sqrt(s_i).
    assert np.allclose(np.linalg.norm(A, axis=1), np.sqrt(s[:r]), atol=1e-3 * np.sqrt(scale))
    assert np.allclose(np.linalg.norm(B, axis=0), np.sqrt(s[:r]), atol=1e-3 * np.sqrt(scale))


@pytest.mark.task("low-rank-factorize")
def test_energy_picks_the_rank_and_bounds_the_error(mlp):
    w = mlp[2].weight.data.astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    for e in (0.3, 0.8, 0.95, 1.0):
        A, B, _ = factors(low_rank_factorize(mlp[2], energy=e))
        r = A.shape[0]
        assert energy(s, r) >= e - 1e-9 and (r == 1 or energy(s, r - 1) < e)
        assert np.linalg.norm(w - B @ A) / np.linalg.norm(w) <= np.sqrt(1 - e) + 1e-4


@pytest.mark.task("low-rank-factorize")
def test_bias_placement_and_the_original_is_untouched():
    w = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    layer = linear_with(w)
    layer.bias.data[...] = [1.0, 2.0, 3.0]
    before = copy.deepcopy(layer.state_dict())
    A, B, bias = factors(low_rank_factorize(layer, rank=1))
    assert np.allclose(B @ A, [[3.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert np.allclose(bias, [1.0, 2.0, 3.0])
    assert all(np.array_equal(v, layer.state_dict()[k]) for k, v in before.items())
    _, _, no_bias = factors(low_rank_factorize(linear_with(w, bias=False), rank=2))
    assert no_bias is None


@pytest.mark.task("low-rank-factorize")
def test_the_factors_are_trainable_layers():
    rng = np.random.default_rng(1)
    layer = linear_with(rng.normal(size=(5, 8)))
    seq = low_rank_factorize(layer, rank=2)
    assert len(seq.parameters()) == 3 and all(p.requires_grad for p in seq.parameters())
    x = Tensor(rng.normal(size=(16, 8)).astype(np.float32))
    y = rng.integers(0, 5, size=16)
    before = [p.data.copy() for p in seq.parameters()]
    opt = SGD(seq.parameters(), lr=0.1)
    loss = CrossEntropyLoss()(seq(x), y)
    loss.backward()
    opt.step()
    assert all(not np.array_equal(b, p.data) for b, p in zip(before, seq.parameters()))


@pytest.mark.task("low-rank-factorize")
def test_low_rank_factorize_bad_input():
    layer = linear_with(np.eye(3))
    with pytest.raises(TypeError):
        low_rank_factorize(ReLU(), rank=1)
    for kwargs in ({}, {"rank": 1, "energy": 0.5}, {"rank": 0}, {"rank": 4}, {"rank": 1.5},
                   {"energy": 0.0}, {"energy": 1.5}):
        with pytest.raises(ValueError):
            low_rank_factorize(layer, **kwargs)
    nan = linear_with(np.eye(3))
    nan.weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        low_rank_factorize(nan, rank=1)
    A, B, _ = factors(low_rank_factorize(layer, rank=3))
    assert np.allclose(B @ A, np.eye(3), atol=1e-6)


# -- choose-ranks -----------------------------------------------------------------------------


@pytest.mark.task("choose-ranks")
def test_choose_ranks_hand_computed():
    net = Sequential(Linear(4, 4, rng=0), ReLU(), Linear(4, 2, rng=0))
    net[0].weight.data[...] = np.diag([5.0, 1.0, 1.0, 1.0])       # E(1) = 25/28, E(2) = 26/28
    net[2].weight.data[...] = [[1.0, 0, 0, 0], [0, 1.0, 0, 0]]    # E(1) = 1/2
    chosen = choose_ranks(net, 0.5)
    assert type(chosen) is dict
    assert {k: as_int(v) for k, v in chosen.items()} == {"0": 1, "2": 1}
    assert {k: as_int(v) for k, v in choose_ranks(net, 0.85).items()} == {"0": 1}   # "2": 2 * 6 > 8
    assert choose_ranks(net, 0.92) == {}                                            # "0": 2 * 8 == 16


@pytest.mark.task("choose-ranks")
def test_choose_ranks_on_the_mlp_and_nested_layers(mlp):
    for e in (0.5, 0.9, 0.99):
        expected = {}
        for name, layer in (("0", mlp[0]), ("2", mlp[2]), ("4", mlp[4])):
            s = np.linalg.svd(layer.weight.data.astype(np.float64), compute_uv=False)
            r = next(r for r in range(1, s.size + 1) if energy(s, r) >= e - 1e-12)
            if r * (layer.in_features + layer.out_features) < layer.in_features * layer.out_features:
                expected[name] = r
        chosen = choose_ranks(mlp, e)
        assert type(chosen) is dict and {k: as_int(v) for k, v in chosen.items()} == expected
    nested = Sequential(Flatten(), Sequential(Linear(6, 6, rng=0), ReLU()))
    nested[1][0].weight.data[...] = np.diag([1.0, 0, 0, 0, 0, 0])
    assert {k: as_int(v) for k, v in choose_ranks(nested, 0.9).items()} == {"1.0": 1}


@pytest.mark.task("choose-ranks")
def test_choose_ranks_bad_input():
    with pytest.raises(ValueError, match="energy"):
        choose_ranks(Sequential(Linear(2, 2, rng=0)), 0.0)
    with pytest.raises(ValueError):
        choose_ranks(Sequential(ReLU(), Flatten()), 0.9)
    with pytest.raises(TypeError):
        choose_ranks(np.eye(3), 0.9)
    net = Sequential(Linear(8, 8, rng=0))
    net[0].weight.data[...] = np.outer(np.arange(8.0), np.ones(8))   # rank 1
    assert {k: as_int(v) for k, v in choose_ranks(net, 0.99).items()} == {"0": 1}


# -- the given helpers (not graded) -------------------------------------------------------------


def test_factorize_model_keeps_order_and_names(mlp):
    thin = factorize_model(mlp, {"2": 16})
    assert [type(layer).__name__ for layer in thin] == ["Linear", "ReLU", "Sequential", "ReLU", "Linear"]
    assert [name for name, _ in thin.named_parameters()] == [
        "0.weight", "0.bias", "2.0.weight", "2.1.weight", "2.1.bias", "4.weight", "4.bias"]
    assert mlp[2].weight.shape == (128, 256)
    assert thin[0] is not mlp[0], "unchanged layers are copies"
    with pytest.raises(ValueError, match="no Linear layer named"):
        factorize_model(mlp, {"1": 2})


def test_count_flops_by_hand(mlp, cnn):
    assert count_flops(mlp, (64,)) == 2 * (64 * 256 + 256 * 128 + 128 * 10)
    assert count_flops(factorize_model(mlp, {"0": 8}), (64,)) == 2 * (8 * (64 + 256) + 256 * 128 + 128 * 10)
    # Conv2d: every output position multiplies the whole filter bank.
    assert count_flops(cnn, (1, 8, 8)) == 2 * (8 * 8 * 16 * 1 * 9 + 4 * 4 * 32 * 16 * 9 + 10 * 128)
    magnitude_prune(mlp, 0.75)
    nonzero = sum(int(np.count_nonzero(mlp[i].weight.data)) for i in (0, 2, 4))
    assert count_flops(mlp, (64,), nonzero=True) == 2 * nonzero
    assert count_flops(mlp, (64,)) == 2 * (64 * 256 + 256 * 128 + 128 * 10)     # dense kernels multiply zeros
    assert count_flops(to_sparse(mlp), (64,)) == 2 * nonzero
    with pytest.raises(ValueError, match="QuantizedModel"):
        count_flops(quantize_model(mlp), (64,))      # a container count_flops cannot see into
