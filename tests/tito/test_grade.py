"""`tito grade` on the fixture course: honest, broken and adversarial submissions.

Each adversarial submission in fixtures/submissions/ must get exactly the points it earned,
grading must finish, and nothing outside grading's temporary folders may change.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tito_testlib import FIXTURES, run_tito, snapshot

SUBMISSIONS = FIXTURES / "submissions"
TASKS = ["magnitude-mask", "sparsity", "prune"]

# submission -> (magnitude-mask, sparsity, prune) points it earned, out of (2, 1, 2)
POINTS_WITHOUT_PRUNE = "[tasks]\nmagnitude-mask = 2\nsparsity = 1\n"
POINTS_DISAGREEING = "[tasks]\nmagnitude-mask = 2\nsparsity = 2\nprune = 2\n[limits]\ntest_timeout = 30\n"
POINTS_WITH_EXTRA = "[tasks]\nmagnitude-mask = 2\nsparsity = 1\nprune = 2\nextra = 1\n"

EXPECTED = {
    "solution": (2, 1, 2),
    "stub": (0, 0, 0),
    "partial": (2, 0, 0),
    "infinite_loop": (2, 0, 2),
    "memory_bomb": (0, 1, 2),
    "sys_exit": (0, 0, 0),
    "os_exit": (0, 0, 0),
    "forged_results": (2, 0, 0),
    "monkeypatch": (0, 1, 0),
    "always_equal": (0, 0, 0),
    "syntax_error": (0, 1, 2),
    "missing_function": (2, 0, 2),
    # its attempts on files outside the sandbox are refused (Landlock) and harm nobody: it earns its points
    "writes_outside": (2, 1, 2),
    "introspection": (0, 1, 0),
    "notebook": (2, 1, 2),
    # a student's copy (nbgrader metadata kept): a wrong magnitude_mask, sparsity not started, a right
    # prune that calls magnitude_mask; prune is graded with the reference magnitude_mask
    "wrong_mask_right_prune": (0, 0, 2),
    # sparsity reads its own package file: only the student's code is there, so it costs nothing
    "reads_sources": (2, 1, 2),
    # prune walks magnitude_mask's closure, bytecode and source (the reference serves it) into its error
    "leak_probe": (0, 1, 0),
    # a right sparsity that prints 10 MB first: printing never costs points
    "print_flood": (2, 1, 2),
    # the solution, plus a child it forks at import into a session of its own, to outlive grading
    "orphan": (2, 1, 2),
}
LEAK_PROBE = """    import gc, inspect
    seen, found = [], [magnitude_mask, getattr(magnitude_mask, "__wrapped__", None)]
    for f in list(found):
        for cell in getattr(f, "__closure__", None) or ():
            try:
                found.append(cell.cell_contents)
            except ValueError:
                pass
    found += [o for o in gc.get_objects() if callable(o) and getattr(o, "__name__", "") == "magnitude_mask"]
    for f in found:
        code = getattr(f, "__code__", None)
        if code is not None:
            seen += [code.co_consts, code.co_names, code.co_varnames, code.co_code.hex()]
        try:
            seen.append(inspect.getsource(f))
        except (OSError, TypeError):
            pass
    seen.append(repr(vars(inspect.getmodule(magnitude_mask) or inspect)))
    print(repr(seen))
    raise ValueError(repr(seen))
"""
# what only the reference's magnitude_mask holds: its names, constants and comment
REFERENCE_ONLY = ("argsort", "stable", "order", "keeps ties")
READ_SOURCES = ("    open(__file__).read()  # the package file: the reference, when graded alone\n")
ORPHAN = """
import os as _os, time as _time
if _os.fork() == 0:  # a child in a session of its own: the process group kill does not reach it
    _os.setsid()
    _time.sleep(300)
    _os._exit(0)
"""
WRONG_MASK = "    return np.ones(np.shape(weights), dtype=bool)  # keeps everything: wrong\n"


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
    source = (course / "modules" / "02_prune" / "prune_dev.py").read_text()
    end = source.index("### END SOLUTION", source.index("def sparsity")) + len("### END SOLUTION")
    (base / "import_hang.py").write_text(source[:end] + "\nwhile True:  # at import: never returns\n    pass" + source[end:])
    runs = {
        "single": (course, ["grade", "run", str(SUBMISSIONS / "partial.py"), "--module", "02", "--json",
                            str(base / "results.json")]),
        "list": (course, ["grade", "list", "02_prune"]),
        "import_hang": (course, ["grade", "run", str(base / "import_hang.py"), "--module", "02", "--timeout", "1.5",
                                 "--json", str(base / "import_hang.json")]),
        "infinite_loop": (course, ["grade", "run", str(SUBMISSIONS / "infinite_loop.py"), "--module", "02", "--timeout", "1.5",
                                   "--json", str(base / "loop.json")]),
        "self_check": (course, ["grade", "self-check", "02_prune"]),
        "self_check_trivial": (_modified_course(course, base / "trivial", test_edit=lambda t: t + trivial),
                               ["grade", "self-check", "--all"]),
        "self_check_skip": (_modified_course(course, base / "skip", test_edit=lambda t: t + skipping),
                            ["grade", "self-check", "02"]),
        "self_check_points": (_modified_course(course, base / "points", points=POINTS_DISAGREEING), ["grade", "self-check", "02"]),
        "unknown_task": (_modified_course(course, base / "unknown", points=POINTS_WITHOUT_PRUNE), ["grade", "list", "02"]),
        "task_without_test": (_modified_course(course, base / "extra", points=POINTS_WITH_EXTRA), ["grade", "list", "02"]),
        "misspelt_marker": (_modified_course(course, base / "misspelt", test_edit=misspelt), ["grade", "list", "02"]),
    }
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {name: pool.submit(run_tito, root, *args, tmpdir=base / "tmp" / name) for name, (root, args) in runs.items()}
    pool.shutdown(wait=False)
    return {"futures": futures, "json": base / "results.json", "outside": outside, "loop_json": base / "loop.json",
            "import_hang_json": base / "import_hang.json"}


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
    (folder / "wrong_mask_right_prune.py").write_text(_wrong_mask_right_prune(source))
    text = source.read_text()
    body = text.index("    ### BEGIN SOLUTION", text.index("def sparsity"))
    (folder / "reads_sources.py").write_text(text[:body] + READ_SOURCES + text[body:])
    body = text.index("    ### BEGIN SOLUTION", text.index("def prune"))
    probe = text[:body] + LEAK_PROBE + text[body:]
    start = probe.index("    ### BEGIN SOLUTION", probe.index("def magnitude_mask"))
    end = probe.index("    ### END SOLUTION", start) + len("    ### END SOLUTION")
    (folder / "leak_probe.py").write_text(probe[:start] + '    raise NotImplementedError("mine")' + probe[end:])
    body = text.index("    ### BEGIN SOLUTION", text.index("def sparsity"))
    (folder / "print_flood.py").write_text(text[:body] + '    print("x" * (10 << 20))\n' + text[body:])
    head = text.index("from tinytorch.core.tensor import Tensor\n") + len("from tinytorch.core.tensor import Tensor\n")
    (folder / "orphan.py").write_text(text[:head] + ORPHAN + text[head:])
    (folder / "infinite_loop.py").unlink()  # graded on its own, with a short time limit (cli fixture)
    before_course, before_outside = snapshot(course), snapshot(outside)
    tmp = base / "tmp"
    # a generous time limit: no honest test comes near it, even on a loaded machine
    proc = run_tito(course, "grade", "run", str(folder), "--module", "02_prune", "--jobs", "2", "--timeout", "120",
                    "--out", str(base / "grades"), tmpdir=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"proc": proc, "out": base / "grades", "course": course, "outside": outside,
            "before": (before_course, before_outside), "tmp": tmp, "canary": canary}


def _wrong_mask_right_prune(source):
    from tito.grading.selfcheck import mixed_source

    text = mixed_source(source, {"sparsity"})
    start = text.index("    ### BEGIN SOLUTION", text.index("def magnitude_mask"))
    end = text.index("    ### END SOLUTION", start)
    return text[:start] + WRONG_MASK + text[end + len("    ### END SOLUTION"):]


def _results(batch, name):
    if name == "infinite_loop":
        return batch["infinite_loop"]
    return json.loads((batch["out"] / "results" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def graded(batch, cli):
    """The batch's results, and the infinite loop graded on its own with a 1.5 s time limit."""
    proc = _cli(cli, "infinite_loop")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {**batch, "infinite_loop": json.loads(cli["loop_json"].read_text()), "loop_stdout": proc.stdout}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_submission_gets_exactly_what_it_earned(graded, name):
    results = _results(graded, name)
    assert tuple(results["extra_data"]["tasks"][t] for t in TASKS) == EXPECTED[name], results["output"]
    assert results["score"] == sum(EXPECTED[name])
    assert results["max_score"] == 5


def test_gradebook_has_one_row_per_student(batch):
    with open(batch["out"] / "gradebook.csv", newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(EXPECTED) - {"infinite_loop"}
    assert float(rows["partial"]["score"]) == 2.0 and float(rows["partial"]["magnitude-mask"]) == 2.0
    assert {row["assignment"] for row in rows.values()} == {"02_prune"}
    assert f"graded {len(EXPECTED) - 1} submissions" in batch["proc"].stdout


def test_results_have_one_row_per_task_in_exercise_order(batch):
    results = _results(batch, "partial")
    assert set(results) >= {"score", "execution_time", "tests", "output", "visibility"}
    assert isinstance(results["execution_time"], float)
    rows = [(t["name"], t["max_score"], t["visibility"]) for t in results["tests"]]
    # points.toml: magnitude-mask 2 (2 visible tests, 1 hidden), sparsity 1 (2), prune 2 (1 visible, 1 hidden)
    assert rows == [("magnitude-mask", 1.33, "visible"), ("magnitude-mask (hidden tests)", 0.67, "after_published"),
                    ("sparsity", 1.0, "visible"), ("prune", 1.0, "visible"),
                    ("prune (hidden tests)", 1.0, "after_published")]
    assert round(sum(t["max_score"] for t in results["tests"]), 6) == results["max_score"] == 5
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility", "status"}
        if test["visibility"] != "visible":
            assert test["output"] in ("passed", "failed")  # what a hidden test checks stays hidden
    # the visible total leaves the hidden points out until grades are published
    assert "1.33 / 3.33 points on the visible tests" in results["output"]
    assert "hidden tests' 1.67 points" in results["output"]


def test_failures_are_short_and_point_at_the_students_line(batch):
    rows = {t["name"]: t["output"] for t in _results(batch, "partial")["tests"]}
    sparsity = rows["sparsity"].splitlines()
    assert sparsity[0] == "0/2 checks passed; failing:"
    assert sparsity[1].startswith("- test_prune.py::test_sparsity[") and "numpy.float64" in sparsity[1]
    assert "checked at test_prune.py:" in rows["sparsity"]
    # the stub line the student left: their file and line, not the exported package's
    assert "[in your code at partial.py:31]" in rows["prune"]
    for output in rows.values():
        assert " at 0x" not in output and len(output.splitlines()) <= 2 + 5 * 3
    assert "not started: still the released stub" in {t["name"]: t["output"] for t in
                                                       _results(batch, "stub")["tests"]}["sparsity"]


def test_nothing_outside_the_sandbox_changed(batch):
    before_course, before_outside = batch["before"]
    assert snapshot(batch["course"]) == before_course
    assert snapshot(batch["outside"]) == before_outside
    assert batch["canary"].read_text() == "instructor data\n"
    assert not list(batch["tmp"].iterdir())  # every sandbox and kit was removed


def test_failures_are_explained(graded):
    batch = graded

    def outputs(name):
        return " ".join(t["output"] for t in _results(batch, name)["tests"] if t["status"] == "failed")

    assert "timed out after 1.5 s" in outputs("infinite_loop")
    assert "MemoryError" in outputs("memory_bomb")
    assert "SystemExit" in _results(batch, "sys_exit")["output"]
    assert "the process ended while your code was imported" in _results(batch, "os_exit")["extra_data"]["problem"]
    # a syntax error in one task's cell costs that task only, and says so
    assert "task magnitude-mask does not compile" in _results(batch, "syntax_error")["output"]
    assert "sparsity is not defined in your notebook" in outputs("missing_function")
    assert "not started" in outputs("stub")
    assert "cannot be checked" in outputs("always_equal")
    assert "is not allowed in graded code" not in json.dumps([_results(batch, n) for n in EXPECTED if n != "infinite_loop"])


def test_no_reference_code_reaches_the_feedback(batch):
    results = json.dumps(_results(batch, "leak_probe"))
    assert "ValueError" in results  # the probe ran and its error is shown in full
    probe = (batch["out"].parent / "submissions" / "leak_probe.py").read_text()
    tokens = [token for token in REFERENCE_ONLY if token not in probe]  # the probe itself does not hold them
    assert len(tokens) >= 3, tokens
    for token in tokens:
        assert token not in results, token  # ...and nothing of the reference reached its feedback


def test_a_print_flood_is_cut_with_a_note_and_costs_nothing(batch):
    row = {t["name"]: t["output"] for t in _results(batch, "print_flood")["tests"]}["sparsity"]
    assert "printed 20,971,5" in row and "printing is never graded; cut to the first 300 characters" in row
    assert len(row) < 1000


def test_no_process_of_a_submission_outlives_its_grading(batch):
    """Whatever a submission starts (here a child in a session of its own) ends with its grading."""
    import os

    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if str(batch["tmp"]).encode() in handle.read():
                    left.append(int(pid))
        except OSError:
            pass  # ended while we looked
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} process(es) started by a submission still run after grading"


def test_a_hang_costs_one_time_limit_per_task(graded):
    rows = {t["name"]: t["output"] for t in graded["infinite_loop"]["tests"]}
    assert "timed out after 1.5 s" in rows["sparsity"]
    assert "not run: an earlier test of task sparsity timed out" in rows["sparsity"]
    assert graded["infinite_loop"]["extra_data"]["tasks"] == {"magnitude-mask": 2, "sparsity": 0, "prune": 2}


def test_a_hang_at_import_is_found_once_and_costs_its_task(cli):
    proc = _cli(cli, "import_hang")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(cli["import_hang_json"].read_text())
    assert results["extra_data"]["tasks"] == {"magnitude-mask": 2, "sparsity": 0, "prune": 2}, results["output"]
    assert "task sparsity: your code timed out while importing" in results["output"]
    assert results["execution_time"] < 60  # one import limit (1.5 s + 10 s of slack), not one per task or test


def test_regrades_give_the_same_score_and_feedback(kit, tmp_path):
    from tito.grading.submission import grade_submission

    source = kit.folder.parent  # any readable file: the partial submission is what is graded
    runs = [grade_submission(kit, SUBMISSIONS / "partial.py", "partial") for _ in range(3)]
    for results in runs:
        results.pop("execution_time")
    assert runs[0] == runs[1] == runs[2] and source


def test_single_submission_prints_a_table_and_writes_json(cli):
    proc = _cli(cli, "single")
    assert proc.returncode == 0, proc.stderr
    assert "total: 2 / 5" in proc.stdout
    assert "FAIL sparsity" in proc.stdout and "ok   magnitude-mask" in proc.stdout
    assert json.loads(cli["json"].read_text())["score"] == 2


def test_kit_ships_the_shared_test_helpers(kit, course):
    # tests/conftest.py and tests/_shared/ beside the module folders: test_prune.py imports from _shared/
    for name in ("conftest.py", "_shared/course_oracles.py"):
        assert (kit.folder / "tests" / name).read_text() == (course / "tests" / name).read_text()
    assert sorted(p.name for p in (kit.folder / "tests").iterdir()) == ["02_prune", "_shared", "conftest.py"]


def test_list_shows_tasks_and_total(cli):
    proc = _cli(cli, "list")
    assert proc.returncode == 0, proc.stderr
    assert "02_prune: 7 graded tests, 5 points" in proc.stdout
    assert "magnitude-mask" in proc.stdout and "1 hidden" in proc.stdout


def test_self_check_passes_for_the_fixture(cli):
    proc = _cli(cli, "self_check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  02_prune: solution 5/5, stub 0/5 on 7 graded tests, each of 3 tasks graded alone" in proc.stdout
    assert "1 passed, 0 failed" in proc.stdout


def test_self_check_catches_points_that_disagree_with_the_notebook(cli):
    proc = _cli(cli, "self_check_points")
    assert proc.returncode == 1
    assert ("task 'sparsity': points.toml gives 2 points, the notebook's nbgrader test cell sparsity-test "
            "gives 1") in proc.stdout


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
    (["grade", "run", "x.py"], "does not exist"),
    (["grade", "run", "nowhere.py", "--module", "02"], "does not exist"),
    (["grade", "run", str(SUBMISSIONS / "partial.py"), "--module", "99"], "unknown module"),
    (["grade", "run", str(SUBMISSIONS / "partial.py"), "--module", "01"], "01_tensor is not graded"),
    (["grade", "run", "x.py", "--module", "02", "--jobs", "0"], "--jobs must be at least 1"),
    (["grade", "self-check"], "name one module"),
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
    proc = run_tito(course, "grade", "run", str(empty), "--module", "02", tmpdir=tmp_path / "tmp")
    assert proc.returncode == 1 and "holds no submissions" in proc.stderr


def test_ctrl_c_while_grading_one_submission_is_one_line(course, tmp_path):
    import os

    env = dict(os.environ, PYTHONPATH=str(FIXTURES.parents[2]), TMPDIR=str(tmp_path))
    # Ctrl-C's default action in the child even where this run inherited SIGINT ignored (a background
    # job of a non-interactive shell), so the test checks tito, not how its runner was started.
    proc = subprocess.Popen([sys.executable, "-m", "tito.cli", "grade", "run", str(SUBMISSIONS / "infinite_loop.py"),
                             "--module", "02", "--timeout", "120"], cwd=course, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # interrupt once a test is running (a grading sandbox exists), or after 60 s at the latest
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith("tito-grade-") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "tito: interrupted"


def _student_folder(tmp_path, course, name, py_edit=None):
    import jupytext

    source = course / "modules" / "02_prune" / "prune_dev.py"
    folder = tmp_path / name
    (folder / "work").mkdir(parents=True)
    text = source.read_text()
    (folder / "prune_dev.py").write_text(py_edit(text) if py_edit else text)
    jupytext.write(jupytext.reads(text, fmt="py:percent"), folder / "work" / "prune_dev.ipynb", fmt="ipynb")
    (folder / "notes.py").write_text("# scratch\n")
    return folder


def test_a_py_and_ipynb_of_the_same_code_grade_the_py_and_name_what_was_ignored(course, tmp_path):
    folder = _student_folder(tmp_path, course, "same")
    proc = run_tito(course, "grade", "run", str(folder), "--module", "02", "--json", str(tmp_path / "r.json"),
                    tmpdir=tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["score"] == 5 and results["extra_data"]["submission"] == "prune_dev.py"
    assert results["output"].splitlines()[0] == "graded file: prune_dev.py (ignored: notes.py, work/prune_dev.ipynb)"


def test_two_different_versions_of_the_module_are_refused(course, tmp_path):
    folder = _student_folder(tmp_path, course, "differ", py_edit=lambda t: t.replace("drop = int(", "drop = 0 * int("))
    proc = run_tito(course, "grade", "run", str(folder), "--module", "02", "--json", str(tmp_path / "r.json"),
                    tmpdir=tmp_path / "tmp")
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["score"] == 0
    assert "two different versions of the module (prune_dev.py, work/prune_dev.ipynb)" in results["extra_data"]["problem"]


def test_gradebook_joins_a_roster_and_lists_who_did_not_submit(course, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    source = course / "modules" / "02_prune" / "prune_dev.py"
    shutil.copyfile(source, folder / "ada@uni.edu.py")
    shutil.copyfile(SUBMISSIONS / "partial.py", folder / "bob@uni.edu.py")
    roster = tmp_path / "roster.csv"
    roster.write_text("Name,SID,Email\n    Points Possible,,\nAda L,001,ada@uni.edu\nBob K,002,bob@uni.edu\n"
                      "Cy N,003,cy@uni.edu\n")  # Canvas's export: its "Points Possible" row is no student
    proc = run_tito(course, "grade", "run", str(folder), "--module", "02", "--out", str(tmp_path / "g"), "--roster",
                    str(roster), "--assignment", "hw2", tmpdir=tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "g" / "gradebook.csv", newline="") as handle:
        rows = {row["SID"]: row for row in csv.DictReader(handle)}
    assert list(rows["001"])[:5] == ["assignment", "student", "Name", "SID", "Email"]
    assert (rows["001"]["assignment"], rows["001"]["score"]) == ("hw2", "5.0")
    assert (rows["002"]["Name"], rows["002"]["score"]) == ("Bob K", "2.0")
    assert (rows["003"]["score"], rows["003"]["problem"]) == ("0", "no submission")
    assert "" not in rows and len(rows) == 3  # no row for "Points Possible"


def test_gradebook_reads_gradescopes_submission_export(course, tmp_path):
    folder = tmp_path / "export"
    (folder / "submission_101").mkdir(parents=True)
    shutil.copyfile(SUBMISSIONS / "partial.py", folder / "submission_101" / "prune_dev.py")
    (folder / "submission_metadata.yml").write_text(
        "submission_101:\n  :submitters:\n  - :name: Ada L\n    :sid: '001'\n    :email: ada@uni.edu\n"
        "  - :name: Bob K\n    :sid: '002'\n    :email: bob@uni.edu\n")  # a group submission
    proc = run_tito(course, "grade", "run", str(folder), "--module", "02", "--out", str(tmp_path / "g"),
                    "--assignment", "HW 2", "--score-column", "assignment", tmpdir=tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "g" / "gradebook.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # one row per member, the score under the assignment's name (what an LMS import matches on)
    assert [(r["student"], r["Name"], r["SID"], r["Email"], r["HW 2"]) for r in rows] == [
        ("submission_101", "Ada L", "001", "ada@uni.edu", "2.0"), ("submission_101", "Bob K", "002", "bob@uni.edu", "2.0")]


def test_a_roster_that_matches_no_submission_is_refused_before_grading(course, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copyfile(SUBMISSIONS / "partial.py", folder / "zed.py")
    roster = tmp_path / "roster.csv"
    roster.write_text("Name,SID\nAda,001\n")
    proc = run_tito(course, "grade", "run", str(folder), "--module", "02", "--roster", str(roster), tmpdir=tmp_path / "tmp")
    assert proc.returncode == 1 and "no column of the roster holds the submissions' names" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
