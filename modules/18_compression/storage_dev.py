# %% [markdown]
# # Module 18, given code: the compressed file format
#
# > The `.ttcz` file: bit packing, the decoders of the lesson's encodings, and a loader that
# > refuses damaged or hostile files. Read it; you do not edit it.
#
# The lesson (`compression_dev.py`) has you write the *encoders*: `encode_csr`, `encode_delta`
# and `compress_weight`. This notebook holds what turns their arrays into a file and back:
# `pack_bits` / `unpack_bits` (codes narrower than a byte), the decoders, `decompress_weight`,
# and `CompressedModel` with `load_compressed`.

# %%
#| default_exp compression.storage

# %%
#| export
import json
import math
import zlib
from pathlib import Path

import numpy as np

from tinytorch.core.activations import ReLU, Sigmoid, Softmax, Tanh
from tinytorch.core.layers import Dropout, Flatten, Linear, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.compression.quantize import qrange

# %% [markdown]
# ## Bits and decoders
#
# A 4-bit code takes half a byte: `pack_bits` writes each integer with `bits` bits, most
# significant first, and `unpack_bits` reads them back. `decode_csr` and `decode_delta` invert the
# lesson's encoders.

# %%
#| export
INDEX_FORMATS = ("dense", "csr", "bitmask", "delta")


def _check_value_bits(bits) -> None:
    if bits not in (32, 16):
        qrange(bits)  # raises unless an int in 2..8


def decode_csr(data, indices, indptr, shape) -> np.ndarray:
    "The dense array of `shape` that `encode_csr` encoded."
    indptr = np.asarray(indptr)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    dense = np.zeros((shape[0], int(np.prod(shape[1:], dtype=np.int64))), dtype=np.asarray(data).dtype)
    dense[rows, indices] = data
    return dense.reshape(shape)


def decode_delta(deltas) -> np.ndarray:
    "Flat positions of every entry (fillers included) of `encode_delta`'s output."
    return np.cumsum(np.asarray(deltas, dtype=np.int64) + 1) - 1


def pack_bits(values, bits: int) -> np.ndarray:
    "Unsigned integers < 2**bits written with `bits` bits each, most significant first, into uint8 bytes."
    values = np.asarray(values, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ValueError(f"values must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return values.astype(np.uint8)
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).ravel())


def unpack_bits(packed, bits: int, count: int) -> np.ndarray:
    "The `count` integers that `pack_bits` wrote, as int64."
    packed = np.asarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed[:count].astype(np.int64)
    digits = np.unpackbits(packed)[: count * bits].reshape(count, bits).astype(np.int64)
    return digits @ (1 << np.arange(bits - 1, -1, -1))

# %%
assert pack_bits([1, 2, 3], 2).tolist() == [0b01101100]            # 01 10 11, then two zero bits
assert unpack_bits(pack_bits([5, 0, 7], 3), 3, 3).tolist() == [5, 0, 7]
assert decode_delta([1, 0, 3]).tolist() == [1, 2, 6]                 # cumulative gaps
dense = decode_csr(np.array([5.0, 1.0]), np.array([1, 0]), np.array([0, 1, 1, 2]), (3, 2))
assert dense.tolist() == [[0, 5.0], [0, 0], [1.0, 0]]
print("✓ pack_bits, unpack_bits, decode_delta and decode_csr on hand cases")

# %%
#| export
def decompress_weight(entry: dict) -> np.ndarray:
    "The float32 array that `compress_weight` stored (quantized values dequantized)."
    shape, arrays, count = tuple(entry["shape"]), entry["arrays"], entry["count"]
    size = int(np.prod(shape, dtype=np.int64))
    row = size // shape[0] if shape and shape[0] else 1   # values per output channel
    if entry["index"] == "dense":
        positions = np.arange(size)
    elif entry["index"] == "csr":
        ptr = arrays["indptr"]
        positions = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)) * row + arrays["indices"]
    elif entry["index"] == "bitmask":
        positions = np.flatnonzero(np.unpackbits(arrays["bitmask"], count=size))
    else:
        positions = decode_delta(unpack_bits(arrays["deltas"], entry["index_bits"], count))
    if entry["bits"] in (32, 16):
        values = arrays["values"][:count].astype(np.float32)
    else:
        qmin, _ = qrange(entry["bits"])
        codes = unpack_bits(arrays["values"], entry["bits"], count) + qmin
        scale = arrays["scale"]
        if scale.size > 1:  # per output channel: the row of each flat position picks its scale
            scale = scale[positions // row]
        values = (codes * scale).astype(np.float32)
    flat = np.zeros(size, dtype=np.float32)
    flat[positions] = values
    return flat.reshape(shape)

# %%
entry = {"shape": [2, 3], "index": "delta", "bits": 32, "index_bits": 8, "count": 2,
         "arrays": {"deltas": np.array([1, 3], dtype=np.uint8), "values": np.array([2.0, -1.0], dtype=np.float32)}}
assert decompress_weight(entry).tolist() == [[0, 2.0, 0], [0, 0, -1.0]]
print("✓ decompress_weight places the values at the decoded positions")

# %% [markdown]
# ### A compressed model and its file
#
# `compress(model, sparsity, bits=8, ...)` prunes a copy of the model with `magnitude_prune`
# (pass `sparsity=None` when the model is already pruned, e.g. by `iterative_prune`), runs
# `compress_weight` on every prunable weight, and stores the other parameters (the biases)
# densely with `bias_bits` (32: float32, 16: float16, 8: INT8 with one scale). A
# `CompressedModel` remembers the architecture (layer types and settings), so `load_compressed(path)` needs
# nothing but the file.
#
# **The file format** (extension `.ttcz`), every byte counted: the magic `b"TTCZ"`, a 4-byte
# header length, the header (JSON with the format `version`, the architecture and, for every
# array, its name, dtype and shape; deflated with `zlib`, since JSON text is very repetitive),
# then the raw bytes of the arrays back to back. `save` returns the number of bytes written;
# `breakdown()` splits them into values, indices, scales, biases and header.
#
# **A file is untrusted input.** It may be cut short, damaged on disk, or written by someone
# who wants `load_compressed` to crash or to allocate 100 GB. So `load_compressed` checks every byte count, type and
# setting before it uses it, and refuses a bad file with one kind of error, a `ValueError` that
# names the file and the problem (`model.ttcz: truncated: the header says 4,096 payload bytes,
# the file holds 1,000`). Two details are worth copying into your own formats: the header is
# inflated with a cap (a few KB of zlib can inflate to gigabytes, a "decompression bomb"), and
# nothing in the file is ever executed: JSON and raw bytes, never `pickle`, whose files can run
# any code when loaded.

# %%
#| export
MAGIC = b"TTCZ"
FORMAT_VERSION = 1            # every header says which layout it uses; `load_compressed` refuses the others
MAX_HEADER_BYTES = 1 << 20    # 1 MiB of JSON; a real header is a few KB, so more is damage or a zip bomb
MAX_PARAMETERS = 1 << 27      # 134M floats (512 MB): far beyond any model here; caps what `decompress` allocates
MAX_DEPTH = 32                # Sequentials nested inside Sequentials, at most this deep
DTYPES = ("<f4", "<f2", "<i4", "|u1")  # float32, float16, int32, uint8: all `compress_weight` stores


def _layer_spec(layer) -> dict:
    "A JSON-able description of a layer, enough to rebuild it."
    if isinstance(layer, Sequential):
        return {"type": "Sequential", "names": [n for n, _ in layer.named_children()],
                "layers": [_layer_spec(child) for _, child in layer.named_children()]}
    if isinstance(layer, Linear):
        return {"type": "Linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, Conv2d):
        return {"type": "Conv2d", "in": layer.in_channels, "out": layer.out_channels,
                "kernel": list(layer.kernel_size), "stride": list(layer.stride),
                "padding": list(layer.padding), "bias": layer.bias is not None}
    if isinstance(layer, MaxPool2d):
        return {"type": "MaxPool2d", "kernel": list(layer.kernel_size), "stride": list(layer.stride)}
    if isinstance(layer, Flatten):
        return {"type": "Flatten", "start_dim": layer.start_dim}
    if isinstance(layer, Dropout):
        return {"type": "Dropout", "p": layer.p}
    if isinstance(layer, Softmax):
        return {"type": "Softmax", "dim": layer.dim}
    if isinstance(layer, (ReLU, Sigmoid, Tanh)):
        return {"type": type(layer).__name__}
    raise ValueError(f"compress cannot store a layer of type {type(layer).__name__}; supported: Sequential, "
                     "Linear, Conv2d, MaxPool2d, Flatten, Dropout, ReLU, Sigmoid, Tanh, Softmax")


def _build(spec: dict):
    "A fresh layer as `_layer_spec` described it (its weights are overwritten by the caller)."
    kind, rng = spec["type"], np.random.default_rng(0)
    if kind == "Sequential":
        return Sequential({name: _build(child) for name, child in zip(spec["names"], spec["layers"])})
    if kind == "Linear":
        return Linear(spec["in"], spec["out"], bias=spec["bias"], rng=rng)
    if kind == "Conv2d":
        return Conv2d(spec["in"], spec["out"], tuple(spec["kernel"]), stride=tuple(spec["stride"]),
                      padding=tuple(spec["padding"]), bias=spec["bias"], rng=rng)
    if kind == "MaxPool2d":
        return MaxPool2d(tuple(spec["kernel"]), stride=tuple(spec["stride"]))
    if kind == "Flatten":
        return Flatten(spec["start_dim"])
    if kind == "Dropout":
        return Dropout(spec["p"])
    if kind == "Softmax":
        return Softmax(dim=spec["dim"])
    return {"ReLU": ReLU, "Sigmoid": Sigmoid, "Tanh": Tanh}[kind]()


class CompressedModel:
    "A pruned, quantized model as a file stores it: compressed weights, biases, the architecture."

    def __init__(self, architecture: dict, weights: dict, biases: dict):
        self.architecture, self.weights, self.biases = architecture, weights, biases
        self._model = None

    def _arrays(self) -> list:
        "(key, category, array) of everything stored, in file order."
        found = []
        for group, entries in (("weights", self.weights), ("biases", self.biases)):
            for name, entry in entries.items():
                for key, array in entry["arrays"].items():
                    if group == "biases":
                        category = "biases"
                    else:
                        category = {"values": "values", "scale": "scales"}.get(key, "indices")
                    found.append((f"{name}/{key}", category, array))
        return found

    def _header(self) -> bytes:
        def meta(entries):
            return {name: {k: v for k, v in entry.items() if k != "arrays"} for name, entry in entries.items()}
        header = {"version": FORMAT_VERSION, "architecture": self.architecture,
                  "weights": meta(self.weights), "biases": meta(self.biases),
                  "arrays": [[key, array.dtype.str, list(array.shape)] for key, _, array in self._arrays()]}
        return zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)

    def to_bytes(self) -> bytes:
        header = self._header()
        payload = b"".join(np.ascontiguousarray(array).tobytes() for _, _, array in self._arrays())
        return MAGIC + len(header).to_bytes(4, "little") + header + payload

    @property
    def nbytes(self) -> int:
        "Size of the file `save` writes."
        return len(self.to_bytes())

    def breakdown(self) -> dict:
        "Bytes of the file by category: values, indices, scales, biases, header (magic and length included)."
        parts = {"values": 0, "indices": 0, "scales": 0, "biases": 0}
        for _, category, array in self._arrays():
            parts[category] += int(array.nbytes)
        parts["header"] = len(MAGIC) + 4 + len(self._header())
        return parts

    def save(self, path) -> int:
        "Write the file; returns the number of bytes written."
        data = self.to_bytes()
        Path(path).write_bytes(data)
        return len(data)

    def decompress(self):
        "A working float32 model; pruned weights are zero and masked, so fine-tuning keeps them zero."
        model = _build(self.architecture)
        params = dict(model.named_parameters())
        for name, entry in self.weights.items():
            weight = decompress_weight(entry)
            params[name].data[...] = weight
            params[name].mask = weight != 0
        for name, entry in self.biases.items():
            params[name].data[...] = decompress_weight(entry)
        return model

    def __call__(self, x):
        if self._model is None:
            self._model = self.decompress()
        return self._model(x)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v:,}" for k, v in self.breakdown().items())
        return f"CompressedModel({len(self.weights)} weights, {self.nbytes:,} bytes: {parts})"


# The checks `load_compressed` makes, in the order it makes them. A file is untrusted input: it may be cut
# short, damaged on disk or written by someone hostile, so nothing it says is used (to allocate,
# to index, to build a layer) before it has been checked.

class _Refused(ValueError):
    "What `_check` raises; `load_compressed` turns it into a ValueError that also names the file."


def _check(ok, problem: str) -> None:
    "Refuse the file unless `ok`; `problem` says in words what is wrong with it."
    if not ok:
        raise _Refused(problem)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is an int to Python


def _brief(value) -> str:
    "A value from the file, shortened for an error message (it may be a megabyte of junk)."
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a list nested too deep
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_keys(obj, required: set, where: str, optional: set = frozenset()) -> None:
    "`obj` is a JSON object with exactly the `required` keys (plus any `optional` ones)."
    _check(isinstance(obj, dict), f"{where} must be a JSON object, got {_brief(obj)}")
    missing, unexpected = required - obj.keys(), obj.keys() - required - optional
    _check(not missing, f"{where} is missing key(s) {', '.join(map(repr, sorted(missing)))}")
    _check(not unexpected, f"{where} has unexpected key(s) {', '.join(map(repr, sorted(unexpected)))}")


def _pair(minimum: int):
    "A test for a pair of ints, each from `minimum` to MAX_PARAMETERS, like `(kernel_h, kernel_w)`."
    return lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) and minimum <= x <= MAX_PARAMETERS
                                                                 for x in v)


# Sizes are capped, so the products of sizes below stay small numbers (and print in a message).
_POSITIVE = (lambda v: _is_int(v) and 0 < v <= MAX_PARAMETERS, "a positive int")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_INT = (_is_int, "an int")
_LAYER_FIELDS = {  # every layer type `_layer_spec` writes: {setting: (test, what it must be)}
    "Linear": {"in": _POSITIVE, "out": _POSITIVE, "bias": _BOOL},
    "Conv2d": {"in": _POSITIVE, "out": _POSITIVE, "kernel": (_pair(1), "two positive ints"),
               "stride": (_pair(1), "two positive ints"), "padding": (_pair(0), "two ints >= 0"), "bias": _BOOL},
    "MaxPool2d": {"kernel": (_pair(1), "two positive ints"), "stride": (_pair(1), "two positive ints")},
    "Flatten": {"start_dim": _INT},
    "Dropout": {"p": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
                      "a number in [0, 1]")},
    "Softmax": {"dim": _INT},
    "ReLU": {}, "Sigmoid": {}, "Tanh": {},
}


def _parameter_shapes(spec, prefix: str = "", depth: int = 0) -> dict:
    """{dotted name: shape} of the parameters of the layer `spec` describes, as `named_parameters` names
    them, once every setting is checked: `_build(spec)` cannot fail and builds exactly these."""
    where = f"layer {prefix!r}" if prefix else "the architecture"
    _check(isinstance(spec, dict), f"{where} must be a JSON object, got {_brief(spec)}")
    kind = spec.get("type")
    _check(kind == "Sequential" or (isinstance(kind, str) and kind in _LAYER_FIELDS),
           f"{where} has an unknown layer type {_brief(kind)}")
    if kind == "Sequential":
        _check(depth < MAX_DEPTH, f"the architecture nests Sequentials more than {MAX_DEPTH} deep")
        _check_keys(spec, {"type", "names", "layers"}, where)
        names, layers = spec["names"], spec["layers"]
        _check(isinstance(names, list) and isinstance(layers, list) and len(names) == len(layers)
               and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names),
               f"{where}: 'names' must be distinct, non-empty strings, one for each of 'layers'")
        shapes = {}
        for name, child in zip(names, layers):
            for key, shape in _parameter_shapes(child, f"{prefix}.{name}" if prefix else name, depth + 1).items():
                _check(key not in shapes, f"parameter {key!r} is listed twice in the architecture")
                shapes[key] = shape
        return shapes
    fields = _LAYER_FIELDS[kind]
    _check_keys(spec, {"type", *fields}, f"{where} ({kind})")
    for field, (ok, wanted) in fields.items():
        _check(ok(spec[field]), f"{where} ({kind}): {field!r} must be {wanted}, got {_brief(spec[field])}")
    dot = f"{prefix}." if prefix else ""
    if kind == "Linear":
        shapes = {f"{dot}weight": [spec["out"], spec["in"]]}
    elif kind == "Conv2d":
        shapes = {f"{dot}weight": [spec["out"], spec["in"], *spec["kernel"]]}
    else:
        return {}  # no parameters
    if spec["bias"]:
        shapes[f"{dot}bias"] = [spec["out"]]
    return shapes


def _expected_arrays(name: str, meta, shape: list) -> dict:
    """{array name: (dtype, allowed lengths)} that entry `name` of parameter `shape` must store, once its
    fields are checked; the lengths are those `compress_weight` writes (all its arrays are 1-d)."""
    where = f"entry {name!r}"
    _check_keys(meta, {"shape", "index", "bits", "index_bits", "count"}, where)
    index, bits, index_bits, count = meta["index"], meta["bits"], meta["index_bits"], meta["count"]
    # `==` alone would accept [8.0, 40.0] or [true]; both break reshape later.
    _check(isinstance(meta["shape"], list) and all(_is_int(d) for d in meta["shape"]) and meta["shape"] == shape,
           f"{where}: shape {_brief(meta['shape'])} is not the architecture's {shape}")
    _check(isinstance(index, str) and index in INDEX_FORMATS, f"{where}: unknown index format {_brief(index)}")
    _check(_is_int(bits) and (bits in (32, 16) or 2 <= bits <= 8),
           f"{where}: bits must be 32, 16 or 2..8, got {_brief(bits)}")
    _check(_is_int(index_bits) and (index != "delta" or 1 <= index_bits <= 16),
           f"{where}: index_bits must be an int (1..16 for delta), got {_brief(index_bits)}")
    size = math.prod(shape)
    _check(_is_int(count) and 0 <= count <= size,
           f"{where}: count must be an int in [0, {size:,}], got {_brief(count)}")
    _check(index != "dense" or count == size, f"{where}: count must be {size:,} for a dense entry, got {count:,}")
    _check(index != "csr" or len(shape) >= 2, f"{where}: a CSR entry needs a 2-d (or larger) shape, got {shape}")
    packed = lambda n, b: -(-n * b // 8)  # bytes of n values packed with b bits each
    if bits == 32:
        expected = {"values": ("<f4", {count})}
    elif bits == 16:
        expected = {"values": ("<f2", {count})}
    else:  # packed codes and one scale per tensor or per output channel
        expected = {"values": ("|u1", {packed(count, bits)}), "scale": ("<f4", {1, shape[0] if shape else 1})}
    if index == "csr":
        expected |= {"indices": ("<i4", {count}), "indptr": ("<i4", {shape[0] + 1})}
    elif index == "bitmask":
        expected["bitmask"] = ("|u1", {packed(size, 1)})
    elif index == "delta":
        expected["deltas"] = ("|u1", {packed(count, index_bits)})
    return expected


def _check_positions(name: str, entry: dict) -> None:
    "The positions an entry's index stores lie inside its weight, so `decompress_weight` cannot fail."
    where, arrays, count = f"entry {name!r}", entry["arrays"], entry["count"]
    shape, index = entry["shape"], entry["index"]
    size = math.prod(shape)
    if index == "csr":
        ptr, row = arrays["indptr"].astype(np.int64), size // shape[0] if shape[0] else 1
        _check(ptr[0] == 0 and ptr[-1] == count and np.all(np.diff(ptr) >= 0),
               f"{where}: CSR row offsets must rise from 0 to count ({count:,})")
        _check(np.all((arrays["indices"] >= 0) & (arrays["indices"] < row)),
               f"{where}: a CSR column index is outside 0..{row - 1}")
    elif index == "bitmask":
        marked = int(np.unpackbits(arrays["bitmask"], count=size).sum())
        _check(marked == count, f"{where}: the bitmask marks {marked:,} weights, count says {count:,}")
    elif index == "delta" and count:
        last = int(decode_delta(unpack_bits(arrays["deltas"], entry["index_bits"], count))[-1])
        _check(last < size, f"{where}: the deltas reach position {last:,}, beyond the weight's {size:,}")


def _parse(data: bytes) -> CompressedModel:
    "The model stored in the bytes of a file; `_Refused` (a ValueError) if they are not a valid file."
    # 1. The preamble: magic, header length, header, payload, every byte accounted for.
    _check(len(data) > 0, "empty file")
    _check(len(data) >= len(MAGIC) or not MAGIC.startswith(data), f"truncated inside the magic ({len(data)} bytes)")
    _check(data[:4] == MAGIC, f"not a compressed tinytorch model (expected magic {MAGIC!r}, got {data[:4]!r})")
    _check(len(data) >= 8, f"truncated inside the header length ({len(data)} bytes)")
    size = int.from_bytes(data[4:8], "little")
    _check(8 + size <= len(data), f"truncated: the header length says {size:,} bytes, only {len(data) - 8:,} follow")
    blob, payload = data[8:8 + size], memoryview(data)[8 + size:]

    # 2. The header: inflate at most MAX_HEADER_BYTES (a few KB of zlib can inflate to gigabytes).
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(blob, MAX_HEADER_BYTES)
    except zlib.error as error:
        raise _Refused(f"the header is not zlib data ({error})") from None
    _check(not inflater.unconsumed_tail, f"the header inflates to more than {MAX_HEADER_BYTES:,} bytes "
           "(larger than any real header: damaged, or a decompression bomb)")
    _check(inflater.eof and not inflater.unused_data, "the header is not one complete zlib stream")
    try:
        header = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad UTF-8, bad JSON, a 5,000-digit int, nesting too deep
        raise _Refused(f"the header is not JSON ({type(error).__name__}: {error})") from None
    _check(isinstance(header, dict), f"the header is not a JSON object but {type(header).__name__}")
    # The version first: a newer layout may have other keys. Files from before versions carry none;
    # their layout is version 1's, so they still load.
    version = header.get("version", 1)
    _check(_is_int(version) and version == FORMAT_VERSION,
           f"unsupported format version {_brief(version)} (this tinytorch reads version {FORMAT_VERSION})")
    _check_keys(header, {"architecture", "weights", "biases", "arrays"}, "the header", optional={"version"})

    # 3. The arrays' table: dtypes and shapes, then their bytes against the payload, before any is read.
    listed = header["arrays"]
    _check(isinstance(listed, list), f"the header's 'arrays' must be a list, got {_brief(listed)}")
    table, needed = {}, 0
    for item in listed:
        _check(isinstance(item, list) and len(item) == 3 and isinstance(item[0], str),
               f"each of the header's 'arrays' must be [name, dtype, shape], got {_brief(item)}")
        key, dtype, shape = item
        _check(key not in table, f"array {key!r} is listed twice")
        _check(dtype in DTYPES, f"array {key!r} has dtype {_brief(dtype)}; a file holds only {', '.join(DTYPES)}")
        _check(isinstance(shape, list) and len(shape) <= 32 and all(_is_int(d) and 0 <= d < 2**63 for d in shape),
               f"array {key!r} has shape {_brief(shape)}, not a list of ints in [0, 2**63)")
        table[key] = (dtype, shape)
        needed += math.prod(shape) * np.dtype(dtype).itemsize   # Python ints: a huge shape cannot overflow
    _check(needed <= len(payload),
           f"truncated: the header says {needed:,} payload bytes, the file holds {len(payload):,}")
    _check(needed == len(payload), f"{len(payload) - needed:,} unexpected bytes after the payload "
           f"(the header says {needed:,} payload bytes, the file holds {len(payload):,})")

    # 4. The model: the architecture's parameters must be exactly the stored weights and biases,
    #    each with the arrays its fields promise.
    shapes = _parameter_shapes(header["architecture"])
    total = sum(math.prod(shape) for shape in shapes.values())
    _check(total <= MAX_PARAMETERS, f"the architecture has {total:,} parameters, more than {MAX_PARAMETERS:,}")
    groups = {group: header[group] for group in ("weights", "biases")}
    for group, metas in groups.items():
        _check(isinstance(metas, dict), f"the header's {group!r} must be a JSON object, got {_brief(metas)}")
    stored = [name for metas in groups.values() for name in metas]
    _check(len(set(stored)) == len(stored), "a parameter is listed twice, as a weight and as a bias")
    missing, unexpected = shapes.keys() - set(stored), set(stored) - shapes.keys()
    _check(not missing and not unexpected, f"the stored parameters are not the architecture's: "
           f"missing {_brief(sorted(missing))}, unexpected {_brief(sorted(unexpected))}")
    expected = {name: _expected_arrays(name, meta, shapes[name])
                for metas in groups.values() for name, meta in metas.items()}
    found = {name: {} for name in expected}
    offset = 0
    for key, (dtype, shape) in table.items():
        name, _, role = key.rpartition("/")
        _check(name in expected and role in expected[name], f"unexpected array {key!r}")
        wanted, lengths = expected[name][role]
        counts = " or ".join(f"{n:,}" for n in sorted(lengths))
        _check(dtype == wanted and len(shape) == 1 and shape[0] in lengths,
               f"array {key!r} is {dtype} {shape}, expected {wanted} with {counts} values")
        found[name][role] = np.frombuffer(payload, dtype=dtype, count=shape[0], offset=offset).copy()
        offset += found[name][role].nbytes
    for name, arrays in found.items():
        missing = expected[name].keys() - arrays.keys()
        _check(not missing, f"entry {name!r} is missing array(s) {', '.join(sorted(missing))}")

    # 5. The contents: the positions every index stores lie inside its weight.
    entries = {group: {name: {**meta, "arrays": found[name]} for name, meta in metas.items()}
               for group, metas in groups.items()}
    for group in entries.values():
        for name, entry in group.items():
            _check_positions(name, entry)
    return CompressedModel(header["architecture"], entries["weights"], entries["biases"])


def load_compressed(path) -> CompressedModel:
    """Read a `.ttcz` file written by `CompressedModel.save`.

    Error contract: a file that `save` did not write, or that was cut short or damaged since,
    raises `ValueError` (never another exception) with the message "<path>: <what is wrong>",
    found before anything the file claims is allocated or used. What is wrong is one of:
    - the bytes: "empty file"; "truncated" (inside the magic, the header length, the header or
      the payload); "not a compressed tinytorch model" (wrong magic); "unexpected bytes after
      the payload";
    - the header: "not zlib data"; "not one complete zlib stream"; "inflates to more than"
      `MAX_HEADER_BYTES` bytes (a decompression bomb); "not JSON"; "not a JSON object";
      "unsupported format version" (a file without one is version 1, the layout files had before
      versions); "missing key(s)"; "unexpected key(s)"; a value that "must be" another type or range;
    - the arrays: a "dtype" outside `DTYPES`; a "shape" that is not a list of ints >= 0; an array
      "listed twice", "unexpected" or "missing"; an array that is not the dtype and length
      "expected" by its entry's fields;
    - the model: an "unknown layer type" or "unknown index format"; Sequentials nested more than
      `MAX_DEPTH` "deep"; more than `MAX_PARAMETERS` "parameters"; stored parameters or shapes that
      are "not the architecture's"; index positions outside the weight ("CSR" offsets or columns,
      a "bitmask" with the wrong count, deltas "beyond the weight").
    `load_compressed` holds the file and at most `MAX_HEADER_BYTES` more before the checks pass, and nothing in
    the file runs (JSON and raw bytes only, never pickle). A model it returns decompresses without
    error. A file that cannot be read at all raises `OSError`, as `open` does.
    """
    try:
        return _parse(Path(path).read_bytes())
    except _Refused as problem:
        raise ValueError(f"{path}: {problem}") from None
