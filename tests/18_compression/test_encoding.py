"""Sparse encodings and the compressed file (tasks delta-encode, compress-weight; CSR and bit packing are given)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinytorch.compression.pipeline import compress, save_dense
from tinytorch.compression.encoding import (INDEX_FORMATS, compress_weight, decode_csr, decode_delta, encode_csr,
                                            encode_delta, pack_bits, unpack_bits)
from tinytorch.compression.prune import prunable_weights
from tinytorch.compression.quantize import compute_qparams, dequantize, quantize
from tinytorch.compression.storage import decompress_weight, load_compressed
from tinytorch.core.training import evaluate
from compression_oracles import oracle_prune, zero_fraction


def sparse_arrays(max_dims=4):
    "Float32 arrays with many exact zeros (and some empty rows)."
    return hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=max_dims, max_side=6),
                      elements=st.sampled_from([0.0, 0.0, 0.0, 1.5, -2.0, 0.25]))


def test_csr_hand_computed():
    data, indices, indptr = encode_csr(np.array([[0, 5.0, 0], [0, 0, 0], [7.0, 0, 8.0], [0, 0, 0]]))
    assert data.tolist() == [5.0, 7.0, 8.0]
    assert indices.tolist() == [1, 0, 2] and indices.dtype == np.int32
    assert indptr.tolist() == [0, 1, 1, 3, 3] and indptr.dtype == np.int32
    d, i, p = encode_csr(np.zeros((2, 3), dtype=np.float32))
    assert d.size == 0 and i.size == 0 and p.tolist() == [0, 0, 0]
    assert encode_csr(np.ones((2, 3), dtype=np.float32))[0].dtype == np.float32
    with pytest.raises(ValueError, match="2 dimensions"):
        encode_csr(np.ones(3))


@given(sparse_arrays())
def test_csr_matches_scipy(w):
    sparse = pytest.importorskip("scipy.sparse")
    rows = w.reshape(w.shape[0], -1)
    reference = sparse.csr_matrix(rows)
    reference.eliminate_zeros()
    data, indices, indptr = encode_csr(w)
    assert np.array_equal(indptr, reference.indptr) and np.array_equal(indices, reference.indices)
    assert np.array_equal(data, reference.data)


@given(sparse_arrays())
def test_csr_round_trip(w):
    data, indices, indptr = encode_csr(w)
    assert len(data) == np.count_nonzero(w) and len(indptr) == w.shape[0] + 1
    assert np.array_equal(decode_csr(data, indices, indptr, w.shape), w)


@pytest.mark.task("delta-encode")
def test_delta_hand_computed():
    assert encode_delta([1, 2, 9], bits=2).tolist() == [1, 0, 3, 2]
    assert encode_delta([0, 1, 2], bits=1).tolist() == [0, 0, 0]
    assert encode_delta([4], bits=1).tolist() == [1, 1, 0]          # fillers at 1 and 3, then the entry at 4
    assert encode_delta([300], bits=8).tolist() == [255, 44]
    assert encode_delta([511, 512], bits=8).tolist() == [255, 255, 0]
    out = encode_delta([], bits=4)
    assert out.size == 0
    assert encode_delta([3], bits=8).dtype == np.uint8 and encode_delta([3], bits=12).dtype == np.uint16


def test_given_checks_reject_bad_delta_input():
    for bad in (0, 17, 2.0):
        with pytest.raises(ValueError, match="bits"):
            encode_delta([1], bits=bad)
    with pytest.raises(ValueError, match="increasing"):
        encode_delta([3, 3], bits=4)


@pytest.mark.task("delta-encode")
@given(st.lists(st.integers(0, 5000), max_size=60, unique=True).map(sorted), st.integers(1, 16))
def test_delta_round_trip_and_filler_count(positions, bits):
    deltas = encode_delta(positions, bits)
    assert deltas.max(initial=0) < 2 ** bits
    decoded = decode_delta(deltas)
    assert set(positions) <= set(decoded.tolist())
    fillers = sorted(set(decoded.tolist()) - set(positions))
    assert len(fillers) == len(decoded) - len(positions)       # fillers land on positions with no entry
    gaps = np.diff(np.asarray([-1] + positions)) - 1
    assert len(deltas) == len(positions) + int(np.sum(gaps // 2 ** bits))


W_SMALL = np.array([[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.5]])


@pytest.mark.task("compress-weight")
def test_compress_weight_delta_entry_hand_computed():
    entry = compress_weight(W_SMALL, bits=8, index="delta", index_bits=8)
    assert entry["shape"] == [2, 4] and entry["count"] == 3 and entry["index"] == "delta"
    assert entry["bits"] == 8 and entry["index_bits"] == 8
    assert entry["arrays"]["deltas"].tolist() == [1, 1, 3]
    assert entry["arrays"]["values"].tolist() == [255, 64, 160]   # codes 127, -64, 32 shifted by 128
    assert entry["arrays"]["scale"].tolist() == [np.float32(2.0 / 127)]


@pytest.mark.task("compress-weight")
def test_compress_weight_stores_the_shape_as_a_list():
    assert compress_weight(np.zeros((2, 1, 3)), bits=32, index="dense")["shape"] == [2, 1, 3]


@pytest.mark.task("compress-weight")
def test_compress_weight_csr_positions_and_float_values():
    entry = compress_weight(W_SMALL, bits=32, index="csr")
    assert entry["arrays"]["indices"].tolist() == [1, 3, 3] and entry["arrays"]["indptr"].tolist() == [0, 2, 3]
    assert entry["arrays"]["values"].dtype == np.float32 and entry["arrays"]["values"].tolist() == [2.0, -1.0, 0.5]


@pytest.mark.task("compress-weight")
def test_compress_weight_dense_stores_every_position():
    entry = compress_weight(W_SMALL, bits=8, index="dense")
    assert entry["count"] == 8 and entry["arrays"]["values"].size == 8 and set(entry["arrays"]) == {"values", "scale"}


@pytest.mark.task("compress-weight")
def test_compress_weight_per_channel_scales():
    entry = compress_weight(W_SMALL, bits=8, index="delta", per_channel=True)
    assert np.allclose(entry["arrays"]["scale"], [2.0 / 127, 0.5 / 127])


@pytest.mark.task("compress-weight")
def test_compress_weight_stores_the_fillers_values():
    w = np.array([[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.5]])
    entry = compress_weight(w, bits=8, index="delta", index_bits=1)     # the lesson's worked example
    assert entry["count"] == 4 and unpack_bits(entry["arrays"]["deltas"], 1, 4).tolist() == [1, 1, 1, 1]
    assert entry["arrays"]["values"].tolist() == [255, 64, 128, 160]    # the filler at position 5 stores code 0
    entry = compress_weight(w, bits=32, index="delta", index_bits=1)
    assert entry["arrays"]["values"].tolist() == [2.0, -1.0, 0.0, 0.5]


def test_given_checks_reject_bad_compress_weight_input():
    w = np.array([[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.5]])
    with pytest.raises(ValueError, match="index"):
        compress_weight(w, index="coo")
    with pytest.raises(ValueError, match="bits"):
        compress_weight(w, bits=12)


@pytest.mark.task("compress-weight")
@given(sparse_arrays(), st.sampled_from(INDEX_FORMATS), st.sampled_from([2, 4, 5, 8, 16, 32]),
       st.integers(2, 8), st.booleans())
def test_compress_weight_round_trip_and_byte_counts(w, index, bits, index_bits, per_channel):
    entry = compress_weight(w, bits=bits, index=index, index_bits=index_bits, per_channel=per_channel)
    w_hat = decompress_weight(entry)
    assert w_hat.shape == w.shape and w_hat.dtype == np.float32
    if bits in (16, 32):
        assert np.array_equal(w_hat, w)                          # these values are exact in float16
    else:
        assert np.all(w_hat[w == 0] == 0)
        bound = np.abs(w).max(axis=tuple(range(1, w.ndim)), keepdims=True) if per_channel else np.abs(w).max()
        assert np.all(np.abs(w_hat - w) <= bound / (2 ** (bits - 1) - 1) / 2 * 1.0001)
    nnz = np.count_nonzero(w)
    expected_count = {"dense": w.size, "csr": nnz, "bitmask": nnz}.get(index, None)
    if expected_count is not None:
        assert entry["count"] == expected_count
    values = entry["arrays"]["values"]
    width = {32: 4, 16: 2}.get(bits)
    assert values.nbytes == (entry["count"] * width if width else -(-entry["count"] * bits // 8))


def quantized_copy(model, bits: int = 8):
    "The pruned model with every prunable weight rounded to its symmetric `bits`-bit grid, in memory (no compress_weight)."
    for _, w in prunable_weights(model):
        params = compute_qparams(w.data, bits=bits, symmetric=True)
        w.data[...] = dequantize(quantize(w.data, params), params)
    return model


@pytest.mark.task("compress-weight")
@pytest.mark.parametrize("index_bits", [2, 5, 8])
def test_loaded_file_computes_the_in_memory_pruned_quantized_model(mlp, flat_loaders, tmp_path, index_bits):
    _, test = flat_loaders
    oracle_prune(mlp, 0.9)
    cm = compress(mlp, sparsity=None, bits=8, index="delta", index_bits=index_bits, bias_bits=32)
    cm.save(tmp_path / "m.ttcz")
    loaded = load_compressed(tmp_path / "m.ttcz").decompress()
    expected = quantized_copy(mlp)
    for (name, a), (_, b) in zip(prunable_weights(loaded), prunable_weights(expected)):
        assert np.allclose(a.data, b.data, atol=1e-6), f"{name} loads back different from the pruned, quantized weight"
    assert abs(evaluate(loaded, test) - evaluate(expected, test)) < 0.005


def test_compressed_file_size_and_damaged_files(mlp, tmp_path):
    cm = compress(mlp, sparsity=0.9, bits=8, index="delta", index_bits=5, bias_bits=32)
    size = cm.save(tmp_path / "m.ttcz")
    assert size == (tmp_path / "m.ttcz").stat().st_size == sum(cm.breakdown().values())
    assert zero_fraction(load_compressed(tmp_path / "m.ttcz").decompress()) == pytest.approx(0.9, abs=2e-3)
    assert mlp[0].weight.mask is None and zero_fraction(mlp) == 0.0, "compress works on a copy"
    for bad in (b"NOPE" + bytes(10), (tmp_path / "m.ttcz").read_bytes()[:-3]):
        (tmp_path / "bad.ttcz").write_bytes(bad)
        with pytest.raises(ValueError):
            load_compressed(tmp_path / "bad.ttcz")


@pytest.mark.task("compress-weight")
def test_cnn_file_round_trip(cnn, image_loaders, tmp_path):
    _, test = image_loaders
    oracle_prune(cnn, 0.5)
    cm = compress(cnn, sparsity=None, bits=8, index="bitmask", per_channel=True, bias_bits=16)
    cm.save(tmp_path / "c.ttcz")
    model = load_compressed(tmp_path / "c.ttcz").decompress()
    assert abs(evaluate(model, test) - evaluate(cnn, test)) < 0.05
    reference = cm.decompress()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(a.data, b.data)


@pytest.mark.task("compress-weight")
def test_95_percent_four_bit_file_is_40x_smaller(mlp, tmp_path):
    dense = save_dense(mlp, tmp_path / "dense.ttcz")
    assert dense > 50_826 * 4
    oracle_prune(mlp, 0.95)
    small = compress(mlp, sparsity=None, bits=4, index="delta", index_bits=6, bias_bits=8).save(tmp_path / "small.ttcz")
    assert dense / small >= 40, (dense, small)


def test_pack_bits_round_trip():
    rng = np.random.default_rng(0)
    for bits in range(1, 17):
        values = rng.integers(0, 2 ** bits, size=37)
        packed = pack_bits(values, bits)
        assert packed.nbytes == -(-37 * bits // 8)
        assert np.array_equal(unpack_bits(packed, bits, 37), values)
