"""encode_delta with more than 8 bits: deltas of 256 and more must survive, in uint16.

Found by mutation testing (benchmarks/mutation.py): choosing uint8 up to 9 bits (`bits <= 9`)
kept full marks, because no test stored a gap of 256 or more with 9 bits.
"""
import numpy as np
import pytest

from tinytorch.compression.encoding import encode_delta


@pytest.mark.task("delta-encode")
@pytest.mark.parametrize("bits", [9, 12, 16])
def test_wide_deltas_keep_gaps_of_256_and_more(bits):
    deltas = encode_delta([300, 301, 800], bits=bits)
    assert deltas.dtype == np.uint16
    assert deltas.tolist() == [300, 0, 498]           # zeros skipped before each entry


@pytest.mark.task("delta-encode")
def test_nine_bit_fillers_carry_the_value_511():
    deltas = encode_delta([1100], bits=9)             # 1100 = 2 * 512 + 76 zeros skipped
    assert deltas.dtype == np.uint16 and deltas.tolist() == [511, 511, 76]
