"""The `.ttcz` file format refuses damaged and hostile files (ungraded: given code, not an exercise).

Every damage case, of version 1 files (JSON header) and of version 2 files (binary header), must raise
`ValueError` naming the file and the problem in words that `load_compressed`'s docstring promises; a valid
file round-trips byte for byte; random damage never raises anything else.
"""
import base64
import copy
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
from tinytorch.compression.entropy import encode_lengths
from tinytorch.compression.nm import nm_prune
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


def tiny_compressed(index: str = "delta", bits: int = 8, **options):
    "The tiny model compressed; quantized files use per-channel scales and INT8 biases, fixed-width codes unless told."
    quantized = bits <= 8
    options = {"coding": "fixed", **options}   # version 1 files (many tests write them) hold fixed-width codes only
    return compress(tiny_model(), sparsity=0.5, bits=bits, index=index, index_bits=bits if index == "delta" else 8,
                    per_channel=quantized, bias_bits=8 if quantized else bits, **options)


@functools.lru_cache(maxsize=None)
def valid_file(index: str = "delta", bits: int = 8) -> bytes:
    "The bytes of a valid version 1 file (JSON header): the cases below edit its JSON."
    cm = tiny_compressed(index, bits)
    cm.version = 1
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
@pytest.mark.parametrize("version", [1, 2])
def test_save_load_save_is_byte_identical(index, bits, version, tmp_path):
    first_path, second_path = tmp_path / "a.ttcz", tmp_path / "b.ttcz"
    first_path.write_bytes(valid_file(index, bits) if version == 1 else valid_v2_file(index, bits))
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
    assert header["version"] == 1
    assert valid_v2_file()[8] == storage.FORMAT_VERSION == 2          # the first byte of the binary header
    assert tiny_compressed().to_bytes()[8] == 2, "save writes version 2 by default"


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


# --- version 2: the binary header ----------------------------------------------------------------

def _snap(model, name, book):
    "Give weight `name` of `model` only values from `book` (the nearest one), as weight sharing does."
    w = dict(model.named_parameters())[name].data
    w[...] = book[np.abs(w[..., None] - book).argmin(-1)]


SHARED_BOOK = np.array([-0.6, -0.3, 0.3, 0.6, 0.9], dtype=np.float32)   # no zero: compress appends one


def huffman_model():
    "Big enough for Huffman to win: normal weights (bunched 4-bit codes), 50% sparse (short gaps)."
    rng = np.random.default_rng(1)
    model = Sequential(Linear(32, 16, rng=rng), ReLU(), Linear(16, 4, rng=rng))
    model[0].weight.data[...] = rng.normal(0, 0.2, size=(16, 32)).astype(np.float32)
    return model


@functools.lru_cache(maxsize=None)
def v2_model(variant: str):
    "A CompressedModel of each kind a version 2 file holds."
    if variant in ("shared", "shared-fixed"):   # 2:4 positions on 'fc', a codebook on 'head', Huffman or not
        model = tiny_model()
        nm_prune(model, 2, 4, layers=["fc"])
        _snap(model, "head.weight", SHARED_BOOK)
        return compress(model, sparsity=0.5, bits=4, index_bits=3, per_channel=True, bias_bits=8, nm=(2, 4),
                        codebooks={"head.weight": SHARED_BOOK}, coding="huffman" if variant == "shared" else "fixed")
    if variant == "coded":
        return compress(huffman_model(), sparsity=0.5, bits=4, index_bits=8, bias_bits=8, coding="huffman")
    index, bits = variant.split("-")
    return tiny_compressed(index, int(bits))


def valid_v2_file(index: str = "delta", bits: int = 8) -> bytes:
    return v2_model(f"{index}-{bits}").to_bytes()


def layout(variant: str) -> dict:
    "The parts of a version 2 file, to edit: version, architecture bytes, fields and chunks per parameter."
    cm = v2_model(variant)
    entries = {**cm.weights, **cm.biases}
    parts = {"version": 2, "arch": storage._architecture_bytes(cm.architecture), "extra": b"",
             "fields": {}, "chunks": {}}
    for name in storage._parameter_shapes(cm.architecture):
        fields, chunks = storage._entry_layout(entries[name], cm.coding)
        parts["fields"][name], parts["chunks"][name] = fields, [data for _, data in chunks]
    return parts


def assemble(parts: dict) -> bytes:
    "A version 2 file from its parts; a field may be an int (written as a varint) or raw bytes."
    fields = b"".join(f if isinstance(f, bytes) else storage._varint(f)
                      for entry in parts["fields"].values() for f in entry)
    header = bytes([parts["version"]]) + parts["arch"] + fields + parts["extra"]
    payload = b"".join(chunk for chunks in parts["chunks"].values() for chunk in chunks)
    data = MAGIC + len(header).to_bytes(4, "little") + header + payload
    return data + zlib.crc32(data).to_bytes(4, "little")


def v2_edit(change, variant="delta-8"):
    "A damage case: `change(parts)` edits the parts of a valid version 2 file in place."
    def make():
        parts = layout(variant)
        change(parts)
        return assemble(parts)
    return make


def v2_arch(change, variant="delta-8"):
    "A damage case: `change(spec)` edits the architecture, which is written back in version 2's encoding."
    def edit(parts):
        spec = copy.deepcopy(v2_model(variant).architecture)
        change(spec)
        parts["arch"] = storage._architecture_bytes(spec)
    return v2_edit(edit, variant)


def set_field(name, position, value, variant="delta-8"):
    return v2_edit(lambda parts: parts["fields"][name].__setitem__(position, value), variant)


def set_chunk(name, position, make_bytes, variant="delta-8"):
    "Replace chunk `position` of entry `name` by `make_bytes(old chunk)`."
    def edit(parts):
        chunks = parts["chunks"][name]
        chunks[position] = make_bytes(chunks[position])
    return v2_edit(edit, variant)


def unframe(stream: bytes) -> tuple[bytes, bytes]:
    "(lengths table, data) of a Huffman-coded stream: two varints, then the two parts."
    sizes, at = [], 0
    for _ in range(2):
        value, shift = 0, 0
        while True:
            byte = stream[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        sizes.append(value)
    return stream[at:at + sizes[0]], stream[at + sizes[0]:at + sizes[0] + sizes[1]]


def frame(table: bytes, data: bytes) -> bytes:
    return storage._varint(len(table)) + storage._varint(len(data)) + table + data


def reframe(change_table=lambda t: t, change_data=lambda d: d):
    "A change of a Huffman-coded stream's table and data; the sizes in front are written honestly."
    def make(stream):
        table, data = unframe(stream)
        return frame(change_table(table), change_data(data))
    return make


def as_nm(n, m):
    "Turn 'fc.weight' (rows of 8 inputs) into an N:M entry with these n and m."
    def edit(parts):
        flags, bits, *_ = parts["fields"]["fc.weight"]
        parts["fields"]["fc.weight"] = [(flags & ~7) | 4, bits, n, m]
    return v2_edit(edit)


W0, FC, HEAD, B0 = "features.0.weight", "fc.weight", "head.weight", "features.0.bias"
NAMES_FLAG = 2   # in the architecture's bytes: Sequential (0), 8 layers, then this byte: named (1) or numbered (0)
V2_CASES = [
    ("v2-version-unknown", v2_edit(lambda p: p.update(version=3)), "unsupported format version", ["version 3"]),
    ("v2-version-zero", v2_edit(lambda p: p.update(version=0)), "unsupported format version", ["version 0"]),
    ("v2-checksum-wrong", lambda: set_chunk(W0, 0, lambda c: bytes([c[0] ^ 1]) + c[1:])()[:-4] + valid_v2_file()[-4:],
     "checksum mismatch", ["CRC-32"]),   # a bit of a scale flipped: still a valid structure
    ("v2-checksum-cut", lambda: valid_v2_file()[:8 + header_size(valid_v2_file()) + 2], "truncated", ["checksum"]),
    ("v2-trailing-bytes", lambda: valid_v2_file() + b"\0" * 5, "unexpected bytes after the payload", ["5 unexpected"]),
    ("v2-payload-cut", lambda: valid_v2_file()[:-3], "truncated", ["inside the payload"]),
    ("v2-header-trailing", v2_edit(lambda p: p.update(extra=b"\0")), "unexpected bytes after its last field", []),
    ("v2-header-cut-in-varint", v2_edit(lambda p: p["fields"]["head.weight"].__setitem__(-1, b"\x80")), "truncated",
     ["cut short"]),
    ("v2-varint-redundant-zero", set_field(W0, -1, b"\x85\x00"), "bad varint", ["redundant zero byte"]),
    ("v2-varint-too-long", set_field(W0, -1, b"\xff" * 9 + b"\x01"), "bad varint", ["longer than 9 bytes"]),
    ("v2-count-huge", set_field(W0, -1, 2**40), "must be", ["count", "1,099,511,627,776"]),
    ("v2-count-beyond-weight", set_field(W0, -1, 19), "must be", ["count", "[0, 18]"]),
    ("v2-count-short", set_field(W0, -1, 1), "unexpected bytes after the payload", []),
    ("v2-unknown-layer-type", v2_edit(lambda p: p.update(arch=b"\x63")), "unknown layer type", ["code 99"]),
    ("v2-layers-claimed", v2_edit(lambda p: p.update(arch=b"\x00" + storage._varint(10**6))), "claims",
     ["1,000,000 layers"]),
    ("v2-name-not-utf8", v2_edit(lambda p: p.update(arch=b"\x00\x01\x01\x01\xff\x07")), "not UTF-8", []),
    ("v2-names-flag-wrong", v2_edit(lambda p: p.update(arch=p["arch"][:NAMES_FLAG] + b"\x02" + p["arch"][NAMES_FLAG + 1:])), "must be",
     ["0 or 1, got 2"]),
    ("v2-bias-flag-wrong", v2_arch(lambda s: s["layers"][3].update(bias=2)), "must be", ["'bias'", "0 or 1"]),
    ("v2-layer-setting-zero", v2_arch(lambda s: s["layers"][3].update({"in": 0})), "must be", ["'in'", "positive"]),
    ("v2-conv-kernel-zero", v2_arch(lambda s: s["layers"][0]["layers"][0].update(kernel=[0, 3])), "must be",
     ["'kernel'"]),
    ("v2-dropout-nan", v2_arch(lambda s: s["layers"][2].update(p=float("nan"))), "must be", ["'p'"]),
    ("v2-huge-architecture", v2_arch(lambda s: s["layers"][3].update({"in": 10**8, "out": 10**8})), "parameters",
     [f"more than {storage.MAX_PARAMETERS:,}"]),
    ("v2-nested-too-deep", v2_arch(lambda s: s["layers"].__setitem__(4, nest(40))), "deep",
     [f"more than {storage.MAX_DEPTH}"]),
    ("v2-names-repeated", v2_arch(lambda s: s["names"].__setitem__(1, "features")), "must be", ["'names'"]),
    ("v2-unknown-index-format", set_field(W0, 0, 7), "unknown flags", ["7"]),
    ("v2-unknown-flag-bit", set_field(W0, 0, 128 | 3), "unknown flags", ["131"]),
    ("v2-bits-nine", set_field(W0, 1, 9), "must be", ["bits", "got 9"]),
    ("v2-bits-one", set_field(W0, 1, 1), "must be", ["bits", "got 1"]),
    ("v2-index-bits-zero", set_field(W0, 2, 0), "must be", ["index_bits", "got 0"]),
    ("v2-index-bits-17", set_field(W0, 2, 17), "must be", ["index_bits", "got 17"]),
    ("v2-per-channel-floats", set_field(W0, 0, storage.PER_CHANNEL, "dense-32"), "need affine codes", []),
    ("v2-huffman-floats", set_field(W0, 0, storage.CODED_VALUES, "dense-32"), "cannot be Huffman-coded",
     ["32-bit floats"]),
    ("v2-huffman-csr-positions", set_field(W0, 0, 1 | storage.CODED_POSITIONS, "csr-8"), "cannot be Huffman-coded",
     ["csr positions"]),
    ("v2-codebook-empty", set_field(HEAD, 1, 0, "shared"), "codebook must hold", ["got 0"]),
    ("v2-codebook-too-big", set_field(HEAD, 1, 300, "shared"), "codebook must hold", ["got 300"]),
    ("v2-codebook-index-outside", set_chunk(HEAD, 1, lambda c: b"\xff" * len(c), "shared-fixed"), "codebook index",
     ["outside its codebook"]),
    ("v2-nm-n-zero", as_nm(0, 4), "N:M needs", ["n=0"]),
    ("v2-nm-n-above-m", as_nm(3, 2), "N:M needs", ["n=3, m=2"]),
    ("v2-nm-m-one", as_nm(1, 1), "N:M needs", ["m=1"]),
    ("v2-nm-m-not-dividing", as_nm(1, 3), "N:M needs", ["m=3"]),
    ("v2-nm-m-huge", as_nm(2, 2**40), "N:M needs", []),
    ("v2-nm-on-a-bias", set_field(B0, 0, 4, "delta-8"), "N:M needs", ["[2]"]),
    ("v2-nm-positions-fall", set_chunk(FC, 2, lambda c: bytes(len(c)), "shared-fixed"), "N:M positions",
     ["rise within each group"]),
    ("v2-huffman-table-bad", set_chunk("0.weight", 1, reframe(change_table=lambda t: b"\x02\x22"), "coded"),
     "bad Huffman table", ["incomplete"]),
    ("v2-huffman-table-too-many-symbols",
     set_chunk("0.weight", 1, reframe(change_table=lambda t: bytes(encode_lengths([0] * 16 + [1, 1]))), "coded"),
     "bad Huffman table", ["codes 18 symbols", "only 16"]),
    ("v2-huffman-table-cut", set_chunk("0.weight", 1, reframe(change_table=lambda t: t[:1]), "coded"),
     "bad Huffman table", ["truncated"]),
    ("v2-huffman-data-cut", set_chunk("0.weight", 1, reframe(change_data=lambda d: d[:-2]), "coded"),
     "bad Huffman data", []),
    ("v2-huffman-data-trailing", set_chunk("0.weight", 2, reframe(change_data=lambda d: d + b"\0"), "coded"),
     "bad Huffman data", ["trailing"]),
    ("v2-huffman-data-bloated", set_chunk("0.weight", 2, reframe(change_data=lambda d: d + bytes(10_000)), "coded"),
     "more than", ["bytes of Huffman data"]),
    ("v2-huffman-sizes-beyond-file", set_chunk("0.weight", 1, lambda c: storage._varint(10**9) + c, "coded"),
     "truncated", ["inside the payload", "Huffman table"]),
    ("v2-csr-offsets-fall", set_chunk(W0, 2, lambda c: b"\x7f" * len(c), "csr-8"), "CSR", ["row offsets"]),
    ("v2-bitmask-count-wrong", set_chunk(W0, 2, lambda c: b"\xff" * len(c), "bitmask-4"), "bitmask", ["marks"]),
    ("v2-deltas-beyond-weight", set_chunk(W0, 2, lambda c: b"\xff" * len(c)), "beyond the weight", []),
]


@pytest.mark.parametrize("make, promise, words", [pytest.param(m, p, w, id=i) for i, m, p, w in V2_CASES])
def test_a_damaged_v2_file_raises_value_error_naming_file_and_problem(make, promise, words, tmp_path):
    test_a_damaged_file_raises_value_error_naming_file_and_problem(make, promise, words, tmp_path)


def test_the_docstring_promises_every_phrase_the_v2_cases_check():
    doc = " ".join(load_compressed.__doc__.split())
    missing = sorted({promise for _, _, promise, _ in V2_CASES if f'"{promise}' not in doc})
    assert not missing, missing


VARIANTS = ["delta-8", "delta-3", "csr-8", "bitmask-4", "dense-32", "shared", "shared-fixed", "coded"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_v2_layout_helpers_rebuild_the_file_exactly(variant):
    assert assemble(layout(variant)) == v2_model(variant).to_bytes()


def test_the_fixtures_hold_what_their_cases_damage():
    shared, coded = v2_model("shared-fixed"), v2_model("coded")
    assert shared.weights[FC]["index"] == "nm" and "codebook" in shared.weights[HEAD]["arrays"]
    flags = layout("coded")["fields"]["0.weight"][0]
    assert flags & storage.CODED_VALUES and flags & storage.CODED_POSITIONS, "Huffman must win on 'coded'"
    assert coded.coding == "huffman"


@pytest.mark.parametrize("variant", ["shared", "coded", "csr-8"])
def test_a_v2_file_cut_anywhere_is_refused_as_truncated(variant, tmp_path):
    data = v2_model(variant).to_bytes()
    path = tmp_path / "cut.ttcz"
    for end in range(1, len(data)):
        path.write_bytes(data[:end])
        with pytest.raises(ValueError, match="truncated"):
            load_compressed(path)


@pytest.mark.parametrize("variant", ["shared", "coded", "bitmask-4"])
def test_save_load_save_of_v2_kinds_is_byte_identical(variant, tmp_path):
    cm = v2_model(variant)
    cm.save(tmp_path / "a.ttcz")
    loaded = load_compressed(tmp_path / "a.ttcz")
    assert loaded.to_bytes() == cm.to_bytes()
    for (name, a), (_, b) in zip(loaded.decompress().named_parameters(), cm.decompress().named_parameters()):
        assert np.array_equal(a.data, b.data), name


def test_a_hostile_v2_header_is_refused_without_allocating_what_it_claims(tmp_path):
    # 10**8 float32 weights claimed (400 MB), a payload of a few bytes
    spec = {"type": "Sequential", "names": ["0"], "layers": [{"type": "Linear", "in": 10_000, "out": 10_000, "bias": False}]}
    header = bytes([2]) + storage._architecture_bytes(spec) + storage._varint(0) + storage._varint(32)
    path = tmp_path / "hostile.ttcz"
    path.write_bytes(MAGIC + len(header).to_bytes(4, "little") + header + b"\0" * 16)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="truncated inside the payload"):
            load_compressed(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


# Written by the version 1 writer before version 2 existed: Linear(6, 4), ReLU, Linear(4, 3), 50% sparse,
# 4-bit per-channel values, 3-bit deltas, INT8 biases.
V1_FIXTURE = base64.b64decode(
    "VFRDWioBAAB42pWRTU7DMBBG7zJrC5rYLVXEEboCsYosZNKBWkod8E8hKrk74yQKcSiLLqx48vw9j+0znNA63RgoMgbKVgftsfLBIhRn8O07feER"
    "PwIar1UNDIw6ooOihBUVGY0cJINateSh31Nopw0qS1yTe8OgCR4KweBFK1rnbcCOTYsfcPcEszoJizHMk7DsGHyifjt4F1td3QxFnLuDipZSsI2M"
    "ij1+kXOPtVcQHTEhRvA8lOSummAonnES5xdsnInrbeuuG7rGscvhBLMeE6dxODm3qXM7OUXf4FLErxfx2JyyVrXx5crpDm/7wzkSfAd64XItJZvR"
    "k6oD/tK7lLpK1XHv+1dBUPQw/0ecp3Qh5ilNxXzcNV7DMijmLI1lo/NSjM/Zn5jsfgBwgP2HQAYABDAR3uwdE9EguvxmPUGTbT1m1l49dlphPSAk"
    "8v8Q9cqDPbnAPz0DOYo9nWL/+1F+UTs1/yma1hQ7")
V1_WEIGHTS = {
    "0.weight": [[0.0, 0.0, -0.3947535455226898, -0.3947535455226898, 0.28196680545806885, 0.3383601903915405],
                 [0.0, 0.0, 0.0, 0.3480105698108673, 0.23200704157352448, -0.40601232647895813],
                 [0.2720184326171875, -0.38082578778266907, 0.0, -0.2720184326171875, 0.2720184326171875, 0.0],
                 [0.0, 0.0, -0.38512536883354187, -0.3301074504852295, 0.0, 0.0]],
    "0.bias": [0.09270185977220535, -0.09589847922325134, 0.4059702157974243, 0.39318376779556274],
    "2.weight": [[0.0, 0.4504636824131012, -0.3861117362976074, 0.4504636824131012], [0.0, 0.0, 0.3277025818824768, 0.0],
                 [0.0, -0.4724408686161041, 0.0, 0.0]],
    "2.bias": [-0.1703318953514099, 0.2884286940097809, -0.19758500158786774],
}


def test_a_stored_version_1_file_still_loads_and_converts_to_version_2(tmp_path):
    path = tmp_path / "v1.ttcz"
    path.write_bytes(V1_FIXTURE)
    loaded = load_compressed(path)
    for name, p in loaded.decompress().named_parameters():
        assert np.array_equal(p.data, np.array(V1_WEIGHTS[name], dtype=np.float32)), name
    assert loaded.version == 1 and loaded.to_bytes() == V1_FIXTURE       # re-saved in its own version
    loaded.version = 2
    loaded.save(tmp_path / "v2.ttcz")
    assert (tmp_path / "v2.ttcz").stat().st_size < len(V1_FIXTURE) - 200
    for name, p in load_compressed(tmp_path / "v2.ttcz").decompress().named_parameters():
        assert np.array_equal(p.data, np.array(V1_WEIGHTS[name], dtype=np.float32)), name


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=60, derandomize=True, database=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=3),
       cuts=st.lists(st.integers(0, 3000), max_size=1), extra=st.binary(max_size=2))
def test_random_damage_to_a_v2_file_loads_a_working_model_or_raises_value_error(variant, flips, cuts, extra,
                                                                                tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / f"damaged-v2-{variant}.ttcz"
    path.write_bytes(damage(v2_model(variant).to_bytes(), cuts, flips, extra))
    try:
        cm = load_compressed(path)
    except ValueError:
        return
    shapes = {name: p.data.shape for name, p in v2_model(variant).decompress().named_parameters()}
    assert {name: p.data.shape for name, p in cm.decompress().named_parameters()} == shapes


FIELD_JUNK = [0, 1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 64, 127, 128, 255, 257, 2**16, 2**40, 2**62]


@pytest.mark.parametrize("variant", ["delta-8", "shared", "coded", "csr-8"])
@settings(max_examples=60, derandomize=True, database=None)
@given(choices=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(FIELD_JUNK)), min_size=1, max_size=2))
def test_random_v2_field_edits_load_a_working_model_or_raise_value_error(variant, choices, tmp_path_factory):
    # A hostile file keeps every varint well formed and says wrong things with them.
    parts = layout(variant)
    places = [(name, i) for name, fields in parts["fields"].items() for i in range(len(fields))]
    for which, junk in choices:
        name, i = places[which % len(places)]
        parts["fields"][name][i] = junk
    path = tmp_path_factory.getbasetemp() / f"edited-v2-{variant}.ttcz"
    path.write_bytes(assemble(parts))
    try:
        cm = load_compressed(path)
    except ValueError:
        return
    for entry in {**cm.weights, **cm.biases}.values():
        assert list(storage.decompress_weight(entry).shape) == entry["shape"]
