"""magnitude_mask picks exactly the k-th smallest magnitude as its threshold, on arrays large
enough that np.partition leaves the entries beside the k-th unsorted, when every entry goes, and
with a live weight of exactly 0 beside an entry already pruned.

Found by mutation testing (benchmarks/mutation.py): reading the threshold one place off
(`np.partition(scores, k - 1)[k]` or `np.partition(scores, k)[k - 1]`) passed every test on the
small tie-heavy arrays, where the partition happens to sort.
"""
import numpy as np
import pytest

from tinytorch.compression.prune import magnitude_mask


def sorted_mask(w, sparsity):
    "Oracle: a full sort by (|w|, flat index); the first round(sparsity * n) entries are pruned."
    scores = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    k = round(sparsity * scores.size)
    keep = np.ones(scores.size, dtype=bool)
    keep[np.lexsort((np.arange(scores.size), scores))[:k]] = False
    return keep.reshape(np.shape(w))


@pytest.mark.task("magnitude-mask")
def test_magnitude_mask_matches_a_full_sort_on_large_random_arrays():
    for seed in range(40):
        w = np.random.default_rng(seed).normal(size=(37, 29))
        for sparsity in np.linspace(0.05, 0.95, 19):
            assert np.array_equal(magnitude_mask(w, sparsity), sorted_mask(w, sparsity)), (seed, sparsity)


@pytest.mark.task("magnitude-mask")
def test_magnitude_mask_can_prune_every_entry():
    # k = round(0.6 * 1) = 1 = n: the threshold is the largest score, and nothing is kept
    assert magnitude_mask(np.array([2.0]), 0.6).tolist() == [False]
    assert magnitude_mask(np.array([[3.0, -1.0]]), 0.8).tolist() == [[False, False]]   # k = round(1.6) = 2


@pytest.mark.task("magnitude-mask")
def test_dead_entries_go_before_a_live_zero():
    # Index 1 is already pruned; index 0 is alive and exactly 0. k = max(round(0.2 * 3), 1) = 1:
    # the dead entry is the one pruned. Ranking it as 0 instead of below every weight would tie
    # it with the live zero (found by mutation testing: `scores[~mask] = -0.0` for `-1.0`).
    w = np.array([0.0, 5.0, 3.0])
    alive = np.array([True, False, True])
    assert magnitude_mask(w, 0.2, mask=alive).tolist() == [True, False, True]
    assert magnitude_mask(w, 0.5, mask=alive).tolist() == [False, False, True]   # k = 2: then the live zero
