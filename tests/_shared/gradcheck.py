"""Central finite differences: the gradient oracle of every test folder (tests/conftest.py puts
this folder on sys.path, and `tito release` and the grading kit ship it with the tests).

It lives here, not in the package: module 05's notebook teaches the same formula, but an oracle
exported from a notebook would be the student's own code whenever that module is graded.
"""
import numpy as np


def numerical_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + h) - f(x - h)) / 2h of the scalar f for every entry of x.

    x is nudged in place, one entry at a time, and restored, so f may read it through a closure
    instead of its argument (as a loss over several arrays does). Use float64: in float32 the
    differences drown in rounding. The error is O(h^2), ~7 digits for h = 1e-6.
    """
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + h
        up = f(x)
        x[index] = saved - h
        down = f(x)
        x[index] = saved
        grad[index] = (up - down) / (2 * h)
    return grad
