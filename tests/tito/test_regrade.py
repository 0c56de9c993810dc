"""benchmarks/regrade.py: the submission it regrades carries exactly its bugs, and the feedback it
compares loses only what depends on the run (the regrading itself is a benchmark)."""
from __future__ import annotations

import sys

import nbformat
import pytest

from tito_testlib import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level folder of the repository, not installed

from benchmarks.regrade import BUGS, SOURCE, nbgrader_feedback, normalized_results, wrong_submission  # noqa: E402


def test_each_bug_changes_one_line_of_the_reference():
    reference, wrong = SOURCE.read_text(encoding="utf-8").split("\n"), wrong_submission().split("\n")
    assert len(wrong) == len(reference)
    changed = [(old, line) for old, line in zip(reference, wrong) if old != line]
    assert len(changed) == len(BUGS)
    for (before, after), (_, old, new, _) in zip(changed, BUGS):
        assert after == before.replace(old, new) and new in after


def test_a_bug_that_no_longer_matches_the_reference_is_an_error(tmp_path):
    task, old, _, _ = BUGS[0]
    moved = tmp_path / SOURCE.name
    moved.write_text(SOURCE.read_text(encoding="utf-8").replace(old, old + "  # reworded"), encoding="utf-8")
    assert wrong_submission(moved).count(old) == 0  # the bug still lands: the line holds its text
    moved.write_text(SOURCE.read_text(encoding="utf-8").replace(old, "pass"), encoding="utf-8")
    with pytest.raises(SystemExit, match=f"task {task}: .* occurs 0 times"):
        wrong_submission(moved)


def test_results_lose_only_their_wall_clock():
    results = {"score": 2.5, "execution_time": 13.9, "tests": [{"output": "1/2 checks passed"}]}
    assert normalized_results(results) == normalized_results({**results, "execution_time": 20.1})
    assert normalized_results(results) != normalized_results({**results, "score": 3.0})
    assert normalized_results(results) != normalized_results({**results, "tests": [{"output": "2/2 checks passed"}]})


def _autograded(path, pid: int, value: str):
    nb = nbformat.v4.new_notebook()
    graded = nbformat.v4.new_code_cell("assert f() == 2", metadata={"nbgrader": {"grade": True, "grade_id": "f-test"}})
    graded.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue=value, traceback=[
        f"\x1b[0;31mAssertionError\x1b[0m: {value}", f"File /tmp/ipykernel_{pid}/123.py:1"])]
    if pid % 2:  # the same printed text, flushed in one chunk or in two
        graded.outputs.insert(0, nbformat.v4.new_output("stream", name="stdout", text="checking f\n"))
    else:
        graded.outputs[:0] = [nbformat.v4.new_output("stream", name="stdout", text=text) for text in ("check", "ing f\n")]
    timing = nbformat.v4.new_code_cell("print(t)")
    timing.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{pid} ms\n")]
    nb.cells = [graded, timing]
    nbformat.write(nb, path)
    return path


def test_nbgrader_feedback_loses_the_kernel_pid_chunks_and_ungraded_output_only(tmp_path):
    grades = {"f-test": 0.0}
    one = nbgrader_feedback(grades, _autograded(tmp_path / "a.ipynb", 101, "1 != 2"))
    assert one == nbgrader_feedback(grades, _autograded(tmp_path / "b.ipynb", 202, "1 != 2"))
    assert one != nbgrader_feedback(grades, _autograded(tmp_path / "c.ipynb", 101, "3 != 2"))
    assert one != nbgrader_feedback({"f-test": 1.0}, _autograded(tmp_path / "d.ipynb", 101, "1 != 2"))
