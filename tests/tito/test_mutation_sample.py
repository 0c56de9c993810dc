"""benchmarks/mutation.py: its operators on a tiny notebook, and a fixed sample of real mutants of
the graded solutions, every one of which must cost points (the full run is a benchmark)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import pytest

from tito_testlib import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level folder of the repository, not installed

from benchmarks.mutation import (  # noqa: E402
    load_equivalents, mutants_of, replace_function, solution_regions,
)

NOTEBOOK = textwrap.dedent('''\
    # %%
    import numpy as np

    # %% nbgrader={"grade": false, "grade_id": "clip-count", "locked": false, "solution": true, "schema_version": 3}
    #| export
    def clip_count(x, limit: int = 3, strict=True):
        "Count entries of x above `limit`."
        if limit < 0:
            raise ValueError("limit must be >= 0")
        ### BEGIN SOLUTION
        big = np.abs(x[1:limit]) > limit * 1
        if strict and x.size >= 2:
            return max(int(big.sum()), 0)
        return None
        ### END SOLUTION

    # %%
    def not_graded(y):
        return y + 1
    ''')


def mutants(tmp_path, text=NOTEBOOK):
    path = tmp_path / "clip_dev.py"
    path.write_text(text)
    [region] = solution_regions(path)
    function = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == "clip_count")
    return region, mutants_of(function, region)


def test_regions_carry_the_task_id_lines_and_function(tmp_path):
    region, _ = mutants(tmp_path)
    lines = NOTEBOOK.split("\n")
    assert (region.task, region.function) == ("clip-count", "clip_count")
    assert lines[region.first - 2].strip() == "### BEGIN SOLUTION"
    assert lines[region.last].strip() == "### END SOLUTION"


def test_only_the_solution_region_is_mutated(tmp_path):
    region, found = mutants(tmp_path)
    assert found and all(region.first <= m.line <= region.last for m in found)
    assert not any("limit < 0" in m.original or "ValueError" in m.original for m in found)


def test_each_operator_makes_its_change(tmp_path):
    _, found = mutants(tmp_path)
    made = {(m.operator, m.description, m.original) for m in found}
    big = "big = np.abs(x[1:limit]) > limit * 1"
    branch = "if strict and x.size >= 2:"
    ret = "return max(int(big.sum()), 0)"
    for expected in [("compare", "`>` -> `>=`", big), ("compare", "`>=` -> `>`", branch),
                     ("arithmetic", "`*` -> `/`", big), ("boolean", "`and` -> `or`", branch),
                     ("constant", "2 -> 3", branch), ("constant", "0 -> 1", ret),
                     ("constant", "None -> 0", "return None"), ("call-name", "`max` -> `min`", ret),
                     ("swap-args", "first two arguments swapped", ret),
                     ("slice", "slice lower bound +1", big), ("slice", "slice upper bound -1", big),
                     ("delete", "statement replaced by `pass`", "return None")]:
        assert expected in made, expected
    code = {m.description: m.code for m in found if m.original == big}
    assert "x[2:limit]" in code["slice lower bound +1"] and "x[1:limit - 1]" in code["slice upper bound -1"]
    assert "x[0:limit]" in code["slice lower bound -1"]  # an int bound is folded, not written 1 - 1
    for m in found:
        ast.parse(m.code)  # every mutant compiles, and differs from the reference
        assert m.code != ast.unparse(ast.parse(NOTEBOOK).body[1])


def test_identity_after_folding_is_reported_equivalent_without_running(tmp_path):
    _, found = mutants(tmp_path)
    by = {(m.original, m.description): m for m in found}
    folded = by["big = np.abs(x[1:limit]) > limit * 1", "`*` -> `/`"]   # limit / 1 == limit * 1
    assert folded.status == "equivalent" and folded.equivalent
    assert by["if strict and x.size >= 2:", "`>=` -> `>`"].status == "pending"


def test_keys_survive_moving_lines_and_differ_between_mutants(tmp_path):
    _, found = mutants(tmp_path)
    _, moved = mutants(tmp_path, NOTEBOOK.replace("import numpy as np\n", "import numpy as np\n\n\n\n"))
    assert [m.key for m in found] == [m.key for m in moved]
    assert [m.line + 3 for m in found] == [m.line for m in moved]
    assert len({m.key for m in found}) == len(found)


def test_replace_function_swaps_exactly_one_function():
    module = "import os\n\n\ndef f(x):\n    return x\n\n\ndef g():\n    return 2\n"
    out = replace_function(module, "f", "def f(x):\n    return x + 1")
    assert out == "import os\n\n\ndef f(x):\n    return x + 1\n\n\ndef g():\n    return 2\n"


def test_reviewed_equivalents_say_why():
    for key, entry in load_equivalents().items():
        assert {"task", "mutant", "reason"} <= set(entry) and len(entry["reason"]) > 20, key


# A fixed sample of real mutants of module 18's graded solutions: every one must lose points. It
# also checks the fast path (the mutated function written over the exported file) against a real
# nbdev export. Four tasks with quick tests keep it to about 13 short pytest runs.
SAMPLE_TASKS = "magnitude-mask,delta-encode,compress-weight,csr-matmul"


def test_a_fixed_sample_of_mutants_all_lose_points(tmp_path):
    command = [sys.executable, "-m", "benchmarks.mutation", "compression", "--tasks", SAMPLE_TASKS,
               "--sample", "8", "--seed", "17", "--verify-export", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "mutation.json").read_text())
    assert len(result["mutants"]) == 8
    survivors = [f"{m['id']} ({m['status']}):\n{m['diff']}" for m in result["mutants"]
                 if m["status"] not in ("killed", "timeout", "error")]
    assert not survivors, "\n".join(survivors)
