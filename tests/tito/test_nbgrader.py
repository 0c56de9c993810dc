"""Real nbgrader (0.9) accepts module 18 as it is: its own metadata validator, then the whole route.

A course module is a jupytext percent-format `.py` whose nbgrader cell metadata sits in the cell
headers. nbgrader only reads `.ipynb`, so every check converts with jupytext first, then asks
nbgrader's own code, never a re-implementation of its rules:

- `nbgrader.nbgraderformat.reads` validates every cell against schema v3 (required keys,
  `points` on graded cells, `grade_id` present and unique, schema_version);
- the end-to-end test builds a temporary nbgrader course and runs `nbgrader generate_assignment`,
  `nbgrader autograde` and `nbgrader export` exactly as README.md's "nbgrader" section does.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from tito_testlib import FIXTURES, REPO, require, run_tito

require("nbgrader")  # the `instructor` extra; in CI it must be there
from nbgrader import nbgraderformat  # noqa: E402
from nbgrader.utils import is_grade  # noqa: E402

MODULE = "18_compression"
SOURCE = REPO / "modules" / MODULE / "compression_dev.py"
FIXTURE_SOURCE = FIXTURES / "course" / "modules" / "02_prune" / "prune_dev.py"


def as_ipynb(text: str) -> str:
    "A percent-format source as the .ipynb text nbgrader reads (what `jupytext --to ipynb` writes)."
    return jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="ipynb")


def validated(text: str):
    "nbgrader's own reader: parses the notebook and validates every cell's metadata (schema v3)."
    return nbgraderformat.reads(as_ipynb(text), as_version=4)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory) -> Path:
    "Module 18's source in the student copy `tito release` writes (solutions stubbed)."
    out = tmp_path_factory.mktemp("release") / "student"
    proc = run_tito(REPO, "release", MODULE, "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "modules" / MODULE / SOURCE.name


# (a) nbgrader's validator accepts the sources as they are -----------------------------------

@pytest.mark.parametrize("path", [SOURCE, FIXTURE_SOURCE], ids=["module-18", "fixture-course"])
def test_source_passes_nbgraders_validator(path):
    nb = validated(path.read_text(encoding="utf-8"))
    assert any(is_grade(cell) for cell in nb.cells)  # the validator had graded cells to check


def test_student_copy_passes_nbgraders_validator(student_copy):
    nb = validated(student_copy.read_text(encoding="utf-8"))
    assert any(is_grade(cell) for cell in nb.cells)


def test_notebook_points_match_points_toml():
    "nbgrader grades by the cells' points, tito by points.toml: both must give the same marks."
    from tito.graded import load_points

    nb = validated(SOURCE.read_text(encoding="utf-8"))
    cell_points = {cell.metadata["nbgrader"]["grade_id"].removesuffix("-test"): cell.metadata["nbgrader"]["points"]
                   for cell in nb.cells if is_grade(cell)}
    assert cell_points == load_points(REPO / "tests" / MODULE).tasks


# (b) ...and rejects them once the metadata is broken -----------------------------------------

def _drop_first_solution_false(text: str) -> str:
    return text.replace(', "solution": false', "", 1)


def _drop_first_points(text: str) -> str:
    return re.sub(r', "points": \d+', "", text, count=1)


def _duplicate_a_grade_id(text: str) -> str:
    return text.replace('"grade_id": "delta-encode-test"', '"grade_id": "magnitude-mask-test"', 1)


@pytest.mark.parametrize("breakage, message", [
    (_drop_first_solution_false, "'solution' is a required property"),
    (_drop_first_points, "does not have points"),
    (_duplicate_a_grade_id, "Duplicate grade id: magnitude-mask-test"),
], ids=["no-solution-key", "graded-without-points", "duplicate-grade-id"])
def test_validator_rejects_broken_metadata(breakage, message):
    text = SOURCE.read_text(encoding="utf-8")
    broken = breakage(text)
    assert broken != text, "the breakage found nothing to break: update this test"
    with pytest.raises(nbgraderformat.ValidationError, match=re.escape(message)):
        validated(broken)


# (c) end to end: generate_assignment, autograde, export ------------------------------------

# The route of README.md's "nbgrader" section, with nbgrader's defaults, except one setting:
# the per-cell timeout. nbgrader's default is 30 s; every cell of module 18 takes under 6 s on
# the course's 2-core machine, but a test must not depend on the machine's speed, so the test
# allows 10 minutes per cell (an honest hang still ends).
NBGRADER_CONFIG = """\
c = get_config()
c.CourseDirectory.course_id = "tinytorch-compression"
c.Execute.timeout = 600  # test only: the README keeps nbgrader's default (30 s)
"""


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # As an instructor's shell runs it: no Jupyter config of this machine's user, the kernel's own
    # plot backend (tito test sets MPLBACKEND=Agg), and this checkout's tinytorch importable.
    env = dict(os.environ, PYTHONPATH=str(REPO), JUPYTER_CONFIG_DIR=str(course / ".jupyter"))
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def grades(tmp_path_factory, student_copy) -> dict[str, dict[str, str]]:
    "Build a course, autograde three submissions, return `nbgrader export`'s rows by student id."
    course = tmp_path_factory.mktemp("nbgrader") / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG)

    def put(folder: Path, text: str) -> None:
        folder.mkdir(parents=True)
        (folder / "compression_dev.ipynb").write_text(as_ipynb(text), encoding="utf-8")

    put(course / "source" / MODULE, SOURCE.read_text(encoding="utf-8"))
    nbgrader(course, "generate_assignment", MODULE)
    released = (course / "release" / MODULE / "compression_dev.ipynb").read_text(encoding="utf-8")
    put(course / "submitted" / "solution" / MODULE, SOURCE.read_text(encoding="utf-8"))
    put(course / "submitted" / "tito-stub" / MODULE, student_copy.read_text(encoding="utf-8"))
    (course / "submitted" / "nbgrader-stub" / MODULE).mkdir(parents=True)
    (course / "submitted" / "nbgrader-stub" / MODULE / "compression_dev.ipynb").write_text(released, encoding="utf-8")
    nbgrader(course, "autograde", MODULE)
    nbgrader(course, "export")
    with open(course / "grades.csv", newline="", encoding="utf-8") as fh:
        return {row["student_id"]: row for row in csv.DictReader(fh)}


def test_nbgrader_max_score_is_the_modules_total(grades):
    from tito.graded import load_points

    assert {float(row["max_score"]) for row in grades.values()} == {load_points(REPO / "tests" / MODULE).total}


def test_nbgrader_gives_the_solution_full_marks(grades):
    assert float(grades["solution"]["score"]) == float(grades["solution"]["max_score"])


def test_nbgrader_gives_the_tito_release_stub_zero(grades):
    assert float(grades["tito-stub"]["score"]) == 0.0


def test_nbgrader_gives_its_own_generated_stub_zero(grades):
    assert float(grades["nbgrader-stub"]["score"]) == 0.0
