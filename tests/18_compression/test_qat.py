"""Quantization-aware fine-tuning with masks, and k-means weight sharing (tinytorch.compression.qat)."""
import copy
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.cluster.vq import kmeans2

from tinytorch.compression.pipeline import compress
from tinytorch.compression.prune import apply_mask, magnitude_prune, prunable_weights, remove_pruning
from tinytorch.compression.qat import (centroid_gradients, clip_levels, fake_quantize, fake_quantize_array,
                                       fake_quantized, kmeans_codebook, quantize_aware_finetune, share_weights)
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.spatial import Conv2d
from tinytorch.core.tensor import Tensor
from tinytorch.core.training import predict


def weights_of(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.laplace(size=(rows, cols)) * 10.0 ** rng.uniform(-3, 1)).astype(np.float32)


def pruned_net(seed: int = 0) -> Sequential:
    "A small MLP with its first layer pruned by hand (weights below 0.2 in magnitude)."
    net = Sequential(Linear(6, 16, rng=seed), ReLU(), Linear(16, 2, rng=seed + 1))
    apply_mask(net[0].weight, np.abs(net[0].weight.data) > 0.2)
    return net


# ---- fake quantization and the straight-through estimator ------------------------------------------

@given(st.integers(2, 8), st.booleans(), st.integers(1, 6), st.integers(1, 9), st.integers(0, 10 ** 6))
def test_ste_gradient_is_identity(bits, per_channel, rows, cols, seed):
    w = Tensor(weights_of(rows, cols, seed), requires_grad=True)
    c = np.random.default_rng(seed + 1).normal(size=(rows, cols)).astype(np.float32)
    (fake_quantize(w, bits, per_channel) * Tensor(c)).sum().backward()
    assert np.array_equal(w.grad, c)


def test_ste_gradient_is_zero_where_clipped():
    spread = np.array([1.0] + [0.3, -0.3] * 5 + [0.0], dtype=np.float32)
    w = Tensor(spread, requires_grad=True)
    c = np.arange(1.0, 13.0, dtype=np.float32)
    (fake_quantize(w, bits=2, clip="mse") * Tensor(c)).sum().backward()
    assert w.grad[0] == 0.0, "the clipped weight gets no gradient"
    assert np.array_equal(w.grad[1:], c[1:])


def test_fake_quantize_hand_cases():
    # 2 bits: codes -1, 0, 1 with scale max|w| = 0.9; round(0.44) = 0, round(-0.56) = -1
    assert np.allclose(fake_quantize_array(np.array([0.9, 0.4, -0.5, 0.0]), bits=2), [0.9, 0.0, -0.9, 0.0])
    # 4 bits: qmax 7, scale 0.1: 0.26 -> 3 -> 0.3, -0.04 -> 0
    assert np.allclose(fake_quantize_array(np.array([0.7, 0.26, -0.04]), bits=4), [0.7, 0.3, 0.0])
    per_row = fake_quantize_array(np.array([[1.0, 0.6], [0.01, 0.004]]), bits=2, per_channel=True)
    assert np.allclose(per_row, [[1.0, 1.0], [0.01, 0.0]])
    out = fake_quantize_array(np.array([0.5, -0.5]), bits=3)
    assert out.dtype == np.float32


def test_mse_clip_hand_case():
    # One weight of 1.0 and ten of ±0.3 at 2 bits: the error of level T is (1 - T)^2 + 10 (0.3 - T)^2
    # for T in [0.3, 0.6), minimised on the grid f * 1.0 (step 0.02) at T = 0.36.
    spread = np.array([1.0] + [0.3, -0.3] * 5 + [0.0])
    assert np.isclose(clip_levels(spread, bits=2, clip="mse"), 0.36)
    assert clip_levels(spread, bits=2, clip="max") == 1.0
    assert np.allclose(fake_quantize_array(spread, bits=2, clip="mse"), [0.36] + [0.36, -0.36] * 5 + [0.0])


def one_layer(weight: np.ndarray) -> Sequential:
    net = Sequential(Linear(weight.shape[1], weight.shape[0], rng=0))
    net[0].weight.data[...] = weight
    return net


@given(st.integers(2, 8), st.booleans(), st.integers(1, 5), st.integers(1, 8), st.integers(0, 10 ** 6))
def test_max_clip_is_what_compress_stores(bits, per_channel, rows, cols, seed):
    w = weights_of(rows, cols, seed)
    stored = compress(one_layer(w), sparsity=None, bits=bits, per_channel=per_channel).decompress()
    assert np.array_equal(stored[0].weight.data, fake_quantize_array(w, bits, per_channel))


@given(st.integers(2, 8), st.booleans(), st.integers(1, 5), st.integers(1, 8), st.integers(0, 10 ** 6))
def test_mse_clipped_weights_are_stored_unchanged(bits, per_channel, rows, cols, seed):
    snapped = fake_quantize_array(weights_of(rows, cols, seed), bits, per_channel, clip="mse")
    stored = compress(one_layer(snapped), sparsity=None, bits=bits, per_channel=per_channel).decompress()
    assert np.array_equal(stored[0].weight.data, snapped)


def test_fake_quantized_conv_and_restore():
    net = Sequential(Conv2d(1, 3, 3, padding=1, rng=0), ReLU())
    x = Tensor(np.random.default_rng(0).normal(size=(2, 1, 5, 5)))
    snapped = copy.deepcopy(net)
    snapped[0].weight.data[...] = fake_quantize_array(snapped[0].weight.data, bits=3)
    with fake_quantized(net, bits=3):
        assert np.allclose(net(x).data, snapped(x).data)
    assert "forward" not in vars(net[0]), "the layer's own forward is back"
    with pytest.raises(RuntimeError):
        with fake_quantized(net, bits=3):
            raise RuntimeError("boom")
    assert "forward" not in vars(net[0]), "restored after an error too"
    with fake_quantized(net, bits=3):
        with pytest.raises(ValueError, match="already fake-quantized"):
            with fake_quantized(net, bits=4):
                pass
        assert "forward" in vars(net[0]), "the refused inner block leaves the outer one alone"


# ---- quantize_aware_finetune ------------------------------------------------------------------------

def test_masks_exactly_zero_after_qat(small_batches):
    net = pruned_net()
    pruned = ~net[0].weight.mask
    quantize_aware_finetune(net, small_batches(), bits=2, epochs=4, lr=1e-2)
    assert pruned.any() and np.all(net[0].weight.data[pruned] == 0.0)
    assert np.array_equal(net[0].weight.mask, ~pruned)


def test_zeros_without_a_mask_stay_zero(small_batches):
    net = remove_pruning(pruned_net())
    zeros = net[0].weight.data == 0
    assert net[0].weight.mask is None and zeros.any()
    quantize_aware_finetune(net, small_batches(), bits=8, epochs=3, lr=1e-2)  # 8 bits: any move would show
    assert np.all(net[0].weight.data[zeros] == 0.0)


def test_qat_changes_the_weights(small_batches):
    net = pruned_net()
    before = fake_quantize_array(net[0].weight.data, bits=4, clip="mse")
    quantize_aware_finetune(net, small_batches(), bits=4, epochs=3, lr=1e-2)
    assert not np.array_equal(net[0].weight.data, before), "the fine-tuning really trained"


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("clip", ["max", "mse"])
def test_qat_model_round_trips_through_compress(mlp, flat_loaders, bits, per_channel, clip):
    train, test = flat_loaders
    magnitude_prune(mlp, 0.9)
    quantize_aware_finetune(mlp, train, bits, epochs=1, per_channel=per_channel, clip=clip)
    # FP32 biases: only the weights are under test, so the predictions must match exactly
    stored = compress(mlp, sparsity=None, bits=bits, per_channel=per_channel, bias_bits=32).decompress()
    for (name, w), (_, s) in zip(prunable_weights(mlp), prunable_weights(stored)):
        assert np.array_equal(w.data, s.data), name
    X = next(iter(test))[0]
    assert np.array_equal(predict(stored, X), predict(mlp, X))


# ---- k-means codebooks ------------------------------------------------------------------------------

def test_kmeans_two_clear_clusters():
    values = np.array([-1.02, -0.98, -1.0, 2.0, 2.1, 1.9])
    codebook, indices = kmeans_codebook(values, bits=2)
    # Linear start -1.02, 0.02, 1.06, 2.1: the two middle centroids never get a value.
    assert indices.tolist() == [0, 0, 0, 3, 3, 3]
    assert np.allclose(codebook, [-1.0, 0.02, 1.06, 2.0])
    assert codebook.dtype == np.float32 and indices.dtype == np.uint8


def test_kmeans_linear_initialisation():
    # Values sitting exactly on the linear start are a fixed point: nothing moves.
    start = np.linspace(-0.5, 1.0, 8)
    codebook, indices = kmeans_codebook(np.repeat(start, 3), bits=3)
    assert np.allclose(codebook, start) and indices.tolist() == np.repeat(np.arange(8), 3).tolist()
    # With one iteration the empty clusters show the start: evenly spaced over [min, max].
    codebook, _ = kmeans_codebook(np.array([0.0, 0.01, 3.0]), bits=2, iterations=1)
    assert np.allclose(codebook, [0.005, 1.0, 2.0, 3.0])


def test_kmeans_tie_goes_to_the_lower_centroid():
    # Start 0, 1, 2, 3: 1.5 is exactly halfway between centroids 1 and 2 and joins 1, which moves to 1.5.
    codebook, indices = kmeans_codebook(np.array([0.0, 3.0, 1.5]), bits=2)
    assert indices.tolist() == [0, 3, 1] and codebook.tolist() == [0.0, 1.5, 2.0, 3.0]


@given(st.integers(2, 5), st.integers(1, 200), st.integers(0, 10 ** 6))
def test_kmeans_matches_scipy(bits, n, seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0.3, 0.05, n), -rng.exponential(0.2, n)])
    codebook, indices = kmeans_codebook(values, bits, iterations=100)
    start = np.linspace(values.min(), values.max(), 2 ** bits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # scipy warns about empty clusters; it keeps their centroid, as we do
        reference, _ = kmeans2(values, start, iter=100, minit="matrix", missing="warn")
    assert np.allclose(codebook, reference, rtol=1e-5, atol=1e-7)
    # Every value is assigned to its nearest centroid (brute force).
    distance = np.abs(values[:, None] - codebook[None, :].astype(np.float64))
    assert np.allclose(distance[np.arange(values.size), indices], distance.min(axis=1))


def test_kmeans_is_deterministic():
    values = np.random.default_rng(0).normal(size=500)
    a, b = kmeans_codebook(values, bits=4), kmeans_codebook(values, bits=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ---- weight sharing -----------------------------------------------------------------------------------

@given(st.integers(1, 60), st.integers(1, 16), st.integers(0, 10 ** 6))
def test_centroid_gradients_match_a_loop(n, k, seed):
    rng = np.random.default_rng(seed)
    grad, clusters = rng.normal(size=n), rng.integers(0, k, size=n)
    loop = np.zeros(k)
    for g, cluster in zip(grad, clusters):
        loop[cluster] += g
    assert np.allclose(centroid_gradients(grad, clusters, k), loop)


def test_share_weights_keeps_masks_and_assignments(small_batches):
    net = pruned_net()
    zeros = net[0].weight.data == 0
    net, books = share_weights(net, bits=2, train_data=small_batches(), epochs=3, lr=1e-2)
    assert set(books) == {"0.weight", "2.weight"}
    for (name, w) in prunable_weights(net):
        codebook, indices = books[name]
        assert codebook.shape == (4,) and codebook.dtype == np.float32
        assert np.array_equal(w.data.ravel()[np.flatnonzero(w.data)], codebook[indices])
    assert np.all(net[0].weight.data[zeros] == 0.0) and np.array_equal(net[0].weight.mask, ~zeros)


def test_centroid_step_follows_the_summed_gradient(small_batches):
    batch = small_batches()[:1]
    net = pruned_net()
    shared, books = share_weights(copy.deepcopy(net), bits=3)
    # The oracle: backprop through the shared model, then sum each cluster's gradients in a loop.
    CrossEntropyLoss()(shared(batch[0][0]), batch[0][1]).backward()
    trained, trained_books = share_weights(net, bits=3, train_data=batch, epochs=1, lr=1e-3)
    for name, w in prunable_weights(shared):
        codebook, indices = books[name]
        summed = np.zeros(8)
        for g, cluster in zip(w.grad.ravel()[np.flatnonzero(w.data)], indices):
            summed[cluster] += g
        # Adam's first step moves each centroid by lr * g / (|g| + eps): lr against its summed gradient.
        expected = codebook - 1e-3 * summed / (np.abs(summed) + 1e-8)
        assert np.allclose(trained_books[name][0], expected, rtol=0, atol=1e-6), name
        assert np.array_equal(trained_books[name][1], indices), "assignments never change"


# ---- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 9, 2.5, True, "4"])
def test_bad_bits(bits, small_batches):
    net = pruned_net()
    for call in (lambda: fake_quantize_array(np.ones(3), bits), lambda: kmeans_codebook(np.ones(3), bits),
                 lambda: quantize_aware_finetune(net, small_batches(), bits),
                 lambda: share_weights(net, bits)):
        with pytest.raises(ValueError, match="bits must be an integer in"):
            call()


def test_other_bad_input(small_batches):
    with pytest.raises(ValueError, match="clip must be one of"):
        fake_quantize_array(np.ones(3), 4, clip="percentile")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        quantize_aware_finetune(pruned_net(), small_batches(), 4, epochs=0)
    with pytest.raises(ValueError, match="empty"):
        kmeans_codebook(np.array([]), 2)
    with pytest.raises(ValueError, match="finite"):
        kmeans_codebook(np.array([1.0, np.nan]), 2)
    net = pruned_net()
    net[2].weight.data[...] = 0.0
    with pytest.raises(ValueError, match="layer '2.weight' has no nonzero weight"):
        share_weights(net, 2)
