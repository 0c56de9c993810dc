# %% [markdown]
# # Module 18 (given): Entropy coding
#
# > Huffman coding of small-integer symbols (quantized weight codes, position deltas): length-limited canonical codes, a compact lengths table, and an exact table-driven decoder that refuses damaged input.

# %% [markdown]
# This is a **given** notebook: library code for you to read, not to edit. The compressed file of
# the main lesson stores every quantized weight in the same number of bits (4 bits, say) and every
# position delta in `index_bits` bits. That is wasteful whenever some values are far more common
# than others. Here we measure how wasteful, and build the classic fix: **Huffman coding**, which
# gives common symbols short codes and rare symbols long ones.
#
# You will see:
#
# 1. the entropy: the fewest bits per symbol any symbol-by-symbol code can reach,
# 2. Huffman's algorithm for the code lengths, with a cap on the longest code,
# 3. canonical codes, so that a file only needs to store the code *lengths*,
# 4. a vectorised encoder and a table-driven decoder that never trusts its input,
# 5. what it all saves on a pruned, 4-bit digits MLP.

# %%
#| default_exp compression.entropy

# %%
#| export
import heapq

import numpy as np

from tinytorch.core.checks import is_int

# %%
import time
import zlib

# %% [markdown]
# ## 1. How many bits does a symbol need?
#
# Suppose a layer's 4-bit codes take 16 values, but code 8 appears half of the time and the
# others share the rest. A fixed-width code spends 4 bits on each, whatever its frequency.
# Shannon's **entropy** says what the frequencies allow: if symbol `s` has probability `p_s`,
#
# $$H = -\sum_s p_s \log_2 p_s \quad\text{bits per symbol}$$
#
# and no code that writes one codeword per symbol can average fewer bits. Uniform symbols
# give `H = log2(16) = 4` bits (the fixed width is then optimal); concentrated ones give less.

# %%
#| export
MAX_CODE_LENGTH = 15     # longest Huffman code; also what a 4-bit entry of the lengths table can hold
MAX_ALPHABET = 1 << 16   # symbols are integers in [0, 65536): 16-bit delta codes at most


def _check_counts(counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
        raise ValueError(f"counts must be a 1-d array of integers, got shape {counts.shape} and dtype {counts.dtype}")
    if counts.size > MAX_ALPHABET:
        raise ValueError(f"counts must cover at most {MAX_ALPHABET} symbols, got {counts.size}")
    if counts.size and counts.min() < 0:
        raise ValueError(f"counts must be non-negative, got {counts.min()}")
    return counts.astype(np.int64)


def entropy(counts) -> float:
    """Shannon entropy in bits per symbol of a histogram (`counts[s]` occurrences of symbol `s`); 0.0 if empty.

    Raises ValueError unless `counts` is a 1-d array of non-negative integers.
    """
    counts = _check_counts(counts)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())

# %%
assert entropy([1, 1, 1, 1]) == 2.0                    # four equally likely symbols: 2 bits
assert entropy([8, 0, 0]) == 0.0                       # a certain symbol carries no information
assert abs(entropy([2, 1, 1]) - 1.5) < 1e-12           # p = 1/2, 1/4, 1/4
assert entropy([]) == 0.0
for bad in ([-1, 2], [[1, 2]], [0.5, 0.5]):
    try:
        entropy(bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"entropy({bad}) should raise ValueError")
print("✓ entropy: 2 bits for 4 equal symbols, 1.5 bits for p = (1/2, 1/4, 1/4)")

# %% [markdown]
# ## 2. Huffman's code lengths
#
# Huffman (1952) builds the best prefix code greedily: put every used symbol in a heap keyed by
# its count, then repeatedly **merge the two rarest** into one node whose count is their sum,
# until one node is left. A symbol's code length is the number of merges above it: its depth in
# the tree. Rare symbols are merged early and end up deep (long codes); common ones stay shallow.
#
# Worked example, counts `(5, 2, 1, 1)`: merge 1+1 -> 2, then 2+2 -> 4, then 4+5 -> 9.
# Depths: `(1, 2, 3, 3)`. Total bits: 5·1 + 2·2 + 1·3 + 1·3 = 15, which is also the sum of the
# merged counts 2 + 4 + 9: each merge adds one bit to every symbol below it.
#
# Only the alphabet is looped over in Python (at most 65536 symbols, usually 16 to 256), never
# the symbols themselves. We only need each node's parent: parents are created after their
# children, so one backward pass gives every depth.
#
# **Capping the length.** Huffman codes can get very long: counts that grow like the Fibonacci
# numbers `(1, 1, 2, 3, 5, 8, ...)` give a code of length n - 1 for n symbols. A decoder looks up
# the next `max_length` bits in a table of `2**max_length` entries, so we cap the length at 15
# bits with the adjustment of the JPEG standard (Annex K.3): while a code is too long, take two
# sibling codes at the deepest level, move one up to replace their parent and hang the other,
# together with a shorter leaf, below that shorter leaf. The Kraft sum stays exactly 1, and the
# shortest codes are then handed back to the most frequent symbols. It is not always the optimal
# length-limited code (package-merge is), but it is simple, and it only runs on skewed
# histograms that real layers do not produce: a 15-bit code needs a symbol ~1000x rarer than the
# most common one *and* a Fibonacci-like staircase in between.

# %%
#| export
def _check_max_length(max_length) -> int:
    if not is_int(max_length) \
            or not 1 <= max_length <= MAX_CODE_LENGTH:
        raise ValueError(f"max_length must be an int in [1, {MAX_CODE_LENGTH}], got {max_length!r}")
    return int(max_length)


def _limit_lengths(depths: np.ndarray, weights: np.ndarray, max_length: int) -> np.ndarray:
    "JPEG (Annex K.3) length limiting of a complete code: the new lengths, shortest to the heaviest symbols."
    bits = np.bincount(depths).tolist()                # bits[l]: how many codes have length l
    for i in range(len(bits) - 1, max_length, -1):
        while bits[i] > 0:                             # even: deepest codes come in sibling pairs
            j = i - 2
            while bits[j] == 0:                        # the deepest shorter leaf to split
                j -= 1
            bits[i] -= 2                               # two siblings leave level i ...
            bits[i - 1] += 1                           # ... one takes their parent's place
            bits[j + 1] += 2                           # ... the other and the split leaf sit below it
            bits[j] -= 1
    new = np.repeat(np.arange(max_length + 1), bits[:max_length + 1])
    out = np.empty_like(depths)
    out[np.argsort(-weights, kind="stable")] = new
    return out


def huffman_lengths(counts, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code length of each symbol (0 for symbols with count 0), at most `max_length` bits.

    One used symbol gets length 1; two or more get a complete code (sum of 2**-length == 1).
    Longer codes are shortened by the JPEG Annex K.3 adjustment. Returns int64, same size as `counts`.
    Raises ValueError for counts that are not a 1-d array of non-negative integers (at most 65536),
    for `max_length` outside [1, 15], or when more than 2**max_length symbols are used.
    """
    counts = _check_counts(counts)
    max_length = _check_max_length(max_length)
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    k = used.size
    if k <= 1:
        lengths[used] = 1                              # a lone symbol still needs one bit per occurrence
        return lengths
    if k > 1 << max_length:
        raise ValueError(f"{k} distinct symbols cannot have codes of at most max_length={max_length} bits")
    heap = list(zip(counts[used].tolist(), range(k)))  # (count, node); leaves are nodes 0..k-1
    heapq.heapify(heap)
    parent = [0] * (2 * k - 1)
    for node in range(k, 2 * k - 1):                   # node 2k - 2 is the root
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (w1 + w2, node))
    depth = [0] * (2 * k - 1)
    for node in range(2 * k - 3, -1, -1):              # a parent has a larger number than its children
        depth[node] = depth[parent[node]] + 1
    leaves = np.array(depth[:k], dtype=np.int64)
    if leaves.max() > max_length:
        leaves = _limit_lengths(leaves, counts[used], max_length)
    lengths[used] = leaves
    return lengths

# %%
assert huffman_lengths([5, 2, 1, 1]).tolist() == [1, 2, 3, 3]     # the worked example
assert huffman_lengths([0, 7, 0]).tolist() == [0, 1, 0]           # one symbol: one bit
assert huffman_lengths([3, 0, 3]).tolist() == [1, 0, 1]
assert huffman_lengths([1] * 8).tolist() == [3] * 8               # uniform: the fixed width
fib = [1, 1]
while len(fib) < 16:
    fib.append(fib[-1] + fib[-2])
free, capped = huffman_lengths(fib), huffman_lengths(fib, max_length=7)
assert free.tolist() == [15, 15] + list(range(14, 0, -1))        # a chain: one more bit per step
assert capped.max() == 7 and (2.0 ** -capped.astype(float)).sum() == 1.0   # capped, still complete
print(f"✓ Huffman lengths: (5, 2, 1, 1) -> (1, 2, 3, 3); 16 Fibonacci counts capped at 7 bits "
      f"cost {(capped * fib).sum() / (free * fib).sum() - 1:.1%} more bits than at 15")

# %% [markdown]
# ## 3. Canonical codes: store lengths, not codes
#
# Many codes have the same lengths. The **canonical** one is fixed by the lengths alone: sort the
# symbols by (length, symbol) and count upwards, appending zeros whenever the length grows. For
# lengths `(1, 2, 3, 3)` that gives `0`, `10`, `110`, `111`. The decoder rebuilds the very same
# codes from the lengths, so a file stores a small lengths table and nothing else.
#
# Vectorised: think of the `2**L` leaves at the deepest level `L`. In canonical order each code
# owns the next `2**(L - length)` of them, so its code is where its block starts, shifted right
# by `L - length`: a cumulative sum.
#
# Not every list of lengths is a prefix code. **Kraft's inequality** says one exists iff
# `sum 2**-length <= 1`; a sum above 1 is *over-subscribed* (some codes would collide), below 1
# the code is *incomplete* (some bit patterns mean nothing). Huffman codes are complete, so, like
# zlib, we refuse both, except for the single one-bit code of a one-symbol alphabet.

# %%
#| export
def _check_lengths(lengths) -> np.ndarray:
    "Code lengths as int64, refused (ValueError) unless they describe a complete prefix code."
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or (lengths.size and lengths.dtype.kind not in "iu"):
        raise ValueError(f"lengths must be a 1-d array of integers, "
                         f"got shape {lengths.shape} and dtype {lengths.dtype}")
    if lengths.size > MAX_ALPHABET:
        raise ValueError(f"lengths must cover at most {MAX_ALPHABET} symbols, got {lengths.size}")
    lengths = lengths.astype(np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_CODE_LENGTH):
        raise ValueError(f"code lengths must lie in [0, {MAX_CODE_LENGTH}], got {lengths.min()}..{lengths.max()}")
    used = lengths[lengths > 0]
    kraft = int((1 << (MAX_CODE_LENGTH - used)).sum())     # sum of 2**-length, in units of 2**-15
    if kraft > 1 << MAX_CODE_LENGTH:
        raise ValueError(f"lengths are over-subscribed: sum of 2**-length = {kraft / (1 << MAX_CODE_LENGTH):.6g} > 1, "
                         f"so some codes would collide")
    if used.size == 1 and used[0] != 1:
        raise ValueError(f"a single symbol must have code length 1, got {used[0]}")
    if used.size > 1 and kraft < 1 << MAX_CODE_LENGTH:
        raise ValueError(f"lengths are incomplete: sum of 2**-length = {kraft / (1 << MAX_CODE_LENGTH):.6g} < 1, "
                         f"a Huffman code always has 1")
    return lengths


def _canonical_order(lengths: np.ndarray) -> np.ndarray:
    "The used symbols sorted by (length, symbol): the order in which canonical codes count up."
    used = np.flatnonzero(lengths)
    return used[np.argsort(lengths[used], kind="stable")]


def canonical_codes(lengths) -> np.ndarray:
    """The canonical prefix code for `lengths`: `codes[s]` is symbol s's code, an integer of `lengths[s]` bits
    (0 where the length is 0). Raises ValueError unless `lengths` describe a complete prefix code
    (see `huffman_lengths`): 1-d integers in [0, 15], not over-subscribed, not incomplete.
    """
    lengths = _check_lengths(lengths)
    codes = np.zeros(lengths.size, dtype=np.int64)
    order = _canonical_order(lengths)
    if order.size == 0:
        return codes
    sorted_lengths = lengths[order]
    deepest = int(sorted_lengths.max())
    block = 1 << (deepest - sorted_lengths)            # leaves at the deepest level under each code
    codes[order] = (np.cumsum(block) - block) >> (deepest - sorted_lengths)
    return codes

# %%
assert canonical_codes([1, 2, 3, 3]).tolist() == [0b0, 0b10, 0b110, 0b111]
assert canonical_codes([3, 3, 2, 1]).tolist() == [0b110, 0b111, 0b10, 0b0]
assert canonical_codes([2, 0, 2, 2, 2]).tolist() == [0, 0, 1, 2, 3]
assert canonical_codes([0, 1]).tolist() == [0, 0] and canonical_codes([]).size == 0
for bad in ([1, 1, 1], [1, 2], [2], [16, 1], [-1, 1]):
    try:
        canonical_codes(bad)
    except ValueError as err:
        message = str(err)
    else:
        raise AssertionError(f"lengths {bad} should be refused")
print("✓ canonical codes for (1, 2, 3, 3): 0, 10, 110, 111; bad lengths refused, e.g.:", message)

# %% [markdown]
# ## 4. Encoding and decoding
#
# **Encoding** is pure array work: look up every symbol's code and length, then write each code's
# bits one after the other. Bit `b` of the output belongs to the symbol whose code covers it
# (`np.repeat` of the symbol index by its code length), and is the bit of that code at distance
# `end - 1 - b` from the code's last bit (`end` is a cumulative sum of the lengths). `np.packbits`
# turns the bits into bytes, most significant first; the last byte is padded with zeros.
#
# **Decoding** looks sequential: where symbol k+1 starts depends on symbol k's length. Two tricks
# make it array work anyway.
#
# - A lookup table over the next `L` bits (`L` = the longest code): all `2**L` bit patterns that
#   start with symbol s's code map to `(s, length)`. In canonical order these are consecutive
#   blocks, so the table is one `np.repeat`.
# - Compute, for *every* bit position `p`, where the next code would start if one started at `p`:
#   `next[p] = p + length[window(p)]`. The symbols start at `0, next[0], next[next[0]], ...`.
#   Squaring `next` six times (`next = next[next]`) jumps 64 codes at once, so Python walks only
#   `count / 64` steps to find every 64th start, and 63 vectorised steps fill in the others.
#
# The decoder will read files from disk, so it trusts nothing: it checks the lengths table, and
# bounds `count` by what the payload can hold *before* allocating anything of size `count`
# (every code is at least one bit: a damaged count cannot make it allocate more than 8 entries per
# payload byte). A bit pattern that is no code, a code that runs past the end, or bytes left over
# after the last symbol are all `ValueError`s.

# %%
#| export
def _check_symbols(symbols, alphabet: int) -> np.ndarray:
    symbols = np.asarray(symbols)
    if symbols.size and symbols.dtype.kind not in "iu":
        raise ValueError(f"symbols must be integers, got dtype {symbols.dtype}")
    symbols = symbols.astype(np.int64).ravel()
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        bad = symbols[(symbols < 0) | (symbols >= alphabet)][0]
        raise ValueError(f"symbols must lie in [0, {alphabet}) (the alphabet), got {bad}")
    return symbols


def _symbols_and_lengths(symbols, lengths, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    "Checked symbols and code lengths: the given lengths, or a Huffman code built from the symbols' counts."
    if lengths is None:
        symbols = _check_symbols(symbols, MAX_ALPHABET)
        return symbols, huffman_lengths(np.bincount(symbols), max_length)
    lengths = _check_lengths(lengths)
    return _check_symbols(symbols, lengths.size), lengths


def huffman_encode(symbols, lengths=None, max_length: int = MAX_CODE_LENGTH) -> tuple[np.ndarray, np.ndarray, int]:
    """Huffman-code integer `symbols` (any shape, read flat): returns `(data, lengths, count)`.

    `data` is a uint8 array of the concatenated canonical codes, most significant bit first, zero-padded
    to a byte; `lengths` the code lengths used (computed from the symbols' histogram with `huffman_lengths`
    unless given); `count` the number of symbols. `huffman_decode(data, lengths, count)` gives them back.
    Raises ValueError for non-integer symbols, symbols outside [0, 65536) or outside the alphabet
    `[0, len(lengths))`, a symbol whose length is 0 ("has no code"), and invalid `lengths`.
    """
    symbols, lengths = _symbols_and_lengths(symbols, lengths, max_length)
    count = int(symbols.size)
    if count == 0:
        return np.zeros(0, dtype=np.uint8), lengths, 0
    code_lengths = lengths[symbols]
    if code_lengths.min() == 0:
        raise ValueError(f"symbol {symbols[np.argmin(code_lengths)]} has no code (its length is 0)")
    codes = canonical_codes(lengths)[symbols]
    ends = np.cumsum(code_lengths)
    owner = np.repeat(np.arange(count), code_lengths)   # which symbol each output bit belongs to
    shift = ends[owner] - 1 - np.arange(int(ends[-1]))
    bits = ((codes[owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits), lengths, count


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    data = np.asarray(data)
    if data.ndim != 1 or (data.size and data.dtype != np.uint8):
        raise ValueError(f"data must be bytes or a 1-d uint8 array, got shape {data.shape} and dtype {data.dtype}")
    return data.astype(np.uint8, copy=False)


def huffman_decode(data, lengths, count: int) -> np.ndarray:
    """The `count` symbols (int64) that `huffman_encode` wrote into `data` with code `lengths`. Exact.

    Safe on untrusted input, and never allocates more than a few dozen bytes per payload bit. Raises
    ValueError for invalid `lengths` (over-subscribed, incomplete, out of range), a `count` that is not
    an int >= 0, a payload too short for `count` symbols ("truncated"), a bit pattern that is no code
    ("invalid code"), non-zero padding, or bytes left after the last symbol ("trailing").
    """
    lengths = _check_lengths(lengths)
    data = _as_bytes(data)
    if not is_int(count) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    count = int(count)
    nbits = 8 * data.size
    if count == 0:
        if data.size:
            raise ValueError(f"payload has {data.size} trailing byte(s) after 0 symbols")
        return np.zeros(0, dtype=np.int64)
    order = _canonical_order(lengths)
    if order.size == 0:
        raise ValueError(f"lengths hold no code, so {count} symbols cannot be decoded")
    sorted_lengths = lengths[order]
    if count * int(sorted_lengths[0]) > nbits:       # checked before any allocation of size count
        raise ValueError(f"payload truncated: {count} symbols need at least {count * int(sorted_lengths[0])} bits, "
                         f"the payload has {nbits}")
    deepest = int(sorted_lengths[-1])
    block = 1 << (deepest - sorted_lengths)
    table_symbol = np.zeros(1 << deepest, dtype=np.int64)
    table_length = np.zeros((1 << deepest) + 1, dtype=np.int64)   # 0: not a code; last entry: past the end
    table_symbol[:block.sum()] = np.repeat(order, block)
    table_length[:block.sum()] = np.repeat(sorted_lengths, block)

    index = np.int32 if nbits < 1 << 30 else np.int64
    bits = np.concatenate([np.unpackbits(data), np.zeros(deepest, dtype=np.uint8)]).astype(index)
    window = np.zeros(nbits + 1, dtype=index)        # the `deepest` bits starting at each position
    for k in range(deepest):
        window[:nbits] = (window[:nbits] << 1) | bits[k:k + nbits]
    window[nbits] = 1 << deepest                     # the end: length 0, stays there
    step = table_length[window]
    nxt = np.minimum(np.arange(nbits + 1, dtype=index) + step, nbits).astype(index)

    chunk = 64
    jump = nxt
    for _ in range(6):                               # jump[p]: the start 64 codes after p
        jump = jump[jump]
    starts = np.empty((chunk, -(-count // chunk)), dtype=index)
    p = 0
    for c in range(starts.shape[1]):
        starts[0, c] = p
        p = jump[p]
    for i in range(1, chunk):
        starts[i] = nxt[starts[i - 1]]
    starts = starts.T.ravel()[:count]

    steps = step[starts]
    if steps.min() == 0:
        first = int(starts[np.argmin(steps)])
        if first >= nbits:
            raise ValueError(f"payload truncated: it ends before symbol {int(np.argmin(steps))} of {count}")
        raise ValueError(f"invalid code at bit {first}: no symbol's code starts with these bits")
    end = int(starts[-1]) + int(steps[-1])
    if end > nbits:
        raise ValueError(f"payload truncated: the last code needs {end} bits, the payload has {nbits}")
    if data.size != -(-end // 8):
        raise ValueError(f"payload has {data.size - -(-end // 8)} trailing byte(s) after the last symbol")
    if bits[end:nbits].any():
        raise ValueError("payload padding after the last code must be zero bits")
    return table_symbol[window[starts]]

# %%
rng = np.random.default_rng(0)
demo = np.minimum(rng.geometric(0.3, size=1000) - 1, 12)   # small values common: a skewed histogram
data, demo_lengths, n = huffman_encode(demo)
assert n == 1000 and np.array_equal(huffman_decode(data, demo_lengths, n), demo)
assert data.size == -(-int((demo_lengths[demo]).sum()) // 8)
hand, hand_lengths, _ = huffman_encode([0, 1, 2, 3, 0], lengths=[1, 2, 3, 3])
assert hand.tolist() == [0b01011011, 0b10000000]          # 0 10 110 111 0, then zero padding
one, one_lengths, _ = huffman_encode([4, 4, 4])
assert one_lengths.tolist() == [0, 0, 0, 0, 1] and one.tolist() == [0]
assert huffman_decode(one, one_lengths, 3).tolist() == [4, 4, 4]
empty, empty_lengths, zero = huffman_encode([])
assert empty.size == 0 and zero == 0 and huffman_decode(empty, empty_lengths, 0).size == 0
print(f"✓ round trip: 1000 geometric symbols in {data.size} bytes "
      f"({8 * data.size / n:.2f} bits each, entropy {entropy(np.bincount(demo)):.2f})")

# %% [markdown]
# Damaged inputs: every way below must be a clear `ValueError`, quickly, never a hang or a huge
# allocation (the count of a million symbols is refused before anything of that size exists).

# %%
damaged = {
    "symbol outside the alphabet": lambda: huffman_encode([0, 5], lengths=[1, 1]),
    "symbol without a code": lambda: huffman_encode([0, 1], lengths=[1, 0, 1]),
    "over-subscribed lengths": lambda: huffman_decode(data, [1, 1, 1], n),
    "count far too large": lambda: huffman_decode(data, demo_lengths, 10 ** 12),
    "truncated payload": lambda: huffman_decode(data[:-3], demo_lengths, n),
    "trailing bytes": lambda: huffman_decode(np.append(data, np.zeros(2, dtype=np.uint8)), demo_lengths, n),
    "invalid code": lambda: huffman_decode(np.array([0xFF], dtype=np.uint8), one_lengths, 1),
}
for case, call in damaged.items():
    try:
        call()
    except ValueError as err:
        print(f"  {case:<28} ValueError: {err}")
    else:
        raise AssertionError(f"{case} should raise ValueError")
print("✓ damaged inputs are refused with a message saying what is wrong")

# %% [markdown]
# ## 5. The lengths table in a few bytes
#
# The decoder needs the lengths, so the file stores them. With codes of at most 15 bits a length
# fits in 4 bits, and the tables we meet have long runs of unused symbols (an 8-bit delta
# alphabet has 256 entries, most of them never used). Byte layout of `encode_lengths`:
#
# | part | encoding |
# |---|---|
# | `n`, the table size | unsigned LEB128 varint (7 bits per byte, low first, high bit = "more"); trailing zero lengths are dropped, so entry `n - 1` has a code |
# | the entries | 4-bit nibbles, high nibble of each byte first: `1..15` is the code length of the next symbol; `0` starts a run of `r >= 1` symbols with no code, and `r - 1` follows in base 8, low digit first, one digit per nibble, with 8 added to every digit except the last |
# | padding | one `0` nibble if the count of nibbles is odd |
#
# So the 16 lengths of a 4-bit value alphabet take 1 + 8 = 9 bytes, and a table of 256 entries
# with 200 unused ones a few dozen bytes. `decode_lengths` reads the whole buffer, refuses bytes it
# did not need and checks the Kraft sum, and `coded_nbytes` counts payload + table for a size budget.

# %%
#| export
def encode_lengths(lengths) -> np.ndarray:
    "The code `lengths` as the compact uint8 table of the byte layout above (a varint size, then 4-bit entries)."
    lengths = _check_lengths(lengths)
    used = np.flatnonzero(lengths)
    n = int(used[-1]) + 1 if used.size else 0
    out = []
    value = n
    while True:                                       # LEB128
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    nibbles = []
    # Python over the alphabet: each change point between runs of zero and non-zero lengths
    is_zero = np.concatenate(([False], lengths[:n] == 0, [False]))
    run_starts = np.flatnonzero(~is_zero[:-1] & is_zero[1:])
    run_ends = np.flatnonzero(is_zero[:-1] & ~is_zero[1:])
    position = 0
    for start, end in zip(run_starts.tolist() + [n], run_ends.tolist() + [n]):
        nibbles.extend(lengths[position:start].tolist())
        if start < n:
            nibbles.append(0)
            rest = end - start - 1
            while rest > 7:
                nibbles.append(8 | (rest & 7))
                rest >>= 3
            nibbles.append(rest)
        position = end
    if len(nibbles) % 2:
        nibbles.append(0)
    pairs = np.array(nibbles, dtype=np.uint8).reshape(-1, 2)
    return np.concatenate([np.array(out, dtype=np.uint8), (pairs[:, 0] << 4) | pairs[:, 1]])


def decode_lengths(table) -> np.ndarray:
    """The code lengths (int64) that `encode_lengths` wrote into `table` (bytes or a 1-d uint8 array).

    Raises ValueError for a table that is empty, truncated, longer than its entries need ("trailing"),
    claims more than 65536 symbols, has non-zero padding, or whose lengths are over-subscribed or incomplete.
    """
    table = _as_bytes(table).tolist()
    n, shift, position = 0, 0, 0
    while True:
        if position >= len(table):
            raise ValueError("lengths table truncated: its size field is incomplete")
        if position >= 3:
            raise ValueError("lengths table size field is longer than 3 bytes")
        byte = table[position]
        n |= (byte & 0x7F) << shift
        shift += 7
        position += 1
        if byte < 0x80:
            break
    if n > MAX_ALPHABET:
        raise ValueError(f"lengths table claims {n} symbols, more than {MAX_ALPHABET}")
    nibbles = [v for byte in table[position:] for v in (byte >> 4, byte & 15)]
    lengths = np.zeros(n, dtype=np.int64)
    filled, i = 0, 0
    while filled < n:
        if i >= len(nibbles):
            raise ValueError(f"lengths table truncated: {filled} of {n} entries read")
        v = nibbles[i]
        i += 1
        if v:
            lengths[filled] = v
            filled += 1
            continue
        rest, shift = 0, 0
        while True:
            if i >= len(nibbles):
                raise ValueError("lengths table truncated inside a run of zeros")
            digit = nibbles[i]
            i += 1
            rest |= (digit & 7) << shift
            shift += 3
            if digit < 8:
                break
            if shift > 18:
                raise ValueError("lengths table has a run of zeros longer than any alphabet")
        if filled + rest + 1 > n:
            raise ValueError(f"lengths table has a run of zeros past its {n} entries")
        filled += rest + 1
    if len(nibbles) - i > 1 or (len(nibbles) - i == 1 and nibbles[i]):
        raise ValueError(f"lengths table has trailing data after its {n} entries")
    return _check_lengths(lengths)


def coded_nbytes(symbols, lengths=None, max_length: int = MAX_CODE_LENGTH) -> int:
    """Bytes that `huffman_encode(symbols, lengths)` and `encode_lengths` would store: payload + lengths table.

    The count of symbols is not included (the caller stores it anyway). Raises what `huffman_encode` raises.
    """
    symbols, lengths = _symbols_and_lengths(symbols, lengths, max_length)
    code_lengths = lengths[symbols]
    if code_lengths.size and code_lengths.min() == 0:
        raise ValueError(f"symbol {symbols[np.argmin(code_lengths)]} has no code (its length is 0)")
    return -(-int(code_lengths.sum()) // 8) + int(encode_lengths(lengths).size)

# %%
four_bit = huffman_lengths(np.bincount(rng.integers(0, 16, 500), minlength=16))
assert encode_lengths(four_bit).size == 9 and np.array_equal(decode_lengths(encode_lengths(four_bit)), four_bit)
gappy = np.zeros(300, dtype=np.int64)
gappy[[0, 1, 2, 250]] = [1, 2, 3, 3]           # runs of 247 unused symbols, and 49 trailing ones
assert encode_lengths(gappy).tolist() == [0xFB, 0x01, 0x12, 0x30, 0xEE, 0x33]
assert np.array_equal(decode_lengths(encode_lengths(gappy)), gappy[:251])
assert encode_lengths([]).tolist() == [0] and decode_lengths(b"\x00").size == 0
assert coded_nbytes(demo) == data.size + encode_lengths(demo_lengths).size
for bad in (b"", b"\x80", b"\x03\x11\x10", b"\x02\x11\x00", b"\x02\x13", b"\xff\xff\xff\x0f"):
    try:
        decode_lengths(bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"damaged table {bad!r} should be refused")
print(f"✓ lengths tables: 16 entries in 9 bytes, 251 entries with a gap of 247 in {encode_lengths(gappy).size} bytes")

# %% [markdown]
# ## 6. What it saves on a pruned, 4-bit digits MLP
#
# Now the real data. We train the digits MLP, prune it to 95% sparsity in 5 steps with
# 3 epochs of fine-tuning after each, and let `compress_weight` store each layer as 4-bit value codes
# and 8-bit position deltas (the gaps between kept weights). Then we compare four sizes per
# part: the fixed-width codes, the entropy bound (`count · H / 8`, the best any code that writes
# one codeword per symbol could do with the same histogram), Huffman (payload, then the lengths
# table), and, for reference, zlib at level 9 on the fixed-width bytes.

# %%
from tinytorch.core.models import digits_mlp, train_digits_model
from tinytorch.compression.encoding import compress_weight
from tinytorch.compression.prune import iterative_prune, prunable_weights
from tinytorch.data.loader import digits_loaders

model = digits_mlp(seed=0)
train_digits_model(model, seed=0)
train_loader, test_loader = digits_loaders(batch_size=64, seed=0)
history = iterative_prune(model, train_loader, 0.95, steps=5, epochs_per_step=3, test_data=test_loader,
                          progress=False)
print(f"pruned to {history['sparsity'][-1]:.1%} sparsity, test accuracy {history['accuracy'][-1]:.2%}")

# %%
def fixed_width_symbols(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    "The `count` unsigned `bits`-bit integers packed most significant bit first (as `compress_weight` stores them)."
    digits = np.unpackbits(packed)[:count * bits].reshape(count, bits).astype(np.int64)
    return digits @ (1 << np.arange(bits - 1, -1, -1))


VALUE_BITS, INDEX_BITS = 4, 8
parts = {}
for name, weight in prunable_weights(model):
    entry = compress_weight(weight, bits=VALUE_BITS, index="delta", index_bits=INDEX_BITS)
    arrays, count = entry["arrays"], entry["count"]
    parts[f"{name} values"] = (fixed_width_symbols(arrays["values"], VALUE_BITS, count), arrays["values"])
    parts[f"{name} deltas"] = (fixed_width_symbols(arrays["deltas"], INDEX_BITS, count), arrays["deltas"])

print(f"{'part':<16}{'symbols':>8}{'fixed':>7}{'entropy':>9}{'Huffman':>9}{'+table':>8}{'zlib':>6}   bytes")
totals = np.zeros(6)
for name, (symbols, packed) in parts.items():
    payload, lengths, count = huffman_encode(symbols)
    assert np.array_equal(huffman_decode(payload, lengths, count), symbols)   # exact, on every part
    bound = count * entropy(np.bincount(symbols)) / 8
    row = [count, packed.size, bound, payload.size, encode_lengths(lengths).size,
           len(zlib.compress(packed.tobytes(), 9))]
    totals += row
    print(f"{name:<16}{row[0]:>8}{row[1]:>7}{row[2]:>9.0f}{row[3]:>9}{row[4]:>8}{row[5]:>6}")
print(f"{'total':<16}{totals[0]:>8.0f}{totals[1]:>7.0f}{totals[2]:>9.0f}"
      f"{totals[3]:>9.0f}{totals[4]:>8.0f}{totals[5]:>6.0f}")
saved = 1 - (totals[3] + totals[4]) / totals[1]
print(f"✓ Huffman (tables included) stores the codes in {saved:.1%} fewer bytes than the fixed widths, "
      f"{(totals[3] + totals[4]) / totals[2] - 1:.1%} above the entropy bound")

# %% [markdown]
# Read the table part by part.
#
# - **Values.** 4-bit codes are `round(w / scale)` with `scale = max|w| / 7`, and one large weight
#   sets the scale for the whole layer: most survivors land on codes ±3 and ±4, and half of the 16
#   codes are nearly never used. About 2.3 bits of information are stored in 4 bits, and Huffman
#   gets within a few percent of the entropy. (The few zeros are the filler entries of long gaps.)
# - **Deltas.** Global pruning keeps a different fraction of each layer, but everywhere the gaps
#   between kept weights are mostly small, so an 8-bit field pays for gaps up to 255 that hardly
#   ever occur. Huffman needs 4 to 6 bits per gap.
# - **Tables.** A delta table over up to 256 entries costs 20 to 80 bytes per layer, up to a
#   quarter of what it saves. On a tiny layer a table can eat the whole gain, so a file format
#   should keep the fixed-width codes whenever they are smaller (`coded_nbytes` says).
# - **zlib** looks for repeated byte strings; packed codes and gaps rarely repeat, so it lands
#   far above a code built for the histogram.
#
# The entropy bound counts whole-symbol information only; Huffman pays for using a whole number of
# bits per code (at most one bit per symbol, here under 2%), and an adaptive arithmetic coder could
# only win back that and the tables. The compressed file format can choose, part by part,
# the smaller of fixed width and Huffman.

# %% [markdown]
# The same comparison as a function of `index_bits`: a narrow fixed field needs filler entries for
# long gaps, a wide one wastes bits on every gap. Huffman of the wide field gets close to the
# entropy whatever the width, because the fillers vanish and the unused high bits cost nothing.

# %%
deltas_fixed, deltas_huffman = {}, {}
for index_bits in (4, 5, 6, 8):
    fixed = huff = 0
    for _, weight in prunable_weights(model):
        entry = compress_weight(weight, bits=VALUE_BITS, index="delta", index_bits=index_bits)
        deltas = fixed_width_symbols(entry["arrays"]["deltas"], index_bits, entry["count"])
        fixed += entry["arrays"]["deltas"].size
        huff += coded_nbytes(deltas)
    deltas_fixed[index_bits], deltas_huffman[index_bits] = fixed, huff
    print(f"index_bits={index_bits}: fixed-width deltas {fixed:>5} bytes, Huffman + tables {huff:>5} bytes")
assert min(deltas_huffman.values()) < min(deltas_fixed.values())
print("✓ Huffman beats the best fixed width for the positions")
