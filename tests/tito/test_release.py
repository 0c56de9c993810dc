"""`tito release`: the student copy has stubs, no hidden tests, an exported package and a README."""
from __future__ import annotations

import pytest

from tito_testlib import run_tito, snapshot


@pytest.fixture(scope="module")
def released(course, tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "student"
    before = snapshot(course)
    proc = run_tito(course, "release", "02_prune", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(course) == before  # the instructor's copy is untouched
    return out


def test_solutions_become_stubs_naming_the_task(released):
    source = (released / "modules" / "02_prune" / "prune_dev.py").read_text()
    assert "BEGIN SOLUTION" not in source and "np.argsort" not in source
    for task in ("magnitude-mask", "sparsity", "prune"):
        assert f'raise NotImplementedError("Task {task}: not implemented yet' in source
    # indentation is kept and nbgrader metadata stays, so nbgrader can still use the file
    assert '    # YOUR CODE HERE\n    raise NotImplementedError("Task sparsity' in source
    assert '"grade_id": "magnitude-mask"' in source and '"solution": true' in source
    # the module docstring and the unit-test cells are still there
    assert "> Magnitude pruning, small enough for tito's own tests." in source
    assert "✓ magnitude_mask keeps the two largest magnitudes" in source


def test_hidden_tests_are_left_out(released):
    assert (released / "tests" / "02_prune" / "test_prune.py").exists()
    assert (released / "tests" / "02_prune" / "points.toml").exists()
    assert not list(released.rglob("test_hidden_*"))
    source = (released / "modules" / "02_prune" / "prune_dev.py").read_text()
    assert "HIDDEN TESTS" not in source and "t.mask.dtype == bool" not in source


def test_shared_test_helpers_ship_with_the_tests(released, course):
    # tests/conftest.py and tests/_shared/: every module's tests may use them (test_prune.py does)
    for name in ("conftest.py", "_shared/course_oracles.py"):
        assert (released / "tests" / name).read_text() == (course / "tests" / name).read_text()


def test_foundation_modules_keep_their_code(released, course):
    assert (released / "modules" / "01_tensor" / "tensor_dev.py").read_text() == \
        (course / "modules" / "01_tensor" / "tensor_dev.py").read_text()


def test_package_is_exported_from_the_stubs(released):
    code = (released / "tinytorch" / "compression" / "prune.py").read_text()
    assert "raise NotImplementedError(\"Task magnitude-mask" in code and "argsort" not in code
    assert (released / "tinytorch" / "core" / "tensor.py").exists()
    assert (released / "tito" / "cli.py").exists()
    readme = (released / "README.md").read_text()
    assert "tito test 02_prune" in readme and "| `magnitude-mask` | 2 |" in readme and "**5**" in readme


def test_student_copy_exports_and_tests_fail_clearly(released, tmp_path):
    proc = run_tito(released, "export", "02_prune", tmpdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_tito(released, "test", "02_prune", tmpdir=tmp_path)
    assert proc.returncode == 1
    assert "not implemented yet: Task magnitude-mask" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_refuses_to_overwrite_without_force(released, course):
    proc = run_tito(course, "release", "02", "--out", str(released))
    assert proc.returncode == 1 and "already exists; pass --force" in proc.stderr
    (released / "scratch.txt").write_text("x")
    proc = run_tito(course, "release", "02", "--out", str(released), "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (released / "scratch.txt").exists()


def test_release_of_a_module_without_solutions_is_an_error(course, tmp_path):
    proc = run_tito(course, "release", "01", "--out", str(tmp_path / "x"))
    assert proc.returncode == 1 and "has no solution cells" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_stub_keeps_indentation_and_reports_unbalanced_markers():
    from tito.errors import TitoError
    from tito.graded import stub_code, strip_hidden

    code = "def f(x):\n    if x:\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n    return 0"
    assert stub_code(code, "t", "f.py") == (
        "def f(x):\n    if x:\n        # YOUR CODE HERE\n"
        '        raise NotImplementedError("Task t: not implemented yet; replace this line with your code")\n'
        "    return 0")
    assert strip_hidden("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc", "f.py") == "a\nc"
    with pytest.raises(TitoError, match="never closed"):
        stub_code("### BEGIN SOLUTION\nx = 1", "t", "f.py")
    with pytest.raises(TitoError, match="without a"):
        stub_code("x = 1\n### END SOLUTION", "t", "f.py")


GIVEN = '''# %% [markdown]
# # Module 02, given code: helpers
#
# > Helpers a student reads, not writes.

# %%
#| default_exp compression.helpers

# %%
#| export
def double(x):
    return 2 * x

# %%
assert double(2) == 4
'''

LATER = '''# %% [markdown]
# # Module 03: Later
#
# > A module after the released one.

# %%
#| default_exp compression.later

# %% nbgrader={"grade": false, "grade_id": "triple", "locked": false, "solution": true, "schema_version": 3}
#| export
def triple(x):
    ### BEGIN SOLUTION
    return 3 * x  # the later module's secret
    ### END SOLUTION
'''


@pytest.fixture(scope="module")
def course_with_given_and_later(course, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("course3") / "course"
    shutil.copytree(course, root)
    (root / "modules" / "02_prune" / "helpers_dev.py").write_text(GIVEN)
    (root / "modules" / "03_later").mkdir()
    (root / "modules" / "03_later" / "later_dev.py").write_text(LATER)
    proc = run_tito(root, "export", "--all")
    assert proc.returncode == 0, proc.stderr
    return root


def test_given_notebooks_export_with_their_lesson(course_with_given_and_later):
    helpers = course_with_given_and_later / "tinytorch" / "compression" / "helpers.py"
    assert "def double(x)" in helpers.read_text()


def test_a_release_leaves_out_later_modules_and_keeps_given_notebooks(course_with_given_and_later, tmp_path):
    out = tmp_path / "student"
    proc = run_tito(course_with_given_and_later, "release", "02_prune", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "modules" / "02_prune" / "helpers_dev.py").read_text() == GIVEN
    assert (out / "tinytorch" / "compression" / "helpers.py").exists()
    assert not (out / "modules" / "03_later").exists()
    assert not (out / "tinytorch" / "compression" / "later.py").exists()
    assert not any("the later module's secret" in p.read_text(errors="replace") for p in out.rglob("*.py"))


def test_a_release_of_a_later_module_keeps_the_earlier_solutions(course_with_given_and_later, tmp_path):
    out = tmp_path / "student"
    proc = run_tito(course_with_given_and_later, "release", "03_later", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "np.argsort" in (out / "modules" / "02_prune" / "prune_dev.py").read_text()   # 02's solution
    later = (out / "modules" / "03_later" / "later_dev.py").read_text()
    assert 'raise NotImplementedError("Task triple' in later and "secret" not in later
    assert "hidden tests" not in (out / "README.md").read_text()   # module 03 has none
