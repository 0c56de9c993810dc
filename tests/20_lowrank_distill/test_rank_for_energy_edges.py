"""rank_for_energy when the total energy is exactly 1 and when it is 0.

Found by mutation testing (benchmarks/mutation.py): testing `cumulative[-1] == 1` instead of
`== 0`, or dividing by a zero total (NaNs and a RuntimeWarning that happen to give rank 1),
kept full marks.
"""
import warnings

import numpy as np
import pytest

from tinytorch.compression.lowrank import rank_for_energy


@pytest.mark.task("rank-for-energy")
def test_a_total_energy_of_exactly_one_is_not_special():
    # squares 0.25 each: cumulative 0.25, 0.5, 0.75, 1.0 exactly
    assert rank_for_energy([0.5, 0.5, 0.5, 0.5], 0.9) == 4
    assert rank_for_energy([0.5, 0.5, 0.5, 0.5], 0.5) == 2


@pytest.mark.task("rank-for-energy")
def test_all_zero_singular_values_give_rank_one_without_dividing_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # 0 / 0 would warn: "invalid value encountered"
        assert rank_for_energy([0.0, 0.0, 0.0], 0.5) == 1
        assert rank_for_energy(np.zeros(5), 0.99) == 1
