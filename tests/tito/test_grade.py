"""`tito grade` on the fixture course: honest, broken and adversarial submissions.

Each adversarial submission in fixtures/submissions/ must get exactly the points it earned,
grading must finish, and nothing outside grading's temporary folders may change.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import time

import pytest

from tito_testlib import FIXTURES, run_tito, snapshot

SUBMISSIONS = FIXTURES / "submissions"
TASKS = ["magnitude-mask", "sparsity", "prune"]

# submission -> (magnitude-mask, sparsity, prune) points it earned, out of (2, 1, 2)
POINTS_WITHOUT_PRUNE = "[tasks]\nmagnitude-mask = 2\nsparsity = 1\n"
POINTS_WITH_EXTRA = "[tasks]\nmagnitude-mask = 2\nsparsity = 1\nprune = 2\nextra = 1\n"

EXPECTED = {
    "solution": (2, 1, 2),
    "stub": (0, 0, 0),
    "partial": (2, 0, 0),
    "infinite_loop": (2, 0, 2),
    "memory_bomb": (0, 1, 0),
    "sys_exit": (0, 0, 0),
    "os_exit": (0, 0, 0),
    "forged_results": (2, 0, 0),
    "monkeypatch": (0, 1, 0),
    "always_equal": (0, 0, 0),
    "syntax_error": (0, 0, 0),
    "missing_function": (2, 0, 2),
    "writes_outside": (2, 0, 2),
    "introspection": (0, 1, 0),
    "notebook": (2, 1, 2),
}


def _modified_course(course, folder, points=None, test_edit=None):
    root = folder / "course"
    shutil.copytree(course, root)
    if points is not None:
        (root / "tests" / "02_prune" / "points.toml").write_text(points)
    if test_edit is not None:
        test = root / "tests" / "02_prune" / "test_prune.py"
        test.write_text(test_edit(test.read_text()))
    return root


@pytest.fixture(scope="module")
def cli(course, tmp_path_factory):
    """The slower independent `tito grade` runs, started together so that they overlap."""
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("cli")
    trivial = '\n\n@pytest.mark.task("sparsity")\ndef test_trivial():\n    assert True\n'
    # a test whose oracle is not installed: it skips on the solution and on the stub alike
    skipping = ('\n\n@pytest.mark.task("sparsity")\ndef test_needs_oracle():\n'
                '    pytest.importorskip("tito_no_such_oracle")\n    assert sparsity(np.zeros(2)) == 1.0\n')
    misspelt = lambda text: text.replace('@pytest.mark.task("sparsity")', '@pytest.mark.tsak("sparsity")')  # noqa: E731
    outside = base / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("instructor data\n")
    vandal = base / "writes_outside.py"
    vandal.write_text((SUBMISSIONS / "writes_outside.py").read_text().replace(
        "__CANARY__", str(outside / "canary.txt")).replace("__OUTSIDE__", str(outside / "new.txt")))
    runs = {
        "audit_only": (course, ["grade", str(vandal), "--module", "02", "--no-landlock"]),
        "single": (course, ["grade", str(SUBMISSIONS / "partial.py"), "--module", "02", "--json",
                            str(base / "results.json")]),
        "list": (course, ["grade", "--list", "02_prune"]),
        "self_check": (course, ["grade", "--self-check", "02_prune"]),
        "self_check_trivial": (_modified_course(course, base / "trivial", test_edit=lambda t: t + trivial),
                               ["grade", "--self-check", "--all"]),
        "self_check_skip": (_modified_course(course, base / "skip", test_edit=lambda t: t + skipping),
                            ["grade", "--self-check", "02"]),
        "unknown_task": (_modified_course(course, base / "unknown", points=POINTS_WITHOUT_PRUNE), ["grade", "--list", "02"]),
        "task_without_test": (_modified_course(course, base / "extra", points=POINTS_WITH_EXTRA), ["grade", "--list", "02"]),
        "misspelt_marker": (_modified_course(course, base / "misspelt", test_edit=misspelt), ["grade", "--list", "02"]),
    }
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {name: pool.submit(run_tito, root, *args, tmpdir=base / "tmp" / name) for name, (root, args) in runs.items()}
    pool.shutdown(wait=False)
    return {"futures": futures, "json": base / "results.json", "outside": outside}


def _cli(cli, name):
    return cli["futures"][name].result()


@pytest.fixture(scope="module")
def batch(course, cli, tmp_path_factory):
    """Grade every fixture submission in one `tito grade FOLDER --jobs 2` run."""
    import jupytext

    from tito.graded import release_source

    base = tmp_path_factory.mktemp("batch")
    outside = base / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("instructor data\n")
    folder = base / "submissions"
    folder.mkdir()
    for path in SUBMISSIONS.glob("*.py"):
        text = path.read_text().replace("__CANARY__", str(canary)).replace("__OUTSIDE__", str(outside / "new.txt"))
        (folder / path.name).write_text(text)
    source = course / "modules" / "02_prune" / "prune_dev.py"
    shutil.copyfile(source, folder / "solution.py")
    (folder / "stub.py").write_text(release_source(source, stub=True))
    student = folder / "notebook"  # one folder per student, holding a Jupyter notebook
    student.mkdir()
    jupytext.write(jupytext.read(source), student / "prune_dev.ipynb", fmt="ipynb")
    before_course, before_outside = snapshot(course), snapshot(outside)
    tmp = base / "tmp"
    started = time.monotonic()
    proc = run_tito(course, "grade", str(folder), "--module", "02_prune", "--jobs", "2", "--timeout", "1.5",
                    "--out", str(base / "grades"), tmpdir=tmp)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"proc": proc, "out": base / "grades", "wall": wall, "course": course, "outside": outside,
            "before": (before_course, before_outside), "tmp": tmp, "canary": canary}


def _results(batch, name):
    return json.loads((batch["out"] / "results" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_submission_gets_exactly_what_it_earned(batch, name):
    results = _results(batch, name)
    assert tuple(results["extra_data"]["tasks"][t] for t in TASKS) == EXPECTED[name], results["output"]
    assert results["score"] == sum(EXPECTED[name])
    assert results["max_score"] == 5


def test_gradebook_has_one_row_per_student(batch):
    with open(batch["out"] / "gradebook.csv", newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(EXPECTED)
    assert float(rows["partial"]["score"]) == 2.0 and float(rows["partial"]["magnitude-mask"]) == 2.0
    assert "graded 15 submissions" in batch["proc"].stdout


def test_results_follow_gradescope_format(batch):
    results = _results(batch, "partial")
    assert set(results) >= {"score", "execution_time", "tests", "output", "visibility"}
    assert isinstance(results["execution_time"], float)
    names = [t["name"] for t in results["tests"]]
    assert len(names) == 7 and len(set(names)) == 7
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility", "status"}
        assert test["visibility"] == ("after_published" if "test_hidden_" in test["name"] else "visible")
        assert test["score"] in (0.0, test["max_score"])
    by_task = {}
    for test in results["tests"]:
        by_task[test["tags"][0]] = by_task.get(test["tags"][0], 0) + test["max_score"]
    assert by_task == pytest.approx({"magnitude-mask": 2, "sparsity": 1, "prune": 2}, abs=1e-3)


def test_nothing_outside_the_sandbox_changed(batch):
    before_course, before_outside = batch["before"]
    assert snapshot(batch["course"]) == before_course
    assert snapshot(batch["outside"]) == before_outside
    assert batch["canary"].read_text() == "instructor data\n"
    assert not list(batch["tmp"].iterdir())  # every sandbox and kit was removed


def test_failures_are_explained(batch):
    def outputs(name):
        return " ".join(t["output"] for t in _results(batch, name)["tests"] if t["status"] == "failed")

    assert "timed out after 1.5 s" in outputs("infinite_loop")
    assert "MemoryError" in outputs("memory_bomb")
    assert "SystemExit" in _results(batch, "sys_exit")["output"]
    assert "exited with code 0" in _results(batch, "os_exit")["extra_data"]["problem"]
    assert "syntax error" in _results(batch, "syntax_error")["extra_data"]["problem"]
    assert "does not define sparsity" in outputs("missing_function")
    assert "not implemented yet" in outputs("stub")
    assert "AlwaysEqual defines" in outputs("always_equal")
    assert "tampering" in outputs("monkeypatch")
    assert "refused" in outputs("writes_outside")
    notes = " ".join(_results(batch, "forged_results")["extra_data"]["flags"])
    assert "for writing outside the work folder" in notes and "/proc/" in notes


def test_attacks_are_reported_as_notes(batch):
    flags = " ".join(_results(batch, "monkeypatch")["extra_data"]["flags"])
    assert "numpy.testing.assert_array_equal was replaced" in flags
    assert "a pytest plugin was registered" in flags
    refused = " ".join(t["output"] for t in _results(batch, "introspection")["tests"])
    for event in ("sys._getframe", "gc.get_objects", "ctypes", "tb_frame", "gi_frame",
                  "magnitude_mask() gave the test a numpy array with a weak-reference callback attached"):
        assert event in refused
    flags = " ".join(_results(batch, "writes_outside")["extra_data"]["flags"])
    for refused in ("os.system", "subprocess.Popen", "os.kill", "os.remove"):
        assert refused in flags


def test_batch_runs_in_parallel(batch):
    # 15 submissions, one of which spends 2 x 1.5 s in time limits
    assert batch["wall"] < 60


def test_monkeypatch_attack_is_real_without_tito(course, tmp_path):
    """Graded with plain pytest (as a naive autograder would), the monkeypatch submission passes."""
    import subprocess
    import sys

    from tito.grade_export import export_submission

    root = tmp_path / "naive"
    shutil.copytree(course / "tinytorch", root / "tinytorch")
    shutil.copytree(course / "tests" / "02_prune", root / "tests")
    (root / "tinytorch" / "compression" / "prune.py").unlink()
    export_submission(SUBMISSIONS / "monkeypatch.py", root / "tinytorch", ["compression/prune.py"])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                           "-o", "markers=task", "tests"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]


def test_single_submission_prints_a_table_and_writes_json(cli):
    proc = _cli(cli, "single")
    assert proc.returncode == 0, proc.stderr
    assert "total: 2 / 5" in proc.stdout
    assert "FAIL sparsity" in proc.stdout and "ok   magnitude-mask" in proc.stdout
    assert json.loads(cli["json"].read_text())["score"] == 2


def test_without_landlock_the_audit_hook_still_protects_files(cli):
    proc = _cli(cli, "audit_only")
    assert proc.returncode == 0, proc.stderr
    assert "sandbox: audit hook only" in proc.stdout and "total: 4 / 5" in proc.stdout
    assert sorted(p.name for p in cli["outside"].iterdir()) == ["canary.txt"]
    assert (cli["outside"] / "canary.txt").read_text() == "instructor data\n"


def test_list_shows_tasks_and_total(cli):
    proc = _cli(cli, "list")
    assert proc.returncode == 0, proc.stderr
    assert "02_prune: 7 graded tests, 5 points" in proc.stdout
    assert "magnitude-mask" in proc.stdout and "1 hidden" in proc.stdout


def test_self_check_passes_for_the_fixture(cli):
    proc = _cli(cli, "self_check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  02_prune: solution 5/5, stub 0/5 on 7 graded tests" in proc.stdout
    assert "1 passed, 0 failed" in proc.stdout


def test_self_check_catches_a_test_the_stub_passes(cli):
    proc = _cli(cli, "self_check_trivial")
    assert proc.returncode == 1
    assert "the released stub passes sparsity: test_prune.py::test_trivial" in proc.stdout


def test_self_check_names_a_skipped_test_as_skipped(cli):
    proc = _cli(cli, "self_check_skip")
    assert proc.returncode == 1  # unchecked, and worth 0 to every submission: not a pass
    assert "skipped on the solution, so unchecked" in proc.stdout
    assert "test_prune.py::test_needs_oracle" in proc.stdout and "tito_no_such_oracle" in proc.stdout
    assert "solution fails" not in proc.stdout and "stub passes" not in proc.stdout


def test_only_weak_references_that_run_code_are_refused():
    import weakref

    import numpy as np

    from tito.grade_child import _weakref_problem

    array = np.zeros(3)
    plain = weakref.ref(array)  # what hypothesis keeps for each drawn value
    assert _weakref_problem(array, "an array") is None

    class Quiet(weakref.ref):
        __callback__ = None  # hides the callback from a plain attribute lookup

    for attach in (lambda: weakref.finalize(array, print, "late"), lambda: Quiet(array, print),
                   lambda: weakref.proxy(array)):
        extra = attach()
        assert _weakref_problem(array, "an array").startswith("an array with a weak-reference")
        if isinstance(extra, weakref.finalize):
            extra.detach()
        del extra
        assert _weakref_problem(array, "an array") is None
    assert _weakref_problem(3, "an int") is None and plain() is array


@pytest.mark.parametrize("run, message", [
    ("unknown_task", "marked task 'prune', which points.toml does not list"),
    ("task_without_test", "task 'extra' in points.toml has no test"),
    ("misspelt_marker", "'tsak' not found in `markers`"),
])
def test_points_and_markers_problems_are_one_line_errors(cli, run, message):
    proc = _cli(cli, run)
    assert proc.returncode == 1
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("points, message", [
    ("[tasks]\nmagnitude-mask = -2\n", "must be a positive number"),
    ("[task]\nx = 1\n", "unknown table"),
    ("[tasks]\n", "needs a [tasks] table"),
    ("[tasks]\nmask = 1\n[limits]\ntimeout = 3\n", "unknown limit 'timeout'"),
    ("[tasks\n", "not valid TOML"),
])
def test_points_file_is_checked(tmp_path, points, message):
    from tito.errors import TitoError
    from tito.graded import load_points

    (tmp_path / "points.toml").write_text(points)
    with pytest.raises(TitoError, match=re.escape(message)):
        load_points(tmp_path)


def test_points_file_parses_tasks_and_limits(tmp_path):
    from tito.graded import load_points

    (tmp_path / "points.toml").write_text("[tasks]\na = 2\nb = 0.5\n[limits]\ntest_timeout = 9\n")
    points = load_points(tmp_path)
    assert points.tasks == {"a": 2.0, "b": 0.5} and points.total == 2.5
    assert points.limits["test_timeout"] == 9 and points.limits["memory_mb"] == 2048
    assert load_points(tmp_path / "missing") is None


@pytest.mark.parametrize("args, message", [
    (["grade"], "which module?"),
    (["grade", "nowhere.py", "--module", "02"], "does not exist"),
    (["grade", str(SUBMISSIONS / "partial.py"), "--module", "99"], "unknown module"),
    (["grade", str(SUBMISSIONS / "partial.py"), "--module", "01"], "01_tensor is not graded"),
    (["grade", "x.py", "--module", "02", "--jobs", "0"], "--jobs must be at least 1"),
    (["grade", "--self-check"], "name a module"),
    (["release", "02"], "--out"),
])
def test_cli_errors_are_one_line(course, tmp_path, args, message):
    proc = run_tito(course, *args, tmpdir=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_folder_with_no_submissions_is_an_error(course, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_tito(course, "grade", str(empty), "--module", "02", tmpdir=tmp_path / "tmp")
    assert proc.returncode == 1 and "holds no submissions" in proc.stderr
