"""Huffman coding (tinytorch.compression.entropy): optimal lengths, canonical codes, exact round trips, damaged input."""
import heapq
import itertools
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytorch.compression.entropy import (MAX_CODE_LENGTH, canonical_codes, coded_nbytes, decode_lengths,
                                           encode_lengths, entropy, huffman_decode, huffman_encode,
                                           huffman_lengths)


def kraft(lengths) -> Fraction:
    return sum((Fraction(1, 2 ** int(n)) for n in lengths if n), Fraction(0))


def merge_cost(counts) -> int:
    "Textbook oracle: an optimal prefix code's total bits equal the sum of Huffman's merged weights."
    heap = [int(c) for c in counts if c]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


@cache
def complete_length_profiles(n: int) -> tuple:
    "Every nondecreasing tuple of n code lengths with Kraft sum exactly 1 (brute force)."
    return tuple(p for p in itertools.combinations_with_replacement(range(1, n), n) if kraft(p) == 1)


def brute_force_cost(counts) -> int:
    "Fewest total bits of any complete prefix code: shortest lengths to the largest counts, every profile tried."
    weights = sorted((int(c) for c in counts if c), reverse=True)
    return min(sum(w * n for w, n in zip(weights, p)) for p in complete_length_profiles(len(weights)))


def textbook_canonical(lengths) -> dict:
    "Deflate's (RFC 1951) canonical code assignment, one symbol at a time: {symbol: bit string}."
    codes, code, previous = {}, 0, 0
    for length, symbol in sorted((int(n), s) for s, n in enumerate(lengths) if n):
        code <<= length - previous
        codes[symbol] = format(code, f"0{length}b")
        code, previous = code + 1, length
    return codes


def fibonacci(n: int) -> list:
    counts = [1, 1]
    while len(counts) < n:
        counts.append(counts[-1] + counts[-2])
    return counts[:n]


counts_lists = st.lists(st.integers(0, 1000), min_size=2, max_size=40).filter(lambda c: sum(x > 0 for x in c) >= 2)


@st.composite
def symbol_arrays(draw):
    "Skewed symbol arrays over a random alphabet (up to 65536 symbols), with the alphabet size."
    alphabet = draw(st.sampled_from([1, 2, 3, 16, 100, 256, 4096, 65536]))
    n = draw(st.integers(0, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    skew = draw(st.sampled_from(["uniform", "geometric", "one"]))
    if skew == "uniform":
        symbols = rng.integers(0, alphabet, n)
    elif skew == "geometric":
        symbols = np.minimum(rng.geometric(draw(st.floats(0.01, 0.9)), n) - 1, alphabet - 1)
    else:
        symbols = np.full(n, rng.integers(0, alphabet))
    return symbols.astype(np.int64), alphabet


# ---- code lengths -----------------------------------------------------------------------------

def test_lengths_hand_computed():
    assert huffman_lengths([5, 2, 1, 1]).tolist() == [1, 2, 3, 3]
    assert huffman_lengths([1, 1, 1, 1]).tolist() == [2, 2, 2, 2]
    assert huffman_lengths([0, 9, 0, 0]).tolist() == [0, 1, 0, 0]
    assert huffman_lengths([0, 0]).tolist() == [0, 0] and huffman_lengths([]).size == 0


@given(counts_lists)
def test_lengths_satisfy_kraft_equality(counts):
    lengths = huffman_lengths(counts)
    assert kraft(lengths) == 1
    assert np.all((lengths > 0) == (np.array(counts) > 0))


@given(counts_lists)
def test_lengths_cost_equals_sum_of_merged_weights(counts):
    lengths = huffman_lengths(counts)
    assert int(np.dot(lengths, counts)) == merge_cost(counts)


@given(st.lists(st.integers(1, 50), min_size=2, max_size=7))
def test_lengths_optimal_against_brute_force(counts):
    assert int(np.dot(huffman_lengths(counts), counts)) == brute_force_cost(counts)


@pytest.mark.parametrize("n,cap", [(16, 15), (30, 15), (30, 8), (40, 6)])
def test_length_cap_honoured_on_fibonacci_counts(n, cap):
    counts = fibonacci(n)                      # uncapped Huffman is a chain: lengths up to n - 1
    lengths = huffman_lengths(counts, max_length=cap)
    assert lengths.max() <= cap and kraft(lengths) == 1
    assert int(np.dot(lengths, counts)) >= merge_cost(counts)
    order = np.argsort(counts, kind="stable")
    assert np.all(np.diff(lengths[order]) <= 0)   # a more frequent symbol never gets a longer code
    symbols = np.repeat(np.arange(n), 1)
    data, used, count = huffman_encode(symbols, lengths=lengths)
    assert np.array_equal(huffman_decode(data, used, count), symbols)


def test_cap_below_the_alphabet_is_refused():
    with pytest.raises(ValueError, match="max_length"):
        huffman_lengths([1, 1, 1], max_length=1)
    with pytest.raises(ValueError, match="max_length"):
        huffman_lengths([1, 1], max_length=16)


def test_counts_must_be_non_negative_integers():
    for bad in ([1, -1], [0.5, 0.5], [[1, 2]]):
        with pytest.raises(ValueError, match="counts"):
            huffman_lengths(bad)


def test_entropy_hand_computed():
    assert entropy([2, 1, 1]) == pytest.approx(1.5)
    assert entropy([0, 3]) == 0.0


@given(counts_lists)
def test_huffman_within_one_bit_of_entropy(counts):
    total = sum(counts)
    average = np.dot(huffman_lengths(counts), counts) / total
    assert entropy(counts) - 1e-9 <= average < entropy(counts) + 1


# ---- canonical codes --------------------------------------------------------------------------

@given(counts_lists)
def test_canonical_codes_match_textbook_assignment(counts):
    lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    expected = textbook_canonical(lengths)
    assert {s: format(int(codes[s]), f"0{int(lengths[s])}b") for s in expected} == expected


@given(counts_lists)
def test_canonical_codes_are_prefix_free(counts):
    lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{int(lengths[s])}b") for s in np.flatnonzero(lengths)]
    assert all(not b.startswith(a) for a, b in itertools.permutations(words, 2))


@pytest.mark.parametrize("lengths,word", [([1, 1, 1], "over-subscribed"), ([1, 2], "incomplete"),
                                          ([2], "single symbol"), ([16, 1], r"\[0, 15\]"),
                                          ([1.0, 1.0], "integers")])
def test_invalid_lengths_refused(lengths, word):
    with pytest.raises(ValueError, match=word):
        canonical_codes(lengths)


# ---- encoding and decoding --------------------------------------------------------------------

def slow_encode(symbols, lengths) -> list:
    "Oracle: the codes as bit strings, concatenated, zero-padded to a byte."
    codes = textbook_canonical(lengths)
    bits = "".join(codes[int(s)] for s in symbols)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


@given(symbol_arrays())
def test_round_trip_is_exact(case):
    symbols, alphabet = case
    data, lengths, count = huffman_encode(symbols)
    assert count == symbols.size and data.dtype == np.uint8
    assert data.size == -(-int(lengths[symbols].sum()) // 8)
    decoded = huffman_decode(data, lengths, count)
    assert decoded.dtype == np.int64 and np.array_equal(decoded, symbols)


@given(symbol_arrays())
def test_round_trip_with_given_lengths_and_table(case):
    symbols, alphabet = case
    counts = np.bincount(symbols, minlength=min(alphabet, 4096))
    counts[:min(alphabet, 4096)] += 1          # unused symbols get codes too (at most 2**15 codes in all)
    lengths = huffman_lengths(counts)
    data, used, count = huffman_encode(symbols, lengths=lengths)
    table = encode_lengths(used)
    assert coded_nbytes(symbols, lengths) == data.size + table.size
    assert np.array_equal(huffman_decode(data.tobytes(), decode_lengths(table.tobytes()), count), symbols)


@given(st.lists(st.integers(0, 9), max_size=60))
def test_bits_match_slow_encoder(symbols):
    lengths = huffman_lengths(np.bincount(symbols, minlength=10) + np.arange(1, 11))
    data, _, _ = huffman_encode(np.array(symbols, dtype=np.int64), lengths=lengths)
    assert data.tolist() == slow_encode(symbols, lengths)


def test_one_distinct_symbol_and_empty_input():
    data, lengths, count = huffman_encode(np.full(20, 7))
    assert lengths[7] == 1 and np.count_nonzero(lengths) == 1 and data.tolist() == [0, 0, 0]
    assert huffman_decode(data, lengths, count).tolist() == [7] * 20
    data, lengths, count = huffman_encode(np.zeros(0, dtype=np.int64))
    assert data.size == 0 and count == 0 and lengths.size == 0
    assert huffman_decode(data, lengths, 0).size == 0
    assert coded_nbytes([]) == 1   # an empty table is one byte: its size, 0


@pytest.mark.parametrize("symbols,lengths,word", [([0, 3], [1, 1], "alphabet"), ([-1], None, "alphabet"),
                                                  ([70000], None, "alphabet"), ([0.5], None, "integers"),
                                                  ([1], [1, 0, 1], "no code")])
def test_bad_symbols_refused(symbols, lengths, word):
    with pytest.raises(ValueError, match=word):
        huffman_encode(symbols, lengths=lengths)


# ---- damaged payloads and tables -------------------------------------------------------------

@pytest.fixture
def encoded():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.2, 500) - 1, 30)
    return (symbols, *huffman_encode(symbols))


@pytest.mark.parametrize("count", [10 ** 15, 2 ** 62])
def test_huge_count_refused_before_allocating(encoded, count):
    _, data, lengths, _ = encoded
    with pytest.raises(ValueError, match="truncated"):
        huffman_decode(data, lengths, count)


@pytest.mark.parametrize("count", [-1, True, 2.0, "5"])
def test_bad_count_refused(encoded, count):
    _, data, lengths, _ = encoded
    with pytest.raises(ValueError, match="count"):
        huffman_decode(data, lengths, count)


def test_truncated_payload_refused(encoded):
    _, data, lengths, count = encoded
    for cut in (1, data.size // 2, data.size - 1):
        with pytest.raises(ValueError, match="truncated"):
            huffman_decode(data[:cut], lengths, count)


def test_trailing_bytes_refused(encoded):
    _, data, lengths, count = encoded
    with pytest.raises(ValueError, match="trailing"):
        huffman_decode(np.append(data, np.uint8(0)), lengths, count)
    with pytest.raises(ValueError, match="trailing"):
        huffman_decode(data, lengths, 0)


def test_nonzero_padding_and_invalid_code_refused():
    data, lengths, count = huffman_encode([0, 0, 0])          # one symbol: code "0", 3 bits used
    with pytest.raises(ValueError, match="padding"):
        huffman_decode(np.array([0b00010000], dtype=np.uint8), lengths, count)
    with pytest.raises(ValueError, match="invalid code"):
        huffman_decode(np.array([0b01000000], dtype=np.uint8), lengths, count)


def test_damaged_lengths_refused_at_decode(encoded):
    _, data, lengths, count = encoded
    over = lengths.copy()
    over[np.argmax(lengths)] -= 1
    with pytest.raises(ValueError, match="over-subscribed"):
        huffman_decode(data, over, count)
    with pytest.raises(ValueError, match="hold no code"):
        huffman_decode(data, np.zeros(4, dtype=np.int64), count)


@given(st.binary(max_size=40), st.binary(max_size=12), st.integers(0, 400))
def test_random_bytes_give_value_error_or_symbols(payload, table, count):
    try:
        lengths = decode_lengths(table)
        decoded = huffman_decode(payload, lengths, count)
    except ValueError:
        return
    assert decoded.size == count and np.all(decoded < lengths.size)


@given(st.integers(0, 2 ** 31 - 1))
def test_flipped_payload_bits_give_value_error_or_symbols(seed):
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(0.3, 200) - 1, 20)
    data, lengths, count = huffman_encode(symbols)
    damaged = data.copy()
    damaged[rng.integers(damaged.size)] ^= np.uint8(1 << rng.integers(8))
    try:
        decoded = huffman_decode(damaged, lengths, count)
    except ValueError:
        return
    assert decoded.size == count


# ---- the lengths table ------------------------------------------------------------------------

def test_table_layout_hand_computed():
    lengths = np.zeros(300, dtype=np.int64)
    lengths[[0, 1, 2, 250]] = [1, 2, 3, 3]
    # varint 251 = FB 01; nibbles 1 2 3, zero run of 247 (246 = 6 + 6*8 + 3*64 -> E E 3), 3
    assert encode_lengths(lengths).tolist() == [0xFB, 0x01, 0x12, 0x30, 0xEE, 0x33]
    assert encode_lengths([1, 1]).tolist() == [0x02, 0x11]
    assert encode_lengths([0, 0, 1, 1]).tolist() == [0x04, 0x01, 0x11]   # run of 2: nibbles 0 1
    assert encode_lengths(np.zeros(5, dtype=np.int64)).tolist() == [0x00]


@given(st.lists(st.integers(0, 1000), max_size=300),
       st.sampled_from([0, 0.5, 0.95]), st.integers(0, 2 ** 31 - 1))
def test_table_round_trip(counts, zero_fraction, seed):
    counts = np.array(counts, dtype=np.int64)
    counts[np.random.default_rng(seed).random(counts.size) < zero_fraction] = 0
    lengths = huffman_lengths(counts)
    table = encode_lengths(lengths)
    decoded = decode_lengths(table)
    used = np.flatnonzero(lengths)
    trimmed = lengths[:used[-1] + 1] if used.size else lengths[:0]
    assert np.array_equal(decoded, trimmed)
    assert table.size <= 4 + (used.size + 1) // 2 + 3 * (used.size + 1)


def test_wide_sparse_alphabet_table_is_small():
    lengths = np.zeros(65536, dtype=np.int64)
    lengths[[0, 65535]] = 1
    table = encode_lengths(lengths)
    assert table.size <= 8 and np.array_equal(decode_lengths(table), lengths)


@pytest.mark.parametrize("table,word", [(b"", "truncated"), (b"\x80", "truncated"), (b"\x02\x10", "truncated"),
                                        (b"\x02\x12", "incomplete"),
                                        (b"\x03\x11", "truncated"), (b"\x03\x11\x10", "over-subscribed"),
                                        (b"\x02\x11\x00", "trailing"), (b"\x02\x11\x01", "trailing"),
                                        (b"\x02\x02", "past"), (b"\x85\x80\x04", "more than 65536"),
                                        (b"\xff\xff\xff\x0f", "longer than 3 bytes")])
def test_damaged_table_refused(table, word):
    with pytest.raises(ValueError, match=word):
        decode_lengths(table)


def test_code_length_cap_fits_a_nibble():
    assert MAX_CODE_LENGTH == 15
