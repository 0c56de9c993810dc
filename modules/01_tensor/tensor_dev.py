# %% [markdown]
# # Module 01: Tensor
#
# > A NumPy-backed `Tensor`: the data structure every later module builds on.

# %%
#| default_exp core.tensor

# %%
#| export
import numpy as np

# %% nbgrader={"grade": false, "grade_id": "tensor-class", "locked": false, "solution": true, "schema_version": 3}
#| export
class Tensor:
    "An n-dimensional array of float32 numbers."
    def __init__(self, data):
        ### BEGIN SOLUTION
        self.data = np.asarray(data, dtype=np.float32)
        ### END SOLUTION

# %%
t = Tensor([1, 2])
assert t.data.dtype == np.float32
print("✓ Tensor stores float32")
