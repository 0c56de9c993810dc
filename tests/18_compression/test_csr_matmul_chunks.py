"""csr_matmul in chunks of several samples: each chunk lands in its own columns, and the chunk
size really keeps the products under `max_elements` numbers.

Found by mutation testing (benchmarks/mutation.py): writing each chunk one column too wide
(`first:first + step + 1`) and chunks of `max_elements` samples whatever the number of stored
weights (`max_elements // min(1, len(data))`) kept full marks: the tests' chunks were one
sample wide, and nothing measured the memory.
"""
import tracemalloc

import numpy as np
import pytest

from tinytorch.compression.inference import csr_matmul


def csr_of(W):
    "CSR by hand (data, int32 column indices, int32 row offsets), so the test does not call csr-encode."
    rows, cols = np.nonzero(W)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=W.shape[0])))).astype(np.int32)
    return W[rows, cols], cols.astype(np.int32), indptr


def sparse_weight(rows=12, cols=10, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols)) * (rng.random((rows, cols)) < 0.3)
    W[3] = 0.0                                            # an empty row in the middle
    return W


@pytest.mark.task("csr-matmul")
@pytest.mark.parametrize("chunk", [2, 3, 5])
def test_chunks_of_several_samples_equal_the_dense_product(chunk):
    W = sparse_weight()
    data, indices, indptr = csr_of(W)
    x = np.random.default_rng(1).normal(size=(11, W.shape[1]))     # 11 samples: the last chunk is short
    out = csr_matmul(data, indices, indptr, x, max_elements=chunk * len(data))
    assert out.shape == (11, W.shape[0])
    assert np.allclose(out, x @ W.T)


# Ungraded: it watches the student's own process (its memory peak), which the grader keeps apart from
# the tests (tito/grading/DESIGN.md); `tito test` runs it, so a student still sees it fail.
def test_chunks_keep_the_products_under_max_elements():
    W = sparse_weight(64, 64, seed=2)
    data, indices, indptr = csr_of(W)
    x = np.random.default_rng(3).normal(size=(256, 64))
    budget = 4 * len(data)                                # 4 samples per chunk
    tracemalloc.start()
    try:
        out = csr_matmul(data, indices, indptr, x, max_elements=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.allclose(out, x @ W.T)
    # the output itself, plus a few arrays of `budget` numbers; all 256 samples at once would be 64x more
    assert peak <= out.nbytes + 8 * budget * 8, f"peak {peak:,} bytes for a budget of {budget:,} numbers"
