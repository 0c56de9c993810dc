"""Version 2 of the `.ttcz` file (ungraded: given code): the compact binary header, Huffman-coded streams,
N:M positions and weight-sharing codebooks, each stored exactly and counted by `breakdown()`.

The damage cases of version 2 files are in test_file_format.py."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.compression import storage
from tinytorch.compression.entropy import coded_nbytes, encode_lengths, huffman_lengths
from tinytorch.compression.nm import nm_nbytes, nm_prune
from tinytorch.compression.pipeline import compress
from tinytorch.compression.prune import magnitude_prune
from tinytorch.compression.storage import load_compressed, unpack_bits
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.models import digits_cnn, digits_mlp

def load_compressed_bytes(data: bytes):
    "The model `load_compressed` reads from a file holding `data`."
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f.ttcz").write_bytes(data)
        return load_compressed(Path(tmp) / "f.ttcz").decompress()


SETTINGS = dict(sparsity=0.95, bits=4, index="delta", index_bits=6, bias_bits=8, coding="fixed")   # the lesson's best file, fixed-width codes


def weights_of(model) -> dict:
    return {name: p.data for name, p in model.named_parameters()}


def same_weights(a, b) -> bool:
    wa, wb = weights_of(a), weights_of(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def snap(model, name: str, book: np.ndarray) -> None:
    "Give the nonzeros of weight `name` values of `book` (the nearest one): a brute-force stand-in for weight sharing."
    w = weights_of(model)[name]
    live = w != 0
    w[live] = book[np.abs(w[live][:, None] - book).argmin(-1)]


@pytest.mark.parametrize("make, version_1, limit", [(digits_mlp, 359, 80), (digits_cnn, 440, 100)],
                         ids=["mlp", "cnn"])
def test_the_binary_header_is_a_few_dozen_bytes(make, version_1, limit):
    cm = compress(make(seed=0), **SETTINGS)
    assert cm.breakdown()["header"] < limit
    cm.version = 1
    assert cm.breakdown()["header"] == version_1        # the JSON header measured before version 2


@pytest.mark.parametrize("options", [dict(), dict(coding="huffman"), dict(index="csr"), dict(index="bitmask"),
                                     dict(per_channel=True, coding="huffman"), dict(bits=32, bias_bits=16)],
                         ids=["fixed", "huffman", "csr", "bitmask", "per-channel", "floats"])
def test_breakdown_sums_to_the_file_size(options, tmp_path):
    cm = compress(digits_mlp(seed=0), **{**SETTINGS, **options})
    size = cm.save(tmp_path / "m.ttcz")
    assert sum(cm.breakdown().values()) == size == (tmp_path / "m.ttcz").stat().st_size


def test_huffman_coding_is_exact_and_never_larger_on_the_trained_mlp(mlp, tmp_path):
    magnitude_prune(mlp, 0.95)
    fixed = compress(mlp, **{**SETTINGS, "sparsity": None})
    coded = compress(mlp, **{**SETTINGS, "sparsity": None, "coding": "huffman"})
    coded.save(tmp_path / "h.ttcz")
    assert same_weights(load_compressed(tmp_path / "h.ttcz").decompress(), fixed.decompress())
    a, b = fixed.breakdown(), coded.breakdown()
    assert b["header"] == a["header"] and b["scales"] == a["scales"]
    assert b["values"] < a["values"] and b["indices"] < a["indices"]   # skewed codes and short gaps
    assert coded.nbytes < 0.9 * fixed.nbytes


def test_a_huffman_stream_costs_its_table_its_codes_and_two_size_varints():
    cm = compress(digits_mlp(seed=0), **{**SETTINGS, "coding": "huffman"})
    entry = cm.weights["0.weight"]
    fields, chunks = storage._entry_layout(entry, "huffman")
    assert fields[0] & storage.CODED_POSITIONS
    deltas = unpack_bits(entry["arrays"]["deltas"], 6, entry["count"])
    table = encode_lengths(huffman_lengths(np.bincount(deltas))).size
    coded = coded_nbytes(deltas)           # entropy.py's own count: codes + lengths table
    sizes = len(storage._varint(table)) + len(storage._varint(coded - table))
    assert len(dict(chunks)["indices"]) == sizes + coded


@settings(max_examples=15, derandomize=True, database=None)
@given(n=st.integers(1, 40), bits=st.sampled_from([2, 4, 8]), seed=st.integers(0, 10**6))
def test_each_stream_is_the_smaller_of_fixed_and_huffman(n, bits, seed):
    rng = np.random.default_rng(seed)
    model = Sequential(Linear(n, 3, rng=rng), ReLU(), Linear(3, 2, rng=rng))
    fixed = compress(model, sparsity=0.5, bits=bits, index_bits=3, bias_bits=8, coding="fixed")
    coded = compress(model, sparsity=0.5, bits=bits, index_bits=3, bias_bits=8, coding="huffman")
    for name in fixed.weights:
        _, a = storage._entry_layout(fixed.weights[name], "fixed")
        _, b = storage._entry_layout(coded.weights[name], "huffman")
        assert all(len(y) <= len(x) for (_, x), (_, y) in zip(a, b))
    assert coded.nbytes <= fixed.nbytes
    assert same_weights(load_compressed_bytes(coded.to_bytes()), fixed.decompress())


def test_a_tiny_layer_keeps_the_fixed_width():
    cm = compress(Sequential(Linear(4, 2, rng=0)), sparsity=0.5, bits=4, coding="huffman")
    fields, _ = storage._entry_layout(cm.weights["0.weight"], "huffman")
    assert not fields[0] & (storage.CODED_VALUES | storage.CODED_POSITIONS)   # a table costs more than 4 codes
    assert cm.coding == "huffman" and cm.to_bytes() == compress(Sequential(Linear(4, 2, rng=0)), sparsity=0.5,
                                                               bits=4).to_bytes()


@pytest.mark.parametrize("bits", [4, 32])
def test_nm_sparse_weights_store_log2_m_bit_positions(bits, tmp_path):
    model = nm_prune(digits_mlp(seed=0), 2, 4)     # 64, 256 and 128 inputs: every layer tiles into groups of 4
    plain = compress(model, bits=bits, index_bits=6, bias_bits=8)
    cm = compress(model, bits=bits, index_bits=6, bias_bits=8, nm=(2, 4))
    cm.save(tmp_path / "nm.ttcz")
    assert all(entry["index"] == "nm" for entry in cm.weights.values())
    assert same_weights(load_compressed(tmp_path / "nm.ttcz").decompress(), plain.decompress())
    positions = sum(nm_nbytes(e["shape"], 2, 4)["positions"] for e in cm.weights.values())
    assert cm.breakdown()["indices"] == positions == sum(e["count"] for e in cm.weights.values()) * 2 // 8


def test_weights_that_are_not_nm_sparse_fall_back_to_the_given_index():
    model = nm_prune(Sequential(Linear(8, 6, rng=0), ReLU(), Linear(6, 2, rng=0)), 2, 4, layers=["0"])
    cm = compress(model, bits=8, nm=(2, 4), index="bitmask")
    assert cm.weights["0.weight"]["index"] == "nm"        # 2:4 sparse
    assert cm.weights["2.weight"]["index"] == "bitmask"   # 6 inputs: groups of 4 do not tile its rows
    dense = compress(Sequential(Linear(8, 6, rng=0)), bits=8, nm=(2, 4))
    assert dense.weights["0.weight"]["index"] == "delta"  # tiles, but dense: not 2:4 sparse


@pytest.mark.parametrize("coding", ["fixed", "huffman"])
def test_a_codebook_layer_decompresses_to_codebook_values_exactly(coding, tmp_path):
    model = digits_mlp(seed=0)
    magnitude_prune(model, 0.9, scope="layer")
    book = np.linspace(-0.3, 0.3, 16, dtype=np.float32)          # no zero: fillers need one appended
    snap(model, "2.weight", book)
    cm = compress(model, bits=4, index_bits=4, bias_bits=8, coding=coding, codebooks={"2.weight": book})
    cm.save(tmp_path / "cb.ttcz")
    got = weights_of(load_compressed(tmp_path / "cb.ttcz").decompress())["2.weight"]
    assert np.array_equal(got, weights_of(model)["2.weight"])
    assert np.isin(got[got != 0], book).all()
    stored = cm.weights["2.weight"]["arrays"]["codebook"]
    assert stored.size == 17 and stored[-1] == 0 and cm.weights["2.weight"]["bits"] == 5
    plain = compress(model, bits=4, index_bits=4, bias_bits=8, coding=coding)
    assert cm.breakdown()["scales"] == plain.breakdown()["scales"] - 4 + 17 * 4     # a codebook for a scale


def test_share_weights_codebooks_are_accepted_as_they_come(tmp_path):
    qat = pytest.importorskip("tinytorch.compression.qat")
    model = digits_mlp(seed=0)
    magnitude_prune(model, 0.9, scope="layer")
    model, codebooks = qat.share_weights(model, bits=3)
    cm = compress(model, bits=4, bias_bits=8, codebooks=codebooks, coding="huffman")
    cm.save(tmp_path / "s.ttcz")
    loaded = weights_of(load_compressed(tmp_path / "s.ttcz").decompress())
    for name in codebooks:                       # the biases are INT8: only the shared weights are exact
        assert np.array_equal(loaded[name], weights_of(model)[name]), name


def test_a_codebook_with_zero_needs_no_extra_centroid():
    model = Sequential(Linear(16, 2, rng=0))
    book = np.array([-0.5, 0.0, 0.5, 1.0], dtype=np.float32)
    snap(model, "0.weight", book)
    cm = compress(model, bits=8, index="dense", codebooks={"0.weight": book})
    assert cm.weights["0.weight"]["arrays"]["codebook"].tolist() == book.tolist() and cm.weights["0.weight"]["bits"] == 2
    assert np.array_equal(cm.decompress()[0].weight.data, model[0].weight.data)


@pytest.mark.parametrize("kwargs, message", [
    (dict(coding="zip"), "coding must be one of"),
    (dict(nm=(3, 2)), "nm must be None or a pair"),
    (dict(nm=4), "nm must be None or a pair"),
    (dict(codebooks={"9.weight": np.zeros(4)}), "no prunable weight named"),
    (dict(codebooks={"0.weight": np.zeros((2, 2))}), "must be a 1-d array"),
    (dict(codebooks={"0.weight": np.array([np.nan, 1.0])}), "must be a 1-d array"),
    (dict(codebooks={"0.weight": np.array([0.25, 0.5])}), "not in its codebook"),
])
def test_bad_arguments_are_refused_with_the_documented_words(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress(Sequential(Linear(4, 2, rng=0)), **kwargs)
    assert message in " ".join(compress.__doc__.split())


def test_version_1_stores_only_what_it_could():
    cm = compress(nm_prune(Sequential(Linear(8, 2, rng=0)), 2, 4), nm=(2, 4))
    cm.version = 1
    with pytest.raises(ValueError, match="version 1"):
        cm.to_bytes()
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        storage.CompressedModel(cm.architecture, cm.weights, cm.biases, version=3)
