"""The student loop: `tito test --task`, a notebook run that goes past unfinished exercises,
the per-task summary, `tito status` after partial runs, and the Jupyter round trip."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tito_testlib import FIXTURES, REPO, require, run_tito

SOURCE = FIXTURES / "course" / "modules" / "02_prune" / "prune_dev.py"
TASKS = ["magnitude-mask", "sparsity", "prune"]  # exercise order in the fixture module


def solve_only(solution: str, keep: set[str]) -> str:
    "The module source with every solution region stubbed, as `tito release` does, except `keep`."
    out, task, inside = [], None, False
    for line in solution.split("\n"):
        header = re.match(r"^# %%(.*)$", line)
        if header:
            gid = re.search(r'"grade_id": "([^"]+)"', header.group(1))
            task = gid.group(1) if gid and '"solution": true' in header.group(1) else None
        if line.strip() == "### BEGIN SOLUTION" and task and task not in keep:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE",
                    f'{indent}raise NotImplementedError("Task {task}: not implemented yet; replace this line with your code")']
            inside = True
            continue
        if inside:
            inside = line.strip() != "### END SOLUTION"
            continue
        out.append(line)
    return "\n".join(out)


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> Path:
    "A student copy of the fixture course (module 02_prune stubbed), made once."
    course = tmp_path_factory.mktemp("loop") / "course"
    shutil.copytree(FIXTURES / "course", course, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("loop-release") / "student"
    proc = run_tito(course, "release", "02_prune", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def student(released, tmp_path) -> Path:
    "A fresh copy of the student course for one test."
    root = tmp_path / "student"
    shutil.copytree(released, root, ignore=shutil.ignore_patterns("__pycache__", ".tito_state.json"))
    return root


def write_source(root: Path, text: str) -> Path:
    path = root / "modules" / "02_prune" / "prune_dev.py"
    path.write_text(text, encoding="utf-8")
    return path


def task_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in TASKS and re.match(r"^\d+/\d+$", parts[2]):
            rows[parts[0]] = " ".join(parts[3:])
    return rows


# -- tito test --task ------------------------------------------------------------------------------


def test_one_solved_task_passes_alone(student):
    write_source(student, solve_only(SOURCE.read_text(), {"magnitude-mask"}))
    proc = run_tito(student, "test", "02", "--task", "magnitude-mask")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert task_rows(proc.stdout) == {"magnitude-mask": "done"}
    assert "tests: 3 passed, 0 failed" in proc.stdout   # 1 inline test cell + 2 graded tests


def test_a_task_needing_an_unfinished_one_is_blocked_not_failing(student):
    write_source(student, solve_only(SOURCE.read_text(), {"prune"}))   # prune calls magnitude_mask
    proc = run_tito(student, "test", "02", "--task", "prune")
    assert proc.returncode == 1
    assert task_rows(proc.stdout) == {"prune": "blocked by magnitude-mask"}
    assert "tito test 02_prune --task magnitude-mask" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


REPORT_TASK = '''
# %% nbgrader={"grade": false, "grade_id": "report", "locked": false, "solution": true, "schema_version": 3}
#| export
def report(tensor: Tensor, target: float) -> float:
    "Prune `tensor` to `target` and return the sparsity it reached."
    ### BEGIN SOLUTION
    return sparsity(prune(tensor, target).data)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "report-test", "locked": true, "points": 1, "solution": false, "schema_version": 3}
assert report(Tensor([[0.1, -3.0], [0.5, 2.0]]), 0.5) == 0.5
print("✓ report")
'''


def test_task_names_every_unfinished_prerequisite_in_one_run(student):
    # report calls sparsity and prune, and prune calls magnitude_mask: three unfinished tasks,
    # though the run itself stops at the first stub it meets.
    write_source(student, solve_only(SOURCE.read_text() + REPORT_TASK, {"report"}))
    proc = run_tito(student, "test", "02", "--task", "report")
    assert proc.returncode == 1
    assert "report needs 3 unfinished task(s) first: magnitude-mask, sparsity, prune" in proc.stdout, proc.stdout
    assert "tito test 02_prune --task magnitude-mask,sparsity,prune" in proc.stdout
    assert "blocked by magnitude-mask, sparsity, prune" in proc.stdout


def test_task_names_only_the_prerequisites_still_unfinished(student):
    write_source(student, solve_only(SOURCE.read_text() + REPORT_TASK, {"report", "magnitude-mask", "prune"}))
    proc = run_tito(student, "test", "02", "--task", "report")
    assert "report needs 1 unfinished task(s) first: sparsity" in proc.stdout, proc.stdout


def test_several_tasks_and_an_unknown_one(student):
    write_source(student, solve_only(SOURCE.read_text(), {"magnitude-mask", "sparsity"}))
    proc = run_tito(student, "test", "02", "--task", "sparsity,magnitude-mask")
    assert proc.returncode == 0, proc.stdout
    assert list(task_rows(proc.stdout)) == ["sparsity", "magnitude-mask"]
    bad = run_tito(student, "test", "02", "--task", "sparsity", "--task", "spasity")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "unknown task 'spasity'" in bad.stderr and "magnitude-mask, sparsity, prune" in bad.stderr


def test_a_wrong_answer_fails_its_task_and_names_it(student):
    wrong = SOURCE.read_text().replace("return float(np.count_nonzero(weights == 0) / weights.size)",
                                       "return float(np.count_nonzero(weights == 0))")   # a count, not a fraction
    path = write_source(student, solve_only(wrong, {"sparsity"}))
    proc = run_tito(student, "test", "02", "--task", "sparsity")
    assert proc.returncode == 1
    assert task_rows(proc.stdout) == {"sparsity": "failing"}
    assert "first failing task: sparsity" in proc.stdout
    inline = next(l for l in proc.stdout.splitlines() if "inline test at" in l)
    line = next(i for i, l in enumerate(path.read_text().split("\n"), 1)
                if l.startswith("assert sparsity(np.array([0.0, 1.0, 0.0, 2.0])) == 0.5"))
    assert f"prune_dev.py:{line}" in inline and "is 2.0" in inline                    # got, next to expected
    graded = [l for l in proc.stdout.splitlines() if l.strip().startswith("x test_sparsity")]
    assert graded and "==" in graded[0]                                      # expected against got
    assert any("test_prune.py:" in l for l in proc.stdout.splitlines())     # where, in one more line


# -- the whole module: the notebook goes on, the summary is in exercise order --------------------


def test_full_run_goes_past_stubs_and_lists_tasks_in_exercise_order(student):
    write_source(student, solve_only(SOURCE.read_text(), {"prune"}))
    proc = run_tito(student, "test", "02")
    assert proc.returncode == 1
    rows = task_rows(proc.stdout)
    assert list(rows) == TASKS
    assert rows == {"magnitude-mask": "not started", "sparsity": "not started", "prune": "blocked by magnitude-mask"}
    stub = next(i for i, l in enumerate((student / "modules" / "02_prune" / "prune_dev.py").read_text().split("\n"), 1)
                if "Task magnitude-mask: not implemented yet" in l)
    assert re.search(rf"^next: task magnitude-mask, not implemented yet: .*prune_dev.py:{stub}\]", proc.stdout, re.M)
    header = re.search(r"FAIL  02_prune\s+(\d+) passed, (\d+) failed", proc.stdout)
    last = re.search(r"^tests: (\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert header and last and header.groups() == last.groups(), proc.stdout
    per_task = [re.search(r"\s(\d+)/(\d+)\s", l) for l in proc.stdout.splitlines() if l.split()[:1] and l.split()[0] in TASKS]
    other = re.search(r"other checks .*?: (\d+)/(\d+) passed", proc.stdout)
    passed = sum(int(m.group(1)) for m in per_task) + (int(other.group(1)) if other else 0)
    total = sum(int(m.group(2)) for m in per_task) + (int(other.group(2)) if other else 0)
    assert (passed, total - passed) == tuple(map(int, header.groups())), proc.stdout


def test_solution_passes_and_status_reads_the_last_full_run(student):
    write_source(student, SOURCE.read_text())
    full = run_tito(student, "test", "02")
    assert full.returncode == 0, full.stdout + full.stderr
    assert set(task_rows(full.stdout).values()) == {"done"}
    row = lambda: next(l for l in run_tito(student, "status").stdout.splitlines() if l.startswith("02_prune"))  # noqa: E731
    assert "pass" in row() and "partial" not in row()
    write_source(student, solve_only(SOURCE.read_text(), {"magnitude-mask", "sparsity"}))
    assert run_tito(student, "test", "02", "--task", "sparsity").returncode == 0
    after = row()
    assert "pass" in after and "partial run" in after and "sparsity done" in after
    state = json.loads((student / ".tito_state.json").read_text())["02_prune"]
    assert state["ok"] is True and state["last_partial"]["tasks_run"] == ["sparsity"]


# -- the notebook runner itself --------------------------------------------------------------------

DEMO = textwrap.dedent('''\
    # %%
    #| default_exp demo

    # %% nbgrader={"grade": false, "grade_id": "first", "locked": false, "solution": true, "schema_version": 3}
    #| export
    def first(x):
        ### BEGIN SOLUTION
        raise NotImplementedError("Task first: not implemented yet")
        ### END SOLUTION

    # %% nbgrader={"grade": true, "grade_id": "first-test", "locked": true, "points": 1, "schema_version": 3}
    table = {1: first(1)}

    # %%
    print(table[1])

    # %%
    experiment = [first(i) for i in range(3)]

    # %%
    print(len(experiment))

    # %% nbgrader={"grade": false, "grade_id": "second", "locked": false, "solution": true, "schema_version": 3}
    #| export
    def second(x):
        ### BEGIN SOLUTION
        return x + 1
        ### END SOLUTION

    # %%
    BASE = 41

    # %% nbgrader={"grade": true, "grade_id": "second-test", "locked": true, "points": 1, "schema_version": 3}
    assert second(BASE) == 42
    assert second(BASE) == 43
    ''')


def run_cells(tmp_path: Path, source: str, *args: str) -> list[dict]:
    path = tmp_path / "demo_dev.py"
    path.write_text(source)
    report = tmp_path / "cells.json"
    proc = subprocess.run([sys.executable, "-m", "tito.run_notebook", str(path), "--json", str(report), *args],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(report.read_text())["cells"]


def test_the_run_goes_on_and_dependants_wait(tmp_path):
    cells = {c["line"]: c for c in run_cells(tmp_path, DEMO)}
    lines = DEMO.split("\n")
    at = lambda text: next(i for i, l in enumerate(lines, 1) if l.startswith("# %%") and text in lines[i])  # noqa: E731
    assert cells[at("table = ")]["status"] == "waiting" and cells[at("table = ")]["waiting_for"] == "first"
    assert cells[at("print(table")]["status"] == "waiting" and cells[at("print(table")]["needs"] == "table"
    assert cells[at("experiment = ")]["waiting_for"] == "first"
    assert cells[at("print(len")]["waiting_for"] == "first"
    later = cells[at("assert second(BASE) == 42")]
    assert later["status"] == "failed" and later["task"] == "second"               # a later test still ran
    assert later["error_line"] == lines.index("assert second(BASE) == 43") + 1
    assert "second(BASE) is 42" in later["message"]                               # the value, not just "failed"


def test_tasks_mode_runs_only_what_the_tests_need(tmp_path):
    cells = run_cells(tmp_path, DEMO, "--tasks", "second")
    ran = {c["line"] for c in cells}
    lines = DEMO.split("\n")
    header_of = lambda text: next(i for i, l in enumerate(lines, 1) if l.startswith("# %%") and text in lines[i])  # noqa: E731
    assert header_of("BASE = 41") in ran                        # needed by second's test
    assert header_of("assert second(BASE)") in ran
    for skipped in ("table = ", "print(table", "experiment = ", "print(len"):
        assert header_of(skipped) not in ran                     # other exercises' tests and experiments
    assert all(c["status"] == "ok" for c in cells if c["kind"] != "test")


def test_failure_messages_show_the_pattern_and_the_message():
    from tito.testing import blocking_task, failure_message

    with pytest.raises(AssertionError) as info:
        with pytest.raises(ValueError, match="nothing to prune"):
            raise ValueError("model is empty")
    text = failure_message(info.value)
    assert "nothing to prune" in text and "model is empty" in text
    assert blocking_task(NotImplementedError("Task apply-mask: not implemented yet")) == "apply-mask"
    assert blocking_task(ValueError("Task apply-mask: no")) is None
    group = ExceptionGroup("two", [ValueError("x"), NotImplementedError("Task csr-encode: later")])
    assert blocking_task(group) == "csr-encode"


# -- Jupyter ----------------------------------------------------------------------------------------


def test_a_notebook_edited_in_jupyter_syncs_back_with_a_clean_diff(student):
    import nbformat

    source = write_source(student, solve_only(SOURCE.read_text(), set()))
    original = source.read_text()
    proc = run_tito(student, "notebook", "02")
    assert proc.returncode == 0, proc.stderr
    assert "jupyter lab" in proc.stdout
    notebook = source.with_suffix(".ipynb")
    assert "formats" not in json.loads(notebook.read_text())["metadata"].get("jupytext", {})  # not paired
    # What JupyterLab does: run cells (outputs, counts), record the kernel, save with nbformat.
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 3
            cell.outputs = [nbformat.v4.new_output("stream", text="ran\n")]
            cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    cell = next(c for c in nb.cells if "def sparsity" in c.source)
    stub = 'raise NotImplementedError("Task sparsity: not implemented yet; replace this line with your code")'
    cell.source = cell.source.replace(stub, "weights = np.asarray(weights)\n    return float(np.mean(weights == 0))")
    nbformat.write(nb, notebook)
    future = time.time() + 5
    os.utime(notebook, (future, future))
    proc = run_tito(student, "test", "02", "--task", "sparsity")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = source.read_text()
    old_lines, new_lines = original.split("\n"), new.split("\n")
    import difflib

    changed = [l for l in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0)
               if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert changed == ["-    " + stub, "+    weights = np.asarray(weights)",
                       "+    return float(np.mean(weights == 0))"], changed
    backups = list((student / ".tito_backups").glob("prune_dev-*.py"))
    assert len(backups) == 1 and backups[0].read_text() == original       # the old .py is kept
    # and --force over a newer notebook keeps the notebook too
    os.utime(notebook, (future + 20, future + 20))
    assert run_tito(student, "notebook", "02", "--force").returncode == 0
    assert list((student / ".tito_backups").glob("prune_dev-*.ipynb"))


def test_a_notebook_saved_by_jupyters_own_server_code_syncs_back_cleanly(student):
    """The save goes through jupyter_server's FileContentsManager, the server side of JupyterLab's
    save button (its REST PUT /api/contents lands here): what it writes is what a student's
    JupyterLab writes."""
    require("jupyter_server")  # comes with JupyterLab (the jupyter extra) and with nbgrader
    import difflib

    from jupyter_server.services.contents.filemanager import FileContentsManager

    source = write_source(student, solve_only(SOURCE.read_text(), set()))
    original = source.read_text()
    assert run_tito(student, "notebook", "02").returncode == 0
    relative = source.with_suffix(".ipynb").relative_to(student).as_posix()
    manager = FileContentsManager(root_dir=str(student))
    model = manager.get(relative, content=True, type="notebook")
    cell = next(c for c in model["content"].cells if "def sparsity" in c.source)
    stub = 'raise NotImplementedError("Task sparsity: not implemented yet; replace this line with your code")'
    cell.source = cell.source.replace(stub, "return float(np.mean(np.asarray(weights) == 0))")
    manager.save({"type": "notebook", "format": "json", "content": model["content"]}, relative)
    later = time.time() + 5
    os.utime(source.with_suffix(".ipynb"), (later, later))
    proc = run_tito(student, "test", "02", "--task", "sparsity")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    changed = [line for line in difflib.unified_diff(original.split("\n"), source.read_text().split("\n"),
                                                     lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == ["-    " + stub, "+    return float(np.mean(np.asarray(weights) == 0))"], changed


def test_a_fixed_answer_is_exported_and_tested_again(student):
    wrong = SOURCE.read_text().replace("return float(np.count_nonzero(weights == 0) / weights.size)",
                                       "return float(np.count_nonzero(weights == 0))")
    write_source(student, solve_only(wrong, {"sparsity"}))
    assert run_tito(student, "test", "02", "--task", "sparsity").returncode == 1
    assert run_tito(student, "test", "02", "--task", "sparsity").returncode == 1   # export skipped: same source
    write_source(student, solve_only(SOURCE.read_text(), {"sparsity"}))
    proc = run_tito(student, "test", "02", "--task", "sparsity")
    assert proc.returncode == 0, proc.stdout
    assert "return float(np.count_nonzero(weights == 0) / weights.size)" in (
        student / "tinytorch" / "compression" / "prune.py").read_text()


def test_a_k_run_is_partial_for_status(student):
    write_source(student, SOURCE.read_text())
    proc = run_tito(student, "test", "02", "-k", "test_sparsity")
    assert proc.returncode == 0, proc.stdout
    row = next(l for l in run_tito(student, "status").stdout.splitlines() if l.startswith("02_prune"))
    assert "no full run yet" in row and "partial run" in row and "sparsity" in row


def test_cells_that_no_exercise_changes_are_cached_for_task_runs(tmp_path):
    source = DEMO.replace("# %%\nBASE = 41\n", "# %%\nBASE = 41\n\n# %%\nslow = [BASE] * 3\n"
                          "open('ran.txt', 'a').write('x')\n").replace("assert second(BASE) == 43\n", "")
    source = source.replace("assert second(BASE) == 42", "assert second(slow[0]) == 42")
    for _ in range(2):
        cells = run_cells(tmp_path, source, "--tasks", "second")
        assert all(c["status"] == "ok" for c in cells), cells
    assert (tmp_path / "ran.txt").read_text() == "x"              # the second --tasks run reused it
    run_cells(tmp_path, source)
    assert (tmp_path / "ran.txt").read_text() == "xx"             # the full run always runs everything


def test_the_full_run_saves_the_figures(tmp_path):
    pytest.importorskip("matplotlib")
    source = "# %%\nimport matplotlib.pyplot as plt\n\n# %%\nplt.plot([1, 2, 3])\nplt.show()\n"
    path = tmp_path / "plots_dev.py"
    path.write_text(source)
    proc = subprocess.run([sys.executable, "-m", "tito.run_notebook", str(path), "--json", str(tmp_path / "r.json"),
                           "--plots", str(tmp_path / "plots")], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads((tmp_path / "r.json").read_text())["figures"]
    assert len(figures) == 1 and Path(figures[0]).read_bytes()[:4] == b"\x89PNG"


def test_the_student_readme_and_the_jupyter_extra(released):
    readme = (released / "README.md").read_text()
    loop = [l for l in readme.splitlines() if re.match(r"^[1-4]\. ", l)]
    assert len(loop) == 4
    assert "Edit" in loop[0] and "tito test 02_prune --task ID" in loop[1]
    assert "tito test 02_prune`" in loop[2] and "jupyter lab" in loop[3]
    assert '.[test,jupyter]' in readme
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^jupyter = \["jupyterlab', pyproject, re.M)
    assert '.[jupyter]' in (REPO / "README.md").read_text()


def test_a_conftest_importing_the_module_never_sees_a_stale_package(student):
    # pytest starts while the export runs; a conftest that imports the exported module would
    # have the old code, so that run is thrown away and pytest runs again.
    (student / "tests" / "02_prune" / "conftest.py").write_text(
        "from tinytorch.compression.prune import sparsity  # noqa: F401\n")
    write_source(student, solve_only(SOURCE.read_text(), set()))
    assert run_tito(student, "test", "02", "--task", "sparsity").returncode == 1
    write_source(student, solve_only(SOURCE.read_text(), {"sparsity"}))
    proc = run_tito(student, "test", "02", "--task", "sparsity")
    assert proc.returncode == 0, proc.stdout
    assert task_rows(proc.stdout) == {"sparsity": "done"}
