"""The `.ttcz` file format refuses damaged and hostile files (ungraded: given code, not an exercise).

Every damage case must raise `ValueError` naming the file and the problem in words that `load_compressed`'s
docstring promises; a valid file round-trips byte for byte; random damage never raises anything else.
"""
import functools
import json
import math
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.compression import storage
from tinytorch.compression.pipeline import compress
from tinytorch.compression.storage import MAGIC, load_compressed
from tinytorch.core.activations import ReLU, Sigmoid, Softmax, Tanh
from tinytorch.core.layers import Dropout, Flatten, Linear, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d


def tiny_model():
    "Every layer type the format stores, nested, in a few hundred parameters (no training needed)."
    rng = np.random.default_rng(0)
    features = Sequential(Conv2d(1, 2, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2))  # (1, 4, 4) -> (2, 2, 2)
    return Sequential({"features": features, "flat": Flatten(), "drop": Dropout(0.1),
                       "fc": Linear(8, 6, rng=rng), "tanh": Tanh(), "head": Linear(6, 3, bias=False, rng=rng),
                       "sigmoid": Sigmoid(), "out": Softmax()})


SHAPES = {name: p.data.shape for name, p in tiny_model().named_parameters()}
FORMATS = [("delta", 8), ("delta", 3), ("csr", 8), ("bitmask", 4), ("dense", 16), ("dense", 32)]


@functools.lru_cache(maxsize=None)
def valid_file(index: str = "delta", bits: int = 8) -> bytes:
    "The bytes of a valid file; quantized files use per-channel scales and INT8 biases."
    quantized = bits <= 8
    cm = compress(tiny_model(), sparsity=0.5, bits=bits, index=index, index_bits=bits if index == "delta" else 8,
                  per_channel=quantized, bias_bits=8 if quantized else bits)
    return cm.to_bytes()


def split(data: bytes):
    "(header dict, {array name: its payload bytes}) of a valid file."
    size = int.from_bytes(data[4:8], "little")
    header = json.loads(zlib.decompress(data[8:8 + size]))
    chunks, offset = {}, 8 + size
    for key, dtype, shape in header["arrays"]:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        chunks[key], offset = data[offset:offset + n], offset + n
    return header, chunks


def forge(header, payload: bytes = b"", raw: bytes | None = None) -> bytes:
    "A file with this header (or these raw header bytes) and payload, every length written honestly."
    raw = zlib.compress(json.dumps(header).encode()) if raw is None else raw
    return MAGIC + len(raw).to_bytes(4, "little") + raw + payload


def edit(change, index="delta", bits=8):
    "A damage case: `change(header, chunks)` edits a valid file's header and arrays in place."
    def make():
        header, chunks = split(valid_file(index, bits))
        change(header, chunks)
        return forge(header, b"".join(chunks.values()))
    return make


def raw_header(raw: bytes):
    "A damage case: these bytes in place of the deflated header."
    return lambda: forge(None, raw=raw)


def header_size(data: bytes) -> int:
    return int.from_bytes(data[4:8], "little")


def first(header, group="weights"):
    "Name and fields of the first weight (or bias) entry."
    return next(iter(header[group].items()))


def array_named(header, suffix):
    "The [name, dtype, shape] row of the first array whose name ends with `suffix`."
    return next(row for row in header["arrays"] if row[0].endswith(suffix))


def set_array(chunks, header, suffix, values):
    "Overwrite an array's bytes (same length, same dtype) with `values`."
    key, dtype, shape = array_named(header, suffix)
    chunks[key] = np.resize(np.asarray(values, dtype=dtype), shape).tobytes()


def nest(depth):
    spec = {"type": "ReLU"}
    for _ in range(depth):
        spec = {"type": "Sequential", "names": ["0"], "layers": [spec]}
    return spec


def _move_bytes(header, chunks):
    "Shrink one array by one element and grow the next: the total byte count still matches."
    rows = [row for row in header["arrays"] if row[1] == "|u1"]
    rows[0][2][0] -= 1
    rows[1][2][0] += 1


def _grow_values(header, chunks):
    "One more value than the payload holds."
    array_named(header, "values")[2][0] += 1


def _drop_array(header, chunks):
    key = array_named(header, "/scale")[0]
    header["arrays"] = [row for row in header["arrays"] if row[0] != key]
    del chunks[key]


def _drop_weight(header, chunks):
    del header["weights"][first(header)[0]]


def _deep_header():
    return b"[" * 100_000 + b"]" * 100_000


BOMB_BYTES = 64 << 20  # what the bomb's header inflates to: 64 times `MAX_HEADER_BYTES`


@functools.lru_cache(maxsize=None)
def bomb() -> bytes:
    "A valid header after 64 MiB of JSON whitespace: about 64 KB deflated."
    header, chunks = split(valid_file())
    deflate = zlib.compressobj(9)
    raw = b"".join(deflate.compress(b" " * (1 << 20)) for _ in range(BOMB_BYTES >> 20))
    raw += deflate.compress(json.dumps(header).encode()) + deflate.flush()
    return forge(None, b"".join(chunks.values()), raw=raw)


F = valid_file  # short, for the table below
# (id, make the damaged bytes, the phrase `load_compressed`'s docstring promises, other words of the message)
CASES = [
    ("empty", lambda: b"", "empty file", []),
    ("cut-in-magic", lambda: F()[:2], "truncated", ["inside the magic"]),
    ("wrong-magic", lambda: b"PK\x03\x04" + F()[4:], "not a compressed tinytorch model", ["b'PK\\x03\\x04'"]),
    ("cut-in-header-length", lambda: F()[:6], "truncated", ["inside the header length"]),
    ("header-length-beyond-file", lambda: F()[:4] + (10**6).to_bytes(4, "little") + F()[8:],
     "truncated", ["header length says 1,000,000 bytes"]),
    ("cut-in-header", lambda: F()[:8 + header_size(F()) // 2], "truncated", ["header length says"]),
    ("cut-in-payload", lambda: F()[:-3], "truncated", ["payload bytes", "the file holds"]),
    ("trailing-bytes", lambda: F() + b"\0" * 5, "unexpected bytes after the payload", ["5 unexpected"]),
    ("header-not-zlib", raw_header(b"this is not deflated"), "not zlib data", []),
    ("header-zlib-incomplete", raw_header(zlib.compress(b'{"a": 1}')[:-3]), "not one complete zlib stream", []),
    ("header-zlib-then-junk", raw_header(zlib.compress(b'{"a": 1}') + b"junk"), "not one complete zlib stream", []),
    ("decompression-bomb", bomb, "inflates to more than", [f"{storage.MAX_HEADER_BYTES:,} bytes"]),
    ("header-not-json", raw_header(zlib.compress(b"{architecture: Linear}")), "not JSON", []),
    ("header-not-utf8", raw_header(zlib.compress(b"\xff\xfe{}")), "not JSON", ["UnicodeDecodeError"]),
    ("header-nested-too-deep", lambda: forge(None, raw=zlib.compress(_deep_header())), "not JSON", []),
    ("header-not-object", raw_header(zlib.compress(b"[1, 2, 3]")), "not a JSON object", ["list"]),
    ("version-unknown", edit(lambda h, c: h.update(version=2)), "unsupported format version", ["version 2"]),
    ("version-wrong-type", edit(lambda h, c: h.update(version="1")), "unsupported format version", ["'1'"]),
    ("missing-key", edit(lambda h, c: h.pop("arrays")), "missing key(s)", ["'arrays'"]),
    ("unexpected-key", edit(lambda h, c: h.update(code="import os")), "unexpected key(s)", ["'code'"]),
    ("arrays-not-a-list", edit(lambda h, c: h.update(arrays={})), "must be", ["'arrays'", "a list"]),
    ("array-row-wrong-type", edit(lambda h, c: h["arrays"].__setitem__(0, "values")), "must be",
     ["[name, dtype, shape]"]),
    ("array-listed-twice", edit(lambda h, c: h["arrays"].append(h["arrays"][0])), "listed twice", []),
    ("object-dtype", edit(lambda h, c: array_named(h, "values").__setitem__(1, "|O")), "dtype", ["'|O'", "<f4"]),
    ("unknown-dtype", edit(lambda h, c: array_named(h, "values").__setitem__(1, "<f8")), "dtype", ["'<f8'"]),
    ("not-a-dtype", edit(lambda h, c: array_named(h, "values").__setitem__(1, 42)), "dtype", ["42"]),
    ("negative-shape", edit(lambda h, c: array_named(h, "values").__setitem__(2, [-1])), "shape", ["[-1]"]),
    ("float-shape", edit(lambda h, c: array_named(h, "values").__setitem__(2, [2.5])), "shape", ["[2.5]"]),
    ("bool-shape", edit(lambda h, c: array_named(h, "values").__setitem__(2, [True])), "shape", ["[True]"]),
    ("huge-shape", edit(lambda h, c: array_named(h, "values").__setitem__(2, [2**40])), "truncated",
     ["the header says 1,0", "payload bytes"]),
    ("shape-one-too-long", edit(_grow_values), "truncated", ["payload bytes"]),
    ("shape-does-not-match-entry", edit(_move_bytes), "expected", ["|u1"]),
    ("unknown-layer-type", edit(lambda h, c: h["architecture"]["layers"][1].update(type="Transformer")),
     "unknown layer type", ["'Transformer'", "'flat'"]),
    ("layer-missing-key", edit(lambda h, c: h["architecture"]["layers"][3].pop("out")), "missing key(s)",
     ["'out'", "'fc'"]),
    ("layer-wrong-type", edit(lambda h, c: h["architecture"]["layers"][3].update({"in": "8"})), "must be",
     ["'in'", "a positive int"]),
    ("conv-kernel-wrong", edit(lambda h, c: h["architecture"]["layers"][0]["layers"][0].update(kernel=[3])),
     "must be", ["'kernel'", "two positive ints"]),
    ("dropout-nan", edit(lambda h, c: h["architecture"]["layers"][2].update(p=float("nan"))), "must be", ["'p'"]),
    ("huge-architecture", edit(lambda h, c: h["architecture"]["layers"][3].update({"in": 10**8, "out": 10**8})),
     "parameters", [f"more than {storage.MAX_PARAMETERS:,}"]),
    ("nested-too-deep", edit(lambda h, c: h["architecture"]["layers"].__setitem__(4, nest(40))), "deep",
     [f"more than {storage.MAX_DEPTH}"]),
    ("names-do-not-match-layers", edit(lambda h, c: h["architecture"]["names"].pop()), "must be", ["'names'"]),
    ("weight-missing", edit(_drop_weight), "not the architecture's", ["missing ['features.0.weight']"]),
    ("weight-and-bias", edit(lambda h, c: h["biases"].update({"fc.weight": h["weights"]["fc.weight"]})),
     "listed twice", ["as a weight and as a bias"]),
    ("entry-missing-key", edit(lambda h, c: first(h)[1].pop("count")), "missing key(s)", ["'count'"]),
    ("entry-bits-wrong-type", edit(lambda h, c: first(h)[1].update(bits="8")), "must be", ["bits", "'8'"]),
    ("entry-shape-floats", edit(lambda h, c: first(h)[1].update(shape=[float(d) for d in first(h)[1]["shape"]])),
     "not the architecture's", ["shape"]),
    ("entry-shape-wrong", edit(lambda h, c: first(h)[1].update(shape=[1, 1, 1, 1])), "not the architecture's",
     ["[1, 1, 1, 1]"]),
    ("unknown-index-format", edit(lambda h, c: first(h)[1].update(index="zip")), "unknown index format", ["'zip'"]),
    ("count-beyond-weight", edit(lambda h, c: first(h)[1].update(count=10**12)), "must be", ["count"]),
    ("count-does-not-match-arrays", edit(lambda h, c: first(h)[1].update(count=first(h)[1]["count"] - 1)),
     "expected", ["values"]),
    ("dense-count-short", edit(lambda h, c: first(h)[1].update(count=1), "dense", 32), "must be", ["dense entry"]),
    ("unexpected-array", edit(lambda h, c: array_named(h, "/scale").__setitem__(0, "fc.weight/evil")),
     "unexpected", ["'fc.weight/evil'"]),
    ("array-missing", edit(_drop_array), "missing", ["scale"]),
    ("csr-offsets-fall", edit(lambda h, c: set_array(c, h, "/indptr", [0, 9, 3]), "csr"), "CSR", ["row offsets"]),
    ("csr-column-out-of-range", edit(lambda h, c: set_array(c, h, "/indices", [10**6]), "csr"), "CSR",
     ["column index"]),
    ("bitmask-count-wrong", edit(lambda h, c: set_array(c, h, "/bitmask", [255]), "bitmask", 4), "bitmask",
     ["marks"]),
    ("deltas-beyond-weight", edit(lambda h, c: set_array(c, h, "/deltas", [255])), "beyond the weight", []),
]


@pytest.mark.parametrize("make, promise, words", [pytest.param(m, p, w, id=i) for i, m, p, w in CASES])
def test_a_damaged_file_raises_value_error_naming_file_and_problem(make, promise, words, tmp_path):
    path = tmp_path / "model.ttcz"
    path.write_bytes(make())
    with pytest.raises(ValueError) as info:
        load_compressed(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for word in (promise, *words):
        assert word in message, (word, message)


def test_the_docstring_promises_every_phrase_the_cases_check():
    missing = sorted({promise for _, _, promise, _ in CASES if f'"{promise}' not in " ".join(load_compressed.__doc__.split())})
    assert not missing, missing


@pytest.mark.parametrize("index, bits", FORMATS)
def test_save_load_save_is_byte_identical(index, bits, tmp_path):
    first_path, second_path = tmp_path / "a.ttcz", tmp_path / "b.ttcz"
    first_path.write_bytes(valid_file(index, bits))
    loaded = load_compressed(first_path)
    loaded.save(second_path)
    assert second_path.read_bytes() == first_path.read_bytes()
    expected = compress(tiny_model(), sparsity=0.5, bits=bits, index=index,
                        index_bits=bits if index == "delta" else 8, per_channel=bits <= 8,
                        bias_bits=8 if bits <= 8 else bits).decompress()
    for (name, a), (_, b) in zip(loaded.decompress().named_parameters(), expected.named_parameters()):
        assert np.array_equal(a.data, b.data), name


def test_the_header_carries_the_format_version():
    header, _ = split(valid_file())
    assert header["version"] == storage.FORMAT_VERSION == 1


def test_a_file_from_before_versions_loads_as_version_1(tmp_path):
    header, chunks = split(valid_file())
    del header["version"]
    path = tmp_path / "old.ttcz"
    path.write_bytes(forge(header, b"".join(chunks.values())))
    assert {n: p.data.shape for n, p in load_compressed(path).decompress().named_parameters()} == SHAPES


def test_a_decompression_bomb_is_refused_without_inflating_it(tmp_path):
    path = tmp_path / "bomb.ttcz"
    path.write_bytes(bomb())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inflates to more than"):
            load_compressed(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The file (about 64 KB, read and sliced) plus at most MAX_HEADER_BYTES of inflated header; the
    # bomb itself would be 64 MiB.
    assert peak < 2 * storage.MAX_HEADER_BYTES + 4 * path.stat().st_size < BOMB_BYTES // 8, peak


def damage(data: bytes, cuts: list, flips: list, extra: bytes) -> bytes:
    "Flip bits at (position, bit) pairs, then cut to the shortest length listed, then append `extra`."
    out = bytearray(data)
    for position, bit in flips:
        out[position % len(out)] ^= 1 << bit
    return bytes(out[:min(cuts, default=len(out))]) + extra


@pytest.mark.parametrize("index, bits", FORMATS)
@settings(max_examples=100, derandomize=True, database=None)  # the same examples on every run
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=3),
       cuts=st.lists(st.integers(0, 2000), max_size=1), extra=st.binary(max_size=2))
def test_random_damage_loads_a_working_model_or_raises_value_error(index, bits, flips, cuts, extra, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / f"damaged-{index}-{bits}.ttcz"
    path.write_bytes(damage(valid_file(index, bits), cuts, flips, extra))
    try:
        cm = load_compressed(path)
    except ValueError:
        return  # refused: the only other outcome allowed
    model = cm.decompress()  # a file load_compressed accepts always decompresses
    assert {name: p.data.shape for name, p in model.named_parameters()} == SHAPES
    for entry in {**cm.weights, **cm.biases}.values():
        assert list(storage.decompress_weight(entry).shape) == entry["shape"]


def _places(obj, at=()):
    "Every place in a JSON value, as the path of keys and indices that reaches it."
    yield at
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _places(value, (*at, key))


JUNK = [None, True, 0, -1, 1, 3, 8, 16, 2**63, 1.5, float("nan"), "", "csr", "Linear", [], [2, 2], {},
        {"type": "ReLU"}]


@pytest.mark.parametrize("index, bits", FORMATS)
@settings(max_examples=100, derandomize=True, database=None)
@given(choices=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(JUNK)), min_size=1, max_size=2))
def test_random_header_edits_load_a_working_model_or_raise_value_error(index, bits, choices, tmp_path_factory):
    # Byte flips rarely get past zlib's checksum; a hostile file has a valid header saying wrong things.
    header, chunks = split(valid_file(index, bits))
    for which, junk in choices:
        places = list(_places(header))[1:]
        *parents, last = places[which % len(places)]
        parent = functools.reduce(lambda obj, key: obj[key], parents, header)
        parent[last] = json.loads(json.dumps(junk))  # a fresh copy
    path = tmp_path_factory.getbasetemp() / f"edited-{index}-{bits}.ttcz"
    path.write_bytes(forge(header, b"".join(chunks.values())))
    try:
        cm = load_compressed(path)
    except ValueError:
        return
    assert {name: p.data.shape for name, p in cm.decompress().named_parameters()} == SHAPES
