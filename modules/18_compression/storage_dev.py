# %% [markdown]
# # Module 18, given code: the compressed file format
#
# > The `.ttcz` file: a compact binary format (version 2) with Huffman-coded streams, N:M positions and codebooks, `decompress_weight`, and a loader that refuses damaged or hostile files.
#
# Read it; you do not edit it. The lesson (`compression_dev.py`) has you write `encode_delta`
# and `compress_weight`; its `encoding.py` also holds the bit packing and the decoders. This
# notebook holds what turns their arrays into a file and back: `decompress_weight`, and
# `CompressedModel` with `load_compressed`. It runs top to bottom as a
# script: `python modules/18_compression/storage_dev.py`.

# %%
#| default_exp compression.storage

# %%
#| export
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tinytorch.core.activations import ReLU, Sigmoid, Softmax, Tanh
from tinytorch.core.layers import Dropout, Flatten, Linear, Sequential
from tinytorch.core.spatial import Conv2d, MaxPool2d
from tinytorch.compression.entropy import MAX_CODE_LENGTH, decode_lengths, encode_lengths, huffman_decode, huffman_encode
from tinytorch.compression.quantize import qrange
from tinytorch.core.checks import is_int, is_real

# %% [markdown]
# ## Bits and decoders
#
# The lesson's `tinytorch/compression/encoding.py` holds the bit packing (`pack_bits` /
# `unpack_bits`), the encoders and their decoders (`decode_csr`, `decode_delta`); this file reads
# and writes what they produce.

# %%
#| export
from tinytorch.compression.encoding import (INDEX_FORMATS, check_value_bits, decode_csr, decode_delta, pack_bits,
                                            unpack_bits)

STORED_FORMATS = INDEX_FORMATS + ("nm",)               # and N:M positions, which `compress(nm=...)` adds

# %% [markdown]
# ### Entries: what one stored parameter holds
#
# `compress_weight` returns an *entry*: `{"shape", "index", "bits", "index_bits", "count",
# "arrays"}`. `count` is the number of stored positions (the delta fillers, which hold zeros,
# included). Two more kinds come from `compress` (in `pipeline_dev.py`), not from the lesson:
#
# - **N:M entries** (`index="nm"`, with keys `n` and `m`): every group of `m` consecutive weights
#   along a row stores exactly `n` values, and the array `positions` holds each value's place in
#   its group with `index_bits = log2(m)` bits (`encode_nm` of `nm_sparsity_dev.py`).
# - **Codebook entries** (weight sharing, `qat_dev.py`): the array `codebook` holds the layer's
#   float32 centroids, and `values` holds one `bits`-bit codebook index per stored position, in
#   place of affine codes and a scale. A stored position that holds a zero (a delta filler, a
#   zero inside a group) needs a zero in the codebook, so `compress` appends 0.0 when the
#   centroids lack one.

# %%
#| export
def _positions(entry: dict) -> np.ndarray:
    "Flat positions (int64) of the `count` values an entry stores."
    shape, arrays, count = entry["shape"], entry["arrays"], entry["count"]
    size = math.prod(shape)
    row = size // shape[0] if shape and shape[0] else 1   # values per output channel
    if entry["index"] == "dense":
        return np.arange(size)
    if entry["index"] == "csr":
        ptr = arrays["indptr"]
        return np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)) * row + arrays["indices"]
    if entry["index"] == "bitmask":
        return np.flatnonzero(np.unpackbits(arrays["bitmask"], count=size))
    if entry["index"] == "nm":   # group g, place p: flat position g * m + p
        places = unpack_bits(arrays["positions"], entry["index_bits"], count)
        return np.arange(count) // entry["n"] * entry["m"] + places
    return decode_delta(unpack_bits(arrays["deltas"], entry["index_bits"], count))


def decompress_weight(entry: dict) -> np.ndarray:
    "The float32 array that an entry (of `compress_weight`, or an N:M or codebook entry) stores."
    shape, arrays, count = tuple(entry["shape"]), entry["arrays"], entry["count"]
    size = math.prod(shape)
    row = size // shape[0] if shape and shape[0] else 1
    positions = _positions(entry)
    if "codebook" in arrays:
        values = arrays["codebook"][unpack_bits(arrays["values"], entry["bits"], count)]
    elif entry["bits"] in (32, 16):
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
shared = {"shape": [1, 8], "index": "nm", "bits": 2, "index_bits": 2, "count": 4, "n": 2, "m": 4,
          "arrays": {"positions": pack_bits([0, 3, 1, 2], 2), "values": pack_bits([2, 0, 1, 1], 2),
                     "codebook": np.array([-0.5, 0.25, 1.0], dtype=np.float32)}}
assert decompress_weight(shared).tolist() == [[1.0, 0, 0, -0.5, 0, 0.25, 0.25, 0]]
print("✓ decompress_weight places the values at the decoded positions (delta; N:M with a codebook)")

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
# **Why a binary header.** Version 1 of the file (extension `.ttcz`) wrote its header as JSON,
# deflated: the architecture, every entry's fields, and a table giving each array's name, dtype
# and shape. Readable, but on the 95% sparse digits MLP that header was 359 bytes of a
# 3,930-byte file, and most of it said what the reader could have worked out: an array's dtype
# and length follow from its entry's fields (`bits`, `count`, the index format), and its shape
# from the architecture. Version 2 stores only what cannot be derived, as small integers, in a
# fixed order: no names, no table. It ends with a CRC-32 checksum (4 bytes), so that a damaged
# file is refused even where its damage still makes sense as varints. Each integer is a **varint** (LEB128): 7 bits per byte,
# lowest first, the top bit set when another byte follows, so 10 takes one byte and 300 two.
#
# **The version 2 layout**, every byte counted:
#
# | bytes | what | encoding |
# | --- | --- | --- |
# | 4 | magic `b"TTCZ"` | |
# | 4 | header length `L` | uint32, little-endian |
# | 1 | format version: 2 | a byte below 8, so it never starts a zlib stream (version 1's header) |
# | | **architecture**: layer type, then its settings; a Sequential gives its number of layers and their names (one 0 byte when they are `"0"`, `"1"`, ...) | varints; a bias flag is a 0/1 byte; Dropout's `p` a float64 |
# | | **per parameter**, in `named_parameters` order: flags (index format, per-channel, codebook, which streams are Huffman-coded), `bits` (or the codebook size), `index_bits` (delta), `n` and `m` (N:M), `count` (csr, bitmask, delta) | varints |
# | | **payload**, per parameter in the same order: its scales or codebook (float32), its values, its positions | see below |
# | 4 | CRC-32 of every byte before it | uint32, little-endian |
#
# Values are float32/float16, or **symbols**: `bits`-bit codes (affine codes, codebook indices),
# delta gaps and N:M positions. A symbol stream is stored either packed at a fixed width
# (`pack_bits`), or **Huffman-coded** (`entropy_dev.py`): a varint with its table's size, a varint
# with its data's size, the lengths table (`encode_lengths`), the codes (`huffman_encode`). With
# `coding="huffman"`, `compress` keeps for each stream whichever of the two is smaller: on a
# tiny layer the table costs more than the codes save. The two varints and the table are counted
# in the part the stream belongs to (values, indices or biases), so `breakdown()` says what
# each part really costs.
#
# **A file is untrusted input.** It may be cut short, damaged on disk, or written by someone
# who wants `load_compressed` to crash or to allocate 100 GB. So `load_compressed` checks every
# byte count, type and setting before it uses it, and refuses a bad file with one kind of error,
# a `ValueError` that names the file and the problem (`model.ttcz: truncated inside the payload:
# 820 bytes for entry '0.weight' values, 13 left`). It still reads version 1 files: their
# header begins with a zlib byte (8 or more), version 2's with its version byte. Two details of
# version 1 are worth copying into your own formats: a deflated header is inflated with a cap (a
# few KB of zlib can inflate to gigabytes, a "decompression bomb"), and nothing in the file is
# ever executed: JSON, varints and raw bytes, never `pickle`, whose files can run any code when
# loaded.

# %%
#| export
MAGIC = b"TTCZ"
FORMAT_VERSION = 2            # what `save` writes; `load_compressed` reads versions 1 and 2
MAX_HEADER_BYTES = 1 << 20    # 1 MiB of version 1 JSON; a real header is a few KB, so more is damage or a zip bomb
MAX_PARAMETERS = 1 << 27      # 134M floats (512 MB): far beyond any model here; caps what `decompress` allocates
MAX_DEPTH = 32                # Sequentials nested inside Sequentials, at most this deep
MAX_CODEBOOK = 257            # centroids of a codebook: 256 (8-bit indices) and an appended zero
DTYPES = ("<f4", "<f2", "<i4", "|u1")  # float32, float16, int32, uint8: all `compress_weight` stores
CODINGS = ("fixed", "huffman")
LAYER_TYPES = ("Sequential", "Linear", "Conv2d", "MaxPool2d", "Flatten", "Dropout", "Softmax",
               "ReLU", "Sigmoid", "Tanh")  # a version 2 file names a layer type by its place here
# An entry's flags: bits 0-2 are its index format (its place in STORED_FORMATS), then these.
PER_CHANNEL, CODEBOOK, CODED_VALUES, CODED_POSITIONS = 8, 16, 32, 64


def _varint(value: int) -> bytes:
    "A non-negative int as LEB128: 7 bits per byte, lowest first; the top bit says another byte follows."
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _zigzag(value: int) -> int:
    "A signed int as a varint-friendly one: 0, -1, 1, -2, ... become 0, 1, 2, 3, ..."
    return 2 * value if value >= 0 else -2 * value - 1

# %%
assert _varint(10) == b"\x0a" and _varint(300) == b"\xac\x02"   # 300 = 0b10_0101100: low 7 bits first
assert [_zigzag(v) for v in (0, -1, 1, -2)] == [0, 1, 2, 3]
print("✓ varints: one byte below 128, two below 16,384")

# %% [markdown]
# The architecture is written as a tree: `_layer_spec` describes a layer as a dict (the same one
# version 1 wrote as JSON), `_build` builds it, and `_architecture_bytes` writes it with the
# field order of `LAYER_LAYOUT`.

# %%
#| export
LAYER_LAYOUT = {  # the settings of each layer type, in file order, and how each is written
    "Linear": (("in", "uint"), ("out", "uint"), ("bias", "flag")),
    "Conv2d": (("in", "uint"), ("out", "uint"), ("kernel", "pair"), ("stride", "pair"), ("padding", "pair"),
               ("bias", "flag")),
    "MaxPool2d": (("kernel", "pair"), ("stride", "pair")),
    "Flatten": (("start_dim", "int"),),
    "Dropout": (("p", "float"),),
    "Softmax": (("dim", "int"),),
    "ReLU": (), "Sigmoid": (), "Tanh": (),
}


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


def _architecture_bytes(spec: dict) -> bytes:
    "The layer tree `spec` (from `_layer_spec`) in version 2's encoding."
    kind = spec["type"]
    out = _varint(LAYER_TYPES.index(kind))
    if kind == "Sequential":
        names = spec["names"]
        numbered = names == [str(i) for i in range(len(names))]   # Sequential(a, b, ...) names them so
        out += _varint(len(names)) + bytes([0 if numbered else 1])
        if not numbered:
            for name in names:
                raw = name.encode("utf-8")
                out += _varint(len(raw)) + raw
        return out + b"".join(_architecture_bytes(child) for child in spec["layers"])
    for field, how in LAYER_LAYOUT[kind]:
        value = spec[field]
        if how == "uint":
            out += _varint(value)
        elif how == "pair":
            out += _varint(value[0]) + _varint(value[1])
        elif how == "flag":
            out += bytes([int(value)])
        elif how == "int":
            out += _varint(_zigzag(value))
        else:
            out += struct.pack("<d", value)
    return out

# %%
_mlp = Sequential(Linear(64, 256), ReLU(), Linear(256, 10))
assert _architecture_bytes(_layer_spec(_mlp)) == bytes([0, 3, 0,  1, 64, 0x80, 0x02, 1,  7,  1, 0x80, 0x02, 10, 1])
print(f"✓ the architecture of a 64-256-10 MLP in {len(_architecture_bytes(_layer_spec(_mlp)))} bytes "
      f"(as JSON: {len(json.dumps(_layer_spec(_mlp), separators=(',', ':')))})")

# %% [markdown]
# Then each parameter: its header fields (`_entry_fields`) and its payload, where every stream of
# symbols goes through `_symbol_bytes`, the one place that decides fixed width or Huffman.

# %%
#| export
def _symbol_bytes(symbols: np.ndarray, bits: int, coding: str) -> tuple[bytes, bool]:
    """A stream of `bits`-bit symbols as stored, and whether it is Huffman-coded: packed at the fixed
    width, or with `coding="huffman"` the smaller of that and the Huffman stream (fixed on a tie)."""
    fixed = pack_bits(symbols, bits).tobytes()
    if coding == "fixed" or symbols.size == 0:
        return fixed, False
    data, lengths, _ = huffman_encode(symbols)
    table = encode_lengths(lengths).tobytes()
    coded = _varint(len(table)) + _varint(data.size) + table + data.tobytes()
    return (coded, True) if len(coded) < len(fixed) else (fixed, False)


def _has_symbols(entry: dict) -> bool:
    "Whether an entry's values are integer symbols (affine codes, codebook indices) rather than floats."
    return "codebook" in entry["arrays"] or entry["bits"] <= 8


def _entry_layout(entry: dict, coding: str) -> tuple[list, list]:
    "`(header fields, [(part, bytes)])` of an entry in version 2; part is 'scales', 'values' or 'indices'."
    arrays, count, index = entry["arrays"], entry["count"], entry["index"]
    chunks = []
    if "codebook" in arrays:
        chunks.append(("scales", arrays["codebook"].astype("<f4").tobytes()))
    elif "scale" in arrays:
        chunks.append(("scales", arrays["scale"].astype("<f4").tobytes()))
    if _has_symbols(entry):
        codes = unpack_bits(arrays["values"], entry["bits"], count)
        values, coded_values = _symbol_bytes(codes, entry["bits"], coding)
    else:
        values, coded_values = arrays["values"].astype("<f4" if entry["bits"] == 32 else "<f2").tobytes(), False
    chunks.append(("values", values))
    coded_positions = False
    if index == "csr":
        chunks.append(("indices", arrays["indices"].astype("<i4").tobytes() + arrays["indptr"].astype("<i4").tobytes()))
    elif index == "bitmask":
        chunks.append(("indices", arrays["bitmask"].tobytes()))
    elif index in ("delta", "nm"):
        packed = arrays["deltas" if index == "delta" else "positions"]
        stream, coded_positions = _symbol_bytes(unpack_bits(packed, entry["index_bits"], count),
                                                entry["index_bits"], coding)
        chunks.append(("indices", stream))
    flags = STORED_FORMATS.index(index)
    flags |= PER_CHANNEL if "scale" in arrays and arrays["scale"].size > 1 else 0
    flags |= (CODEBOOK if "codebook" in arrays else 0) | (CODED_VALUES if coded_values else 0)
    flags |= CODED_POSITIONS if coded_positions else 0
    fields = [flags, arrays["codebook"].size if "codebook" in arrays else entry["bits"]]
    if index == "delta":
        fields.append(entry["index_bits"])
    if index == "nm":
        fields += [entry["n"], entry["m"]]
    if index in ("csr", "bitmask", "delta"):   # dense and N:M counts follow from the shape
        fields.append(count)
    return fields, chunks

# %%
_codes = np.array([3] * 60 + [0, 1, 2, 4])
_fixed, _coded = _symbol_bytes(_codes, 4, "fixed"), _symbol_bytes(_codes, 4, "huffman")
assert _fixed == (pack_bits(_codes, 4).tobytes(), False) and _coded[1] and len(_coded[0]) < len(_fixed[0])
assert _symbol_bytes(np.array([1, 2]), 4, "huffman") == (bytes([0x12]), False)   # a table costs more than 1 byte
print(f"✓ 64 skewed 4-bit codes: {len(_fixed[0])} bytes packed, {len(_coded[0])} Huffman-coded (table included)")

# %%
#| export
class CompressedModel:
    """A pruned, quantized model as a file stores it: compressed weights, biases, the architecture.

    `coding`: "fixed" (symbols packed at their width) or "huffman" (each stream of symbols
    Huffman-coded where that is smaller). `version`: the file format `save` writes (2, or 1 for
    the old JSON header, which stores neither Huffman streams, N:M nor codebook entries).
    Raises ValueError for an unknown coding or version.
    """

    def __init__(self, architecture: dict, weights: dict, biases: dict, coding: str = "fixed",
                 version: int = FORMAT_VERSION):
        if coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
        if version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        self.architecture, self.weights, self.biases = architecture, weights, biases
        self.coding, self.version = coding, version
        self._model = None

    def _v1_arrays(self) -> list:
        "(key, category, array) of everything a version 1 file stores, in file order."
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

    def _v1_layout(self) -> tuple[bytes, list]:
        entries = {**self.weights, **self.biases}
        if self.coding != "fixed" or any(e["index"] == "nm" or "codebook" in e["arrays"] for e in entries.values()):
            raise ValueError("a version 1 file stores neither Huffman-coded streams, N:M entries nor codebooks; "
                             "save it as version 2")

        def meta(group):
            return {name: {k: v for k, v in entry.items() if k != "arrays"} for name, entry in group.items()}
        arrays = self._v1_arrays()
        header = {"version": 1, "architecture": self.architecture,
                  "weights": meta(self.weights), "biases": meta(self.biases),
                  "arrays": [[key, array.dtype.str, list(array.shape)] for key, _, array in arrays]}
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        return zlib.compress(text, 9), [(category, np.ascontiguousarray(a).tobytes()) for _, category, a in arrays]

    def _layout(self) -> tuple[bytes, list]:
        "`(header, [(category, bytes)])`: the header after the length field, and the payload in file order."
        if self.version == 1:
            return self._v1_layout()
        entries = {**self.weights, **self.biases}
        header, payload = [bytes([2]), _architecture_bytes(self.architecture)], []
        for name in _parameter_shapes(self.architecture):      # the order the loader expects
            fields, chunks = _entry_layout(entries[name], self.coding)
            header += [_varint(field) for field in fields]
            payload += [("biases" if name in self.biases else part, data) for part, data in chunks]
        return b"".join(header), payload

    def to_bytes(self) -> bytes:
        header, payload = self._layout()
        data = MAGIC + len(header).to_bytes(4, "little") + header + b"".join(data for _, data in payload)
        return data if self.version == 1 else data + zlib.crc32(data).to_bytes(4, "little")

    @property
    def nbytes(self) -> int:
        "Size of the file `save` writes."
        return len(self.to_bytes())

    def breakdown(self) -> dict:
        """Bytes of the file by part: values, indices, scales (scales and codebooks), biases, header (magic,
        length and checksum included). A Huffman stream's table and sizes count in the part it serves. They sum to `nbytes`."""
        header, payload = self._layout()
        parts = {"values": 0, "indices": 0, "scales": 0, "biases": 0}
        for category, data in payload:
            parts[category] += len(data)
        parts["header"] = len(MAGIC) + 4 + len(header) + (4 if self.version == 2 else 0)  # version 2: the CRC
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

# %% [markdown]
# ## Reading a file back, and refusing a bad one
#
# The checks below run in the order `load_compressed` makes them. Nothing a file says is used (to
# allocate, to index, to build a layer) before it has been checked, and every size is checked
# against the bytes the file really holds before anything of that size is read.

# %%
#| export
class _Refused(ValueError):
    "What `_check` raises; `load_compressed` turns it into a ValueError that also names the file."


def _check(ok, problem: str) -> None:
    "Refuse the file unless `ok`; `problem` says in words what is wrong with it."
    if not ok:
        raise _Refused(problem)


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
    return lambda v: isinstance(v, list) and len(v) == 2 and all(is_int(x) and minimum <= x <= MAX_PARAMETERS
                                                                 for x in v)


# Sizes are capped, so the products of sizes below stay small numbers (and print in a message).
_POSITIVE = (lambda v: is_int(v) and 0 < v <= MAX_PARAMETERS, "a positive int")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_INT = (is_int, "an int")
_LAYER_FIELDS = {  # every layer type `_layer_spec` writes: {setting: (test, what it must be)}
    "Linear": {"in": _POSITIVE, "out": _POSITIVE, "bias": _BOOL},
    "Conv2d": {"in": _POSITIVE, "out": _POSITIVE, "kernel": (_pair(1), "two positive ints"),
               "stride": (_pair(1), "two positive ints"), "padding": (_pair(0), "two ints >= 0"), "bias": _BOOL},
    "MaxPool2d": {"kernel": (_pair(1), "two positive ints"), "stride": (_pair(1), "two positive ints")},
    "Flatten": {"start_dim": _INT},
    "Dropout": {"p": (lambda v: is_real(v) and 0 <= v <= 1,
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
    _check(isinstance(meta["shape"], list) and all(is_int(d) for d in meta["shape"]) and meta["shape"] == shape,
           f"{where}: shape {_brief(meta['shape'])} is not the architecture's {shape}")
    _check(isinstance(index, str) and index in INDEX_FORMATS, f"{where}: unknown index format {_brief(index)}")
    _check(is_int(bits) and (bits in (32, 16) or 2 <= bits <= 8),
           f"{where}: bits must be 32, 16 or 2..8, got {_brief(bits)}")
    _check(is_int(index_bits) and (index != "delta" or 1 <= index_bits <= 16),
           f"{where}: index_bits must be an int (1..16 for delta), got {_brief(index_bits)}")
    size = math.prod(shape)
    _check(is_int(count) and 0 <= count <= size,
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


def _check_contents(name: str, entry: dict) -> None:
    "The positions and codebook indices an entry stores lie inside its weight and codebook: decompressing cannot fail."
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
    elif index == "nm" and count:
        places = unpack_bits(arrays["positions"], entry["index_bits"], count).reshape(-1, entry["n"])
        _check(places.max() < entry["m"] and np.all(np.diff(places, axis=1) > 0),
               f"{where}: N:M positions must rise within each group and lie in 0..{entry['m'] - 1}")
    if "codebook" in arrays and count:
        largest = int(unpack_bits(arrays["values"], entry["bits"], count).max())
        _check(largest < arrays["codebook"].size,
               f"{where}: codebook index {largest} is outside its codebook of {arrays['codebook'].size} centroids")


class _Reader:
    "Reads a version 2 header or payload front to back; a read past the end refuses the file as truncated."

    def __init__(self, data, part: str):
        self.data, self.at, self.part = memoryview(data), 0, part

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def take(self, n: int, what: str) -> memoryview:
        _check(n <= self.left, f"truncated inside the {self.part}: {n:,} bytes for {what}, {self.left:,} left")
        self.at += n
        return self.data[self.at - n:self.at]

    def varint(self, what: str) -> int:
        value = 0
        for i in range(9):                      # 9 bytes hold 63 bits: any size a file can honestly need
            _check(self.left > 0, f"truncated inside the {self.part}: its varint for {what} is cut short")
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                # `_varint` never ends with a zero byte: 0x80 0x00 would be a second spelling of 0
                _check(byte or i == 0, f"bad varint for {what} in the {self.part}: it ends with a redundant zero byte")
                return value
        raise _Refused(f"bad varint for {what} in the {self.part}: longer than 9 bytes")

    def flag(self, what: str) -> bool:
        byte = self.take(1, what)[0]
        _check(byte in (0, 1), f"{what} must be 0 or 1, got {byte}")
        return bool(byte)

    def array(self, dtype: str, n: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(n * np.dtype(dtype).itemsize, what), dtype=dtype).copy()


def _read_layer(r: _Reader, prefix: str = "", depth: int = 0) -> dict:
    "The layer spec that `_architecture_bytes` wrote; its settings are checked later by `_parameter_shapes`."
    where = f"layer {prefix!r}" if prefix else "the architecture"
    code = r.varint(f"the type of {where}")
    _check(code < len(LAYER_TYPES), f"{where} has an unknown layer type (code {code:,})")
    kind = LAYER_TYPES[code]
    if kind == "Sequential":
        _check(depth < MAX_DEPTH, f"the architecture nests Sequentials more than {MAX_DEPTH} deep")
        count = r.varint(f"the number of layers of {where}")
        _check(count <= r.left, f"{where} claims {count:,} layers, more than the {r.left:,} header bytes left")
        if not r.flag(f"{where}: 'names' (numbered or not)"):
            names = [str(i) for i in range(count)]
        else:
            names = []
            for _ in range(count):
                raw = bytes(r.take(r.varint(f"a layer name's length in {where}"), f"a layer name in {where}"))
                try:
                    names.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Refused(f"{where}: a layer name is not UTF-8 text") from None
        layers = [_read_layer(r, f"{prefix}.{name}" if prefix else name, depth + 1) for name in names]
        return {"type": "Sequential", "names": names, "layers": layers}
    spec = {"type": kind}
    for field, how in LAYER_LAYOUT[kind]:
        what = f"{where} ({kind}) {field!r}"
        if how == "uint":
            spec[field] = r.varint(what)
        elif how == "pair":
            spec[field] = [r.varint(what), r.varint(what)]
        elif how == "flag":
            spec[field] = r.flag(what)
        elif how == "int":
            z = r.varint(what)
            spec[field] = z >> 1 if z % 2 == 0 else -((z + 1) >> 1)
        else:
            spec[field] = struct.unpack("<d", r.take(8, what))[0]
    return spec


def _read_fields(r: _Reader, name: str, shape: list) -> tuple[dict, int, int]:
    "`(entry fields, flags, codebook size or 0)` of parameter `name`, every field checked."
    where = f"entry {name!r}"
    flags = r.varint(f"the flags of {where}")
    _check(flags < 128 and flags & 7 < len(STORED_FORMATS),
           f"{where}: unknown flags {flags} (an unknown index format or setting)")
    index, centroids = STORED_FORMATS[flags & 7], 0
    if flags & CODEBOOK:
        centroids = r.varint(f"the codebook size of {where}")
        _check(1 <= centroids <= MAX_CODEBOOK,
               f"{where}: a codebook must hold 1 to {MAX_CODEBOOK} centroids, got {centroids:,}")
        bits = max(1, (centroids - 1).bit_length())   # the width of one index
    else:
        bits = r.varint(f"the bits of {where}")
        _check(bits in (32, 16) or 2 <= bits <= 8, f"{where}: bits must be 32, 16 or 2..8, got {bits:,}")
    symbols = bool(flags & CODEBOOK) or bits <= 8
    _check(not flags & PER_CHANNEL or (symbols and not flags & CODEBOOK),
           f"{where}: flags {flags}: per-channel scales need affine codes")
    _check(not flags & CODED_VALUES or symbols, f"{where}: flags {flags}: {bits}-bit floats cannot be Huffman-coded")
    _check(not flags & CODED_POSITIONS or index in ("delta", "nm"),
           f"{where}: flags {flags}: {index} positions cannot be Huffman-coded (only delta and N:M ones)")
    size = math.prod(shape)
    fields = {"shape": list(shape), "index": index, "bits": bits, "index_bits": 8, "count": size}
    if index == "delta":
        fields["index_bits"] = r.varint(f"the index_bits of {where}")
        _check(1 <= fields["index_bits"] <= 16, f"{where}: index_bits must be 1..16 for delta, got {fields['index_bits']:,}")
    if index == "nm":
        n, m = r.varint(f"the N:M n of {where}"), r.varint(f"the N:M m of {where}")
        row = size // shape[0]
        _check(len(shape) >= 2 and 2 <= m <= min(row, 1 << 16) and row % m == 0 and 1 <= n <= m,
               f"{where}: N:M needs 1 <= n <= m, 2 <= m <= 65,536 and m dividing the rows of its shape {shape}, "
               f"got n={n:,}, m={m:,}")
        fields |= {"n": n, "m": m, "index_bits": (m - 1).bit_length(), "count": size // m * n}
    if index in ("csr", "bitmask", "delta"):
        count = r.varint(f"the count of {where}")
        _check(count <= size, f"{where}: count must be an int in [0, {size:,}], got {count:,}")
        fields["count"] = count
    _check(index != "csr" or len(shape) >= 2, f"{where}: a CSR entry needs a 2-d (or larger) shape, got {shape}")
    return fields, flags, centroids


def _read_symbols(r: _Reader, count: int, bits: int, alphabet: int, coded: bool, what: str) -> np.ndarray:
    "`count` symbols below `alphabet`, packed with `bits` bits as `compress_weight` holds them."
    if not coded:
        return r.array("|u1", -(-count * bits // 8), what)
    table_size = r.varint(f"the Huffman table size of {what}")
    data_size = r.varint(f"the Huffman data size of {what}")
    # No code is longer than MAX_CODE_LENGTH bits; the decoder's memory grows with the data's size.
    _check(data_size <= -(-count * MAX_CODE_LENGTH // 8),
           f"{what}: {data_size:,} bytes of Huffman data are more than {count:,} codes can fill")
    table, data = r.take(table_size, f"the Huffman table of {what}"), r.take(data_size, f"the Huffman data of {what}")
    try:
        lengths = decode_lengths(table)
    except ValueError as error:
        raise _Refused(f"{what}: bad Huffman table ({error})") from None
    _check(lengths.size <= alphabet,
           f"{what}: bad Huffman table: it codes {lengths.size:,} symbols, the stream has only {alphabet:,}")
    try:
        symbols = huffman_decode(data, lengths, count)
    except ValueError as error:
        raise _Refused(f"{what}: bad Huffman data ({error})") from None
    return pack_bits(symbols, bits)


def _read_arrays(r: _Reader, name: str, fields: dict, flags: int, centroids: int) -> dict:
    "The arrays of one entry, read from the payload in `_entry_layout`'s order."
    where, count, bits, shape = f"entry {name!r}", fields["count"], fields["bits"], fields["shape"]
    arrays = {}
    if flags & CODEBOOK:
        arrays["codebook"] = r.array("<f4", centroids, f"{where} codebook")
    elif bits <= 8:
        arrays["scale"] = r.array("<f4", shape[0] if flags & PER_CHANNEL else 1, f"{where} scales")
    if flags & CODEBOOK or bits <= 8:
        alphabet = centroids or 1 << bits
        arrays["values"] = _read_symbols(r, count, bits, alphabet, bool(flags & CODED_VALUES), f"{where} values")
    else:
        arrays["values"] = r.array("<f4" if bits == 32 else "<f2", count, f"{where} values")
    index, index_bits = fields["index"], fields["index_bits"]
    if index == "csr":
        arrays["indices"] = r.array("<i4", count, f"{where} CSR columns")
        arrays["indptr"] = r.array("<i4", shape[0] + 1, f"{where} CSR row offsets")
    elif index == "bitmask":
        arrays["bitmask"] = r.array("|u1", -(-math.prod(shape) // 8), f"{where} bitmask")
    elif index in ("delta", "nm"):
        alphabet = fields["m"] if index == "nm" else 1 << index_bits
        arrays["deltas" if index == "delta" else "positions"] = _read_symbols(
            r, count, index_bits, alphabet, bool(flags & CODED_POSITIONS), f"{where} positions")
    return arrays


def _parse_v2(blob: memoryview, payload: memoryview, data: bytes) -> CompressedModel:
    "A version 2 file from its header (after the length field), payload and CRC, and all its bytes."
    _check(len(payload) >= 4, "truncated: no room for the 4-byte checksum after the header")
    payload, crc = payload[:-4], int.from_bytes(payload[-4:], "little")
    header = _Reader(blob, "header")
    header.take(1, "the version")                      # checked by `_parse`
    architecture = _read_layer(header)
    shapes = _parameter_shapes(architecture)
    total = sum(math.prod(shape) for shape in shapes.values())
    _check(total <= MAX_PARAMETERS, f"the architecture has {total:,} parameters, more than {MAX_PARAMETERS:,}")
    layouts = {name: _read_fields(header, name, shape) for name, shape in shapes.items()}
    _check(header.left == 0, f"the header has {header.left:,} unexpected bytes after its last field")
    body = _Reader(payload, "payload")
    entries = {name: {**fields, "arrays": _read_arrays(body, name, fields, flags, centroids)}
               for name, (fields, flags, centroids) in layouts.items()}
    _check(body.left == 0, f"{body.left:,} unexpected bytes after the payload")
    for name, entry in entries.items():
        _check_contents(name, entry)
    # Last: the structure above names what is wrong more precisely than a checksum can.
    _check(zlib.crc32(memoryview(data)[:-4]) == crc,
           "checksum mismatch: the CRC-32 at the end does not match the file's bytes (damaged)")
    coded = any(flags & (CODED_VALUES | CODED_POSITIONS) for _, flags, _ in layouts.values())
    weights = {name: e for name, e in entries.items() if name.rpartition(".")[2] == "weight"}
    biases = {name: e for name, e in entries.items() if name not in weights}
    return CompressedModel(architecture, weights, biases, coding="huffman" if coded else "fixed", version=2)


def _parse(data: bytes) -> CompressedModel:
    "The model stored in the bytes of a file; `_Refused` (a ValueError) if they are not a valid file."
    # 1. The preamble: magic, header length, header, payload, every byte accounted for.
    _check(len(data) > 0, "empty file")
    _check(len(data) >= len(MAGIC) or not MAGIC.startswith(data), f"truncated inside the magic ({len(data)} bytes)")
    _check(data[:4] == MAGIC, f"not a compressed tinytorch model (expected magic {MAGIC!r}, got {data[:4]!r})")
    _check(len(data) >= 8, f"truncated inside the header length ({len(data)} bytes)")
    size = int.from_bytes(data[4:8], "little")
    _check(8 + size <= len(data), f"truncated: the header length says {size:,} bytes, only {len(data) - 8:,} follow")
    blob, payload = memoryview(data)[8:8 + size], memoryview(data)[8 + size:]
    # A binary header starts with its version, a byte below 8; a zlib stream (version 1) never does.
    if len(blob) and blob[0] < 8:
        _check(blob[0] == FORMAT_VERSION,
               f"unsupported format version {blob[0]} (this tinytorch reads versions 1 and {FORMAT_VERSION})")
        return _parse_v2(blob, payload, data)
    return _parse_v1(blob, payload)


def _parse_v1(blob: memoryview, payload: memoryview) -> CompressedModel:
    "A version 1 file from its deflated JSON header and payload."

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
    _check(is_int(version) and version == 1, f"unsupported format version {_brief(version)} in a JSON header "
           "(JSON headers are version 1; version 2 headers are binary)")
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
        _check(isinstance(shape, list) and len(shape) <= 32 and all(is_int(d) and 0 <= d < 2**63 for d in shape),
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
            _check_contents(name, entry)
    return CompressedModel(header["architecture"], entries["weights"], entries["biases"], version=1)


def load_compressed(path) -> CompressedModel:
    """Read a `.ttcz` file written by `CompressedModel.save` (format version 2, or version 1).

    Error contract: a file that `save` did not write, or that was cut short or damaged since,
    raises `ValueError` (never another exception) with the message "<path>: <what is wrong>",
    found before anything the file claims is allocated or used. What is wrong is one of:
    - the bytes: "empty file"; "truncated" (inside the magic, the header length, the header or
      the payload); "not a compressed tinytorch model" (wrong magic); "unexpected bytes after
      the payload"; "unsupported format version" (a binary header starts with its version byte,
      2; a file without one is version 1, whose header is deflated JSON); a version 2 file whose
      bytes do not match its CRC-32 ("checksum mismatch"), checked after everything else;
    - a version 2 header: a "bad varint" (longer than 9 bytes, or ending with a redundant zero
      byte); "unexpected bytes after its last field"; a Sequential that "claims" more layers
      than the header has bytes; a layer name that is "not UTF-8"; "unknown flags"; a flag byte
      or setting that "must be" 0 or 1 or in its range; per-channel scales on values that are
      not affine codes ("need affine codes"); a stream that "cannot be Huffman-coded"; a
      "codebook must hold" 1 to `MAX_CODEBOOK` centroids; "N:M needs" 1 <= n <= m with m
      dividing the rows;
    - a version 2 payload: a "bad Huffman table" (damaged, or coding more symbols than the stream
      has); "bad Huffman data" (truncated, an invalid code, trailing bits); Huffman data "more
      than" its codes can fill;
    - a version 1 header: "not zlib data"; "not one complete zlib stream"; "inflates to more
      than" `MAX_HEADER_BYTES` bytes (a decompression bomb); "not JSON"; "not a JSON object";
      "missing key(s)"; "unexpected key(s)"; a value that "must be" another type or range;
      a "dtype" outside `DTYPES`; a "shape" that is not a list of ints >= 0; an array
      "listed twice", "unexpected" or "missing"; an array that is not the dtype and length
      "expected" by its entry's fields;
    - the model (both versions): an "unknown layer type" or "unknown index format"; Sequentials
      nested more than `MAX_DEPTH` "deep"; more than `MAX_PARAMETERS` "parameters"; stored
      parameters or shapes that are "not the architecture's"; index positions outside the weight
      ("CSR" offsets or columns, a "bitmask" with the wrong count, deltas "beyond the weight",
      "N:M positions" that do not rise within their group); a "codebook index" outside its codebook.
    `load_compressed` holds the file and at most `MAX_HEADER_BYTES` more (or, for Huffman streams,
    a few dozen bytes per bit of coded data the file holds) before the checks pass, and nothing in
    the file runs (varints, JSON and raw bytes only, never pickle). A model it returns decompresses
    without error. A file that cannot be read at all raises `OSError`, as `open` does.
    """
    try:
        return _parse(Path(path).read_bytes())
    except _Refused as problem:
        raise ValueError(f"{path}: {problem}") from None

# %%
import tempfile

_net = Sequential(Linear(8, 6), ReLU(), Linear(6, 3))
_entries = {n: {"shape": list(p.data.shape), "index": "dense", "bits": 32, "index_bits": 8, "count": p.data.size,
                "arrays": {"values": p.data.ravel().astype(np.float32)}} for n, p in _net.named_parameters()}
_cm = CompressedModel(_layer_spec(_net), {n: e for n, e in _entries.items() if n.endswith("weight")},
                      {n: e for n, e in _entries.items() if n.endswith("bias")})
with tempfile.TemporaryDirectory() as _tmp:
    _path = Path(_tmp) / "net.ttcz"
    _written = _cm.save(_path)
    _again = load_compressed(_path).decompress()
    assert all(np.array_equal(a.data, b.data) for a, b in zip(_again.parameters(), _net.parameters()))
    assert _written == sum(_cm.breakdown().values()) == _path.stat().st_size
    for _bad in (_path.read_bytes()[:-1], _path.read_bytes() + b"\0", b"TTCZ\x01\0\0\0\x03"):
        _path.write_bytes(_bad)
        try:
            load_compressed(_path)
            raise AssertionError("a damaged file loaded")
        except ValueError as error:
            print(f"  refused: ...{str(error)[len(str(_path)):][:90]}")
print(f"✓ a float32 MLP round-trips through a {_written}-byte file "
      f"(header {_cm.breakdown()['header']} bytes); damaged copies are refused")

# %% [markdown]
# ## Measured: what each part of the file costs
#
# The lesson's best MLP file: the digits MLP pruned to 95% by iterative pruning with fine-tuning,
# 4-bit values, 6-bit deltas, INT8 biases. The same model, written three ways: version 1 (JSON
# header), version 2 with fixed-width streams, and version 2 with `coding="huffman"`. Every
# number is `breakdown()` of the file, whose parts sum to its size.

# %%
import copy

from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model
from tinytorch.compression.nm import nm_prune
from tinytorch.compression.pipeline import compress
from tinytorch.compression.prune import iterative_prune, magnitude_prune
from tinytorch.data.loader import digits_loaders

train_flat, _ = digits_loaders(batch_size=64, seed=0)
mlp = digits_mlp(seed=0)
train_digits_model(mlp, epochs=5, seed=0)
nm_mlp = copy.deepcopy(mlp)          # for the N:M example below
iterative_prune(mlp, train_flat, 0.95, steps=4, epochs_per_step=2, progress=False)
SETTINGS = dict(sparsity=None, bits=4, index="delta", index_bits=6, bias_bits=8, coding="fixed")
files = {"version 1 (JSON header)": compress(mlp, **SETTINGS),
         "version 2, fixed": compress(mlp, **SETTINGS),
         "version 2, huffman": compress(mlp, **{**SETTINGS, "coding": "huffman"})}
files["version 1 (JSON header)"].version = 1
parts = ("values", "indices", "scales", "biases", "header")
print(f"{'digits MLP, 95%, 4-bit':<26}" + "".join(f"{p:>9}" for p in parts) + f"{'file':>9}")
for label, cm in files.items():
    split = cm.breakdown()
    assert sum(split.values()) == cm.nbytes
    print(f"{label:<26}" + "".join(f"{split[p]:>9,}" for p in parts) + f"{cm.nbytes:>9,}")

cnn = magnitude_prune(digits_cnn(seed=0), 0.95)
cnn_headers = {}
for version in (1, 2):
    cm = compress(cnn, **SETTINGS)
    cm.version = version
    cnn_headers[version] = cm.breakdown()["header"]
mlp_headers = {v: files[label].breakdown()["header"] for v, label in ((1, "version 1 (JSON header)"), (2, "version 2, fixed"))}
assert mlp_headers[2] < 80 and cnn_headers[2] < 100
print(f"header bytes, version 1 -> 2: MLP {mlp_headers[1]} -> {mlp_headers[2]}, CNN {cnn_headers[1]} -> {cnn_headers[2]}")

# %% [markdown]
# What the table says:
#
# - **The header** shrinks about sixfold: what is left is the architecture (about 20 bytes for
#   the MLP) and a handful of varints per parameter. On the CNN, whose file is much smaller,
#   that is a larger share of the file.
# - **Huffman coding** saves on both big streams. The 4-bit values of a trained layer bunch
#   around small magnitudes, and at 95% sparsity short gaps are common (and the fillers of long
#   gaps are all the same symbol), so both have an entropy well below their fixed width. The
#   INT8 biases (256 + 128 + 10 codes over up to 256 symbols) and the tiny last layer gain
#   little or nothing: there `compress` keeps the fixed width, because the table would cost more.
#
# **N:M positions.** A 2:4 sparse layer needs no gaps at all: each stored value's place in its
# group of four takes 2 bits. Here the trained MLP is pruned 2:4 (without fine-tuning, just to
# count bytes) and stored with delta indices, then with `nm=(2, 4)`.

# %%
nm_prune(nm_mlp, 2, 4)
for label, cm in (("2:4, 4-bit, 6-bit deltas", compress(nm_mlp, **SETTINGS)),
                  ("2:4, 4-bit, N:M positions", compress(nm_mlp, nm=(2, 4), **SETTINGS))):
    split = cm.breakdown()
    print(f"{label:<26} indices {split['indices']:>6,}  values {split['values']:>6,}  file {cm.nbytes:>6,}")
