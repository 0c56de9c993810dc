# %% [markdown]
# # Module 01, given code: argument checks
#
# > `is_int` and `is_real`: the one test every module uses before it trusts a count, a size or
# > a rate. Read it; you do not edit it.
#
# Python's `bool` is a subclass of `int`, so `isinstance(True, int)` holds and `Linear(True, 4)`
# would quietly build a 1-input layer. NumPy's integers (`np.int64(3)`, what `array.sum()` or a
# loop over `np.arange` gives) are not `int` at all. Every check of a whole-number argument in
# this course therefore asks the same question, "an integer of any kind, but not a bool", and
# asks it here. The error messages stay with the callers: only they know what the number means.

# %%
#| default_exp core.checks

# %%
#| export
import numbers


def is_int(value) -> bool:
    "True for Python and NumPy integers; False for bools (True would pass for 1) and everything else."
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    "True for Python and NumPy ints and floats (NaN and inf included: range checks are the caller's); False for bools."
    return isinstance(value, numbers.Real) and not isinstance(value, bool)

# %%
import numpy as np

assert is_int(3) and is_int(np.int64(3)) and is_int(np.uint8(0))
assert not is_int(True) and not is_int(np.bool_(True)) and not is_int(3.0) and not is_int("3")
assert is_real(0.5) and is_real(np.float32(0.5)) and is_real(2) and is_real(np.int32(2))
assert not is_real(False) and not is_real("0.5") and not is_real(None) and not is_real(1j)
print("✓ is_int and is_real accept Python and NumPy numbers and refuse bools")
