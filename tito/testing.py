"""`tito test`: a module's inline notebook tests and its pytest suite, summarised task by task.

The notebook runs cell by cell in one subprocess (`tito.run_notebook`) and pytest in another,
with this module loaded into it as a plugin (`-p tito.testing`): the plugin selects graded tests
by their `task` marker (`--tito-tasks`) and writes one record per test (`--tito-report`). Both
results are then grouped by task, in exercise order:

- a test that hits `NotImplementedError("Task T: ...")` of its own task T: T is "not started";
- a test of T that hits the stub of another task X is "blocked by X", not a failure of T, and
  "blocked by" names every unfinished task T needs (tito.prerequisites reads them from the code);
- a notebook cell that hits a stub is "waiting for task X", and so are the cells that need a
  name such a cell should have defined; the run goes on, so later exercises' tests still count.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import ONE_BLAS_THREAD
from .errors import TitoError
from .modules import Module

STATE = ".tito_state.json"  # git-ignored: last results, shown by `tito status`
TASK_MESSAGE = re.compile(r"^Task ([A-Za-z0-9][A-Za-z0-9_.-]*?):")
MAX_DETAILS = 8
STALE = 99  # pytest exit code: started too early, run again


# --------------------------------------------------------------------------------------------
# The pytest plugin (runs inside the pytest subprocess)

_records: list[dict] = []


def pytest_addoption(parser):
    group = parser.getgroup("tito")
    group.addoption("--tito-tasks", default="", help="comma-separated task ids: only their graded tests")
    group.addoption("--tito-report", default="", help="write one JSON record per test here")
    group.addoption("--tito-gate", default="", help="collect only once this file exists (the export is done)")


def pytest_collection(session):
    """Start-up (pytest, the conftests) overlaps the export; test files are imported once the package is
    written. The gate file lists the files the export changed: if a conftest imported one of them
    before, this run is stale and ends with code 99 (tito then runs pytest again, without a gate)."""
    gate = session.config.getoption("--tito-gate", default="")
    if not gate:
        return
    deadline = time.monotonic() + 600
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        changed = set(json.loads(Path(gate).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        changed = set()
    loaded = {os.path.realpath(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    if changed & loaded:
        import pytest

        pytest.exit("a conftest imported a file that the export rewrote", returncode=STALE)


def _task_of(item) -> str | None:
    marker = item.get_closest_marker("task")
    return str(marker.args[0]) if marker is not None and marker.args else None


def pytest_collection_modifyitems(config, items):
    wanted = {t for t in config.getoption("--tito-tasks").split(",") if t}
    if not wanted:
        return
    keep = [item for item in items if _task_of(item) in wanted]
    dropped = [item for item in items if _task_of(item) not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def _exceptions(exc: BaseException):
    "The exception, the members of exception groups (hypothesis reports several), and their causes."
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(getattr(current, "exceptions", ()) or ())
        todo.extend([current.__cause__, current.__context__])


def blocking_task(exc: BaseException) -> str | None:
    "X when the failure is `NotImplementedError('Task X: ...')` (or caused by one)."
    for current in _exceptions(exc):
        if isinstance(current, NotImplementedError):
            match = TASK_MESSAGE.match(str(current))
            if match:
                return match.group(1)
    return None


def _first_lines(text: str, n: int = 2) -> str:
    lines = [l.strip() for l in str(text).strip().splitlines() if l.strip()]
    return " ".join(lines[:n])[:300]


def failure_message(exc: BaseException) -> str:
    "Expected against got, in a line: pytest's assertion text, or pytest.raises' pattern and message."
    text = str(exc)
    if text.startswith("Regex pattern did not match"):
        regex = re.search(r"(?:Expected regex|Regex): (.*)", text)
        got = re.search(r"(?:Actual message|Input): (.*)", text)
        return (f"pytest.raises(match={regex.group(1).strip() if regex else '?'}) did not match the message "
                f"{got.group(1).strip() if got else '?'}")
    if type(exc).__name__ == "Failed" and text.startswith("DID NOT RAISE"):
        return f"expected an exception: {text}"
    if isinstance(exc, AssertionError):
        return _first_lines(text) or "assertion failed"
    return f"{type(exc).__name__}: {_first_lines(text, 1)}"


def _frames(exc: BaseException):
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next


def _line_text(path: str, lineno: int) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").split("\n")[lineno - 1].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def source_location(file: str, lineno: int) -> tuple[str, int] | None:
    """Where an exported package line comes from: (module source path, line), via nbdev's cell headers."""
    try:
        lines = Path(file).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    header = None
    for i in range(min(lineno, len(lines)) - 1, -1, -1):
        match = re.match(r"^# %% (\S+\.py) #(\w+)", lines[i])
        if match:
            header = (i + 1, match.group(1), match.group(2))
            break
    if header is None:
        return None
    source = (Path(file).parent / header[1]).resolve()
    if not source.exists():
        return None
    text = lines[lineno - 1].strip()
    src_lines = source.read_text(encoding="utf-8").split("\n")
    matches = [i + 1 for i, l in enumerate(src_lines) if l.strip() == text and text]
    if not matches:
        return None
    try:
        import hashlib

        from .run_notebook import parse_cells

        for cell in parse_cells(source):
            body = cell.code.rstrip("\n")
            if hashlib.sha1(body.encode("utf-8")).hexdigest()[:8] == header[2][:8]:
                end = cell.body_line + body.count("\n")
                inside = [m for m in matches if cell.body_line <= m <= end]
                if inside:
                    expected = cell.body_line + (lineno - header[0])
                    return str(source), min(inside, key=lambda m: abs(m - expected))
    except Exception:
        pass
    return str(source), matches[0]


def _where(exc: BaseException, item) -> tuple[str, str]:
    "(the test's own line, the student's line the error came from) as 'file:line: code'."
    test_file = str(item.path)
    test_at = student_at = ""
    root = Path(str(item.config.rootpath))
    for filename, lineno in _frames(exc):
        if filename == test_file:
            test_at = f"{Path(filename).name}:{lineno}: {_line_text(filename, lineno)}"
        elif "site-packages" not in filename and str(root) in filename and "/tests/" not in filename:
            mapped = source_location(filename, lineno) if f"{os.sep}tinytorch{os.sep}" in filename else None
            shown, line = mapped if mapped else (filename, lineno)
            rel = os.path.relpath(shown, root)
            student_at = f"{rel}:{line}: {_line_text(shown, line)}"
    return test_at, student_at


def pytest_runtest_makereport(item, call):
    if call.when not in ("setup", "call") or not item.config.getoption("--tito-report", default=""):
        return
    record = {"nodeid": item.nodeid, "name": item.name, "file": item.path.name, "task": _task_of(item)}
    if call.excinfo is None:
        if call.when == "call":
            _records.append({**record, "outcome": "passed"})
        return
    exc = call.excinfo.value
    import pytest

    if call.excinfo.errisinstance(pytest.skip.Exception):
        _records.append({**record, "outcome": "skipped", "message": _first_lines(str(exc), 1)})
        return
    test_at, student_at = _where(exc, item)
    _records.append({**record, "outcome": "failed", "when": call.when, "blocked_by": blocking_task(exc),
                     "message": failure_message(exc), "test_at": test_at, "student_at": student_at})


def pytest_collectreport(report):
    if report.failed:
        text = str(report.longrepr)
        last = [l for l in text.splitlines() if l.strip().startswith("E ")] or text.splitlines()[-1:] or ["error"]
        _records.append({"nodeid": report.nodeid, "name": report.nodeid, "file": Path(report.nodeid).name,
                         "task": None, "outcome": "failed", "collect_error": True,
                         "message": f"cannot collect: {last[-1].strip().lstrip('E').strip()}"[:300],
                         "test_at": "", "student_at": "", "blocked_by": None})


def pytest_sessionfinish(session):
    path = session.config.getoption("--tito-report", default="")
    if path:
        Path(path).write_text(json.dumps(_records), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Results, grouped by task


@dataclass
class Check:
    "One inline test cell or one pytest test."
    name: str
    task: str | None
    status: str  # passed | failed | skipped | not started | blocked
    blocked_by: str | None = None
    detail: list[str] = field(default_factory=list)


@dataclass
class TaskResult:
    task: str
    points: float | None
    passed: int = 0
    total: int = 0
    state: str = "no tests"
    checks: list[Check] = field(default_factory=list)


@dataclass
class ModuleResult:
    module: str
    tasks_run: list[str] | None = None  # None: the whole module
    notebook_ok: bool = False
    notebook_message: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    task_results: list[TaskResult] = field(default_factory=list)
    other: list[Check] = field(default_factory=list)  # ungraded tests and failing notebook cells
    waiting_cells: int = 0
    covered: list[str] = field(default_factory=list)  # tasks a partial (-k) run tested
    needs: dict[str, list[str]] = field(default_factory=dict)  # task -> unfinished tasks it needs first
    figures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        "No failure, and every task (or every selected one) done or without tests."
        return self.failed == 0 and all(t.state in ("done", "no tests") for t in self.task_results)


def _env(root: Path) -> dict[str, str]:
    env = {**ONE_BLAS_THREAD, **os.environ}  # unless the user chose otherwise
    env["MPLBACKEND"] = "Agg"
    tito_home = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(filter(None, [str(root), tito_home, env.get("PYTHONPATH", "")])))
    return env


def plots_folder(module: Module) -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"tito-plots-{uid}" / module.id


def module_tasks(module: Module) -> list[str]:
    "Task ids of the module's exercises, in exercise (notebook) order."
    from .run_notebook import parse_cells

    tasks = []
    for cell in parse_cells(module.source):
        if cell.kind == "solution" and cell.task not in tasks:
            tasks.append(cell.task)
    return tasks


def check_tasks(module: Module, root: Path, wanted: list[str]) -> list[str]:
    "The task ids asked for, split on commas and checked; an unknown id is a one-line error (exit 2)."
    from .graded import load_points

    known = module_tasks(module)
    points = load_points(module.tests_folder(root))
    known += [t for t in (points.tasks if points else {}) if t not in known]
    asked = []
    for entry in wanted:
        for task in filter(None, (t.strip() for t in entry.split(","))):
            if task not in known:
                valid = ", ".join(known) or "(this module has no tasks)"
                raise TitoError(f"unknown task '{task}' for {module.id}; valid tasks: {valid}", exit_code=2)
            if task not in asked:
                asked.append(task)
    return asked


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources_digest(module: Module) -> str:
    return ",".join(_digest(source) for source in module.sources)


def export_if_changed(module: Module, root: Path) -> list[str]:
    """`tito export` for `tito test`, skipped when neither the source nor the exported files
    changed since the last export that `tito test` made (a stamp in .tito_state.json).
    Returns the package files it changed."""
    from .export import export_module

    state = remembered(root)
    stamp = (state.get("_exports") or {}).get(module.id) or {}
    try:
        if stamp.get("source") == _sources_digest(module) and stamp.get("files") and all(
                (root / f).exists() and _digest(root / f) == d for f, d in stamp["files"].items()):
            return []
    except OSError:
        pass
    lib = root / "tinytorch"
    seen = lambda: {str(p.resolve()): (p.stat().st_mtime_ns, p.stat().st_size)  # noqa: E731
                    for p in lib.rglob("*.py")} if lib.is_dir() else {}
    before = seen()
    written = export_module(module, root, quiet=True)
    files = {str(p.relative_to(root)): _digest(p) for p in written if p.suffix == ".py"}
    state = remembered(root)
    state.setdefault("_exports", {})[module.id] = {"source": _sources_digest(module), "files": files}
    _write_state(root, state)
    return sorted(path for path, stamp in seen().items() if before.get(path) != stamp)


def _test_files(folder: Path, tasks: list[str] | None) -> list[Path]:
    "Test files to hand to pytest: all of them, or those that mention one of `tasks` in a task marker."
    if not tasks:
        return [folder]
    files = []
    for path in sorted(folder.rglob("test_*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(re.search(r"task\(\s*['\"]" + re.escape(t) + r"['\"]", text) for t in tasks):
            files.append(path)
    return files


class _Run:
    "A subprocess whose output goes to a file (or straight to the terminal with verbose)."

    def __init__(self, cmd: list[str], root: Path, tmp: Path, name: str, verbose: bool):
        self.log = tmp / f"{name}.log"
        self.verbose = verbose
        out = None if verbose else open(self.log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, cwd=root, env=_env(root), stdout=out,
                                     stderr=subprocess.STDOUT if out else None, text=True)
        if out:
            out.close()

    def wait(self) -> tuple[int, str]:
        code = self.proc.wait()
        text = "" if self.verbose or not self.log.exists() else self.log.read_text(encoding="utf-8", errors="replace")
        return code, text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _start_notebook(module: Module, root: Path, tmp: Path, tasks: list[str] | None, verbose: bool) -> _Run:
    cmd = [sys.executable, "-m", "tito.run_notebook", str(module.source), "--json", str(tmp / "notebook.json")]
    if tasks:
        cmd += ["--tasks", ",".join(tasks)]
    else:  # the full run saves the figures it draws (a student working in the .py sees them there)
        shutil.rmtree(plots_folder(module), ignore_errors=True)
        cmd += ["--plots", str(plots_folder(module))]
    return _Run(cmd, root, tmp, "notebook", verbose)


def _start_pytest(files: list[Path], root: Path, tmp: Path, tasks: list[str] | None, extra: list[str],
                  verbose: bool, name: str = "pytest", gate: Path | None = None) -> _Run:
    cmd = [sys.executable, "-m", "pytest", *map(str, files), "-p", "tito.testing",
           *([f"--tito-gate={gate}"] if gate else []),
           f"--tito-report={tmp / (name + '.json')}", "-q",
           "--tb=short" if verbose else "--tb=no", *extra]
    if tasks:
        cmd.append(f"--tito-tasks={','.join(tasks)}")
    return _Run(cmd, root, tmp, name, verbose)


def _pytest_records(tmp: Path, name: str, code: int, output: str) -> list[dict]:
    path = tmp / f"{name}.json"
    if path.exists():
        records = json.loads(path.read_text(encoding="utf-8"))
        if code not in (0, 1, 5) and not records:
            last = [l for l in output.splitlines() if l.strip()][-1:] or [f"exit code {code}"]
            return [{"name": "pytest", "task": None, "outcome": "failed", "message": f"pytest could not run: {last[0]}"}]
        return records
    last = [l for l in output.splitlines() if l.strip()][-1:] or ["pytest did not run"]
    return [{"name": "pytest", "task": None, "outcome": "failed", "message": f"pytest could not run: {last[0]}"}]


def _check_from_test(record: dict, tasks: list[str]) -> Check:
    status = record["outcome"]
    blocked = record.get("blocked_by")
    if status == "failed" and blocked:
        status = "not started" if blocked == record.get("task") else "blocked" if blocked in tasks else "failed"
    detail = []
    if status == "not started" and record.get("student_at"):
        detail.append(f"not implemented yet: {record['student_at'].split(': ', 1)[0]}")
    if status == "failed":
        detail.append(f"{record['name']}: {record.get('message', '')}")
        where = [w for w in (record.get("test_at"), record.get("student_at") and f"from {record['student_at']}") if w]
        if where:
            detail.append("   " + "  ".join(where)[:240])
    return Check(record["name"], record.get("task"), status, blocked if status == "blocked" else None, detail)


def _check_from_cell(record: dict, filename: str, tasks: list[str]) -> Check:
    line = record.get("error_line") or record["line"]
    where = f"{filename}:{line}"
    status = {"ok": "passed"}.get(record["status"], "failed")
    waiting = record.get("waiting_for")
    if record["status"] == "waiting" and waiting:
        status = "not started" if waiting == record.get("task") else "blocked" if waiting in tasks else "failed"
    detail = []
    if status == "not started":
        detail.append(f"not implemented yet: {record.get('message', '')}  [{where}]")
    if status == "failed":
        from .run_notebook import describe

        what = "inline test" if record["kind"] == "test" else "cell"
        detail.append(f"{what} at {filename}:{record['line']}: " + describe(record, filename).strip())
    name = f"inline test ({filename}:{record['line']})" if record["kind"] == "test" else f"cell at {where}"
    return Check(name, record.get("task"), status, waiting if status == "blocked" else None, detail)


def _state(result: TaskResult, order: list[str], unfinished: list[str] = ()) -> str:
    """done, not started, failing or "blocked by X, Y": every unfinished task it needs, those its
    tests hit and those its solution calls (`unfinished`, from tito.prerequisites) alike."""
    statuses = [c.status for c in result.checks]
    if not statuses:
        return "no tests"
    if all(s in ("passed", "skipped") for s in statuses):
        return "done"
    if "not started" in statuses:
        return "not started"
    if "failed" in statuses:
        return "failing"
    blockers = set(unfinished) | {c.blocked_by for c in result.checks if c.blocked_by}
    return "blocked by " + ", ".join(sorted(blockers, key=lambda t: (order.index(t) if t in order else len(order), t)))


def unfinished_prerequisites(module: Module, root: Path) -> dict[str, list[str]]:
    "For each task, the tasks it needs first (derived from the code) that are still the released stub."
    from .prerequisites import shipped_prerequisites, unfinished_tasks

    try:
        needs, left = shipped_prerequisites(module, root), set(unfinished_tasks(module))
    except (OSError, UnicodeDecodeError):
        return {}
    return {task: [t for t in before if t in left] for task, before in needs.items()}


def summarise(module: Module, root: Path, cells: list[dict], tests: list[dict], tasks_run: list[str] | None,
              result: ModuleResult) -> ModuleResult:
    from .graded import load_points

    order = module_tasks(module)
    points = load_points(module.tests_folder(root))
    all_tasks = order + [t for t in (points.tasks if points else {}) if t not in order]
    shown = tasks_run if tasks_run is not None else all_tasks
    by_task = {t: TaskResult(t, points.tasks.get(t) if points else None) for t in shown}
    filename = module.source.name
    result.waiting_cells = sum(1 for c in cells if c["status"] != "ok" and c["kind"] != "test")
    for record in cells:
        if record["kind"] == "test" and record.get("task") in by_task:
            by_task[record["task"]].checks.append(_check_from_cell(record, filename, all_tasks))
        elif record["kind"] != "test" and record["status"] in ("failed", "error") and tasks_run is None:
            result.other.append(_check_from_cell(record, filename, all_tasks))
    for record in tests:
        task = record.get("task")
        if task in by_task:
            by_task[task].checks.append(_check_from_test(record, all_tasks))
        elif task is None and tasks_run is None:
            result.other.append(_check_from_test(record, all_tasks))
        elif task is not None and tasks_run is None:  # a marker naming no known task
            check = _check_from_test(record, all_tasks)
            check.detail.insert(0, f"{record['name']}: task '{task}' is not an exercise of {module.id}")
            check.status = "failed"
            result.other.append(check)
    reached = {c.get("waiting_for") for c in cells if c["status"] == "waiting"}  # stubs the notebook hit
    result.needs = unfinished_prerequisites(module, root)
    for task_result in by_task.values():
        task_result.total = sum(1 for c in task_result.checks if c.status != "skipped")
        task_result.passed = sum(1 for c in task_result.checks if c.status == "passed")
        task_result.state = _state(task_result, order, result.needs.get(task_result.task, []))
        if task_result.state == "no tests" and task_result.task in reached:
            task_result.state = "not started"
    waiting = [c for c in cells if c["status"] == "waiting" and c["kind"] != "test"]
    if waiting:
        first = waiting[0]
        result.notebook_message = (f"{len(waiting)} cell(s) waiting for tasks (first: {filename}:"
                                   f"{first.get('error_line') or first['line']} waits for task {first.get('waiting_for')})")
    result.task_results = list(by_task.values())
    everything = [c for t in result.task_results for c in t.checks] + result.other
    result.passed = sum(1 for c in everything if c.status == "passed")
    result.skipped = sum(1 for c in everything if c.status == "skipped")
    result.failed = len(everything) - result.passed - result.skipped
    result.notebook_ok = all(c["status"] == "ok" for c in cells)
    result.failures = [line for c in everything if c.status == "failed" for line in c.detail[:1]]
    return result


def test_module(module: Module, root: Path, pytest_args: list[str] | None = None, verbose: bool = False,
                tasks: list[str] | None = None, export=None) -> ModuleResult:
    """Run the notebook and the graded tests (of `tasks`, or all) and group the results by task.

    `export`, if given, is called while the notebook already runs (the notebook executes the
    source itself; pytest needs the exported package, so it starts after).
    """
    start = time.perf_counter()
    result = ModuleResult(module.id, tasks_run=list(tasks) if tasks else None)
    folder = module.tests_folder(root)
    with tempfile.TemporaryDirectory(prefix="tito-test-") as tmp_name:
        tmp = Path(tmp_name)
        notebook = _start_notebook(module, root, tmp, tasks, verbose)
        runner = None
        try:
            if verbose:  # one output at a time, in order
                notebook.wait()
            files = _test_files(folder, tasks) if folder.is_dir() else []
            gate = tmp / "exported"
            if files:  # pytest starts up while the export runs, and collects once it is done
                runner = _start_pytest(files, root, tmp, tasks, pytest_args or [], verbose, gate=gate)
            changed = (export() or []) if export is not None else []
            gate.write_text(json.dumps([os.path.realpath(p) for p in changed]))
            nb_code, nb_output = notebook.wait()
            py_code, py_output = runner.wait() if runner else (0, "")
            if runner is not None and py_code == STALE:
                runner = _start_pytest(files, root, tmp, tasks, pytest_args or [], verbose)
                py_code, py_output = runner.wait()
        except BaseException:
            notebook.kill()
            if runner is not None:
                runner.kill()
            raise
        report = tmp / "notebook.json"
        data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {"cells": []}
        cells = data.get("cells", [])
        result.figures = data.get("figures", [])
        if nb_code not in (0, 1) or not report.exists():
            last = [l for l in nb_output.splitlines() if l.strip()][-1:] or [f"exit code {nb_code}"]
            cells.append({"line": 0, "kind": "code", "task": None, "status": "error", "exception": "crash",
                          "message": f"the notebook run stopped: {last[0]}"})
        tests = _pytest_records(tmp, "pytest", py_code, py_output) if runner else []
    result.covered = list(tasks) if tasks else sorted({r["task"] for r in tests if r.get("task")})
    summarise(module, root, cells, tests, result.tasks_run, result)
    result.seconds = time.perf_counter() - start
    _remember(root, result, partial=bool(tasks) or bool(pytest_args))
    return result


def test_tooling(root: Path, pytest_args: list[str] | None = None, verbose: bool = False) -> ModuleResult | None:
    """The course tooling's own tests (tests/tito), run by `tito test --all`."""
    folder = root / "tests" / "tito"
    if not folder.is_dir():
        return None
    start = time.perf_counter()
    result = ModuleResult("tito (tooling)", notebook_ok=True)
    with tempfile.TemporaryDirectory(prefix="tito-test-") as tmp_name:
        tmp = Path(tmp_name)
        code, output = _start_pytest([folder], root, tmp, None, pytest_args or [], verbose).wait()
        records = _pytest_records(tmp, "pytest", code, output)
    result.other = [_check_from_test(r, []) for r in records]
    result.passed = sum(1 for c in result.other if c.status == "passed")
    result.skipped = sum(1 for c in result.other if c.status == "skipped")
    result.failed = len(result.other) - result.passed - result.skipped
    result.failures = [c.detail[0] for c in result.other if c.detail]
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------
# Printing


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def print_result(result: ModuleResult, has_tests: bool = True) -> None:
    mark = "PASS" if result.ok else "FAIL"
    counts = f"{result.passed} passed, {result.failed} failed" + (f", {result.skipped} skipped" if result.skipped else "")
    if result.module.startswith("tito"):
        print(f"{mark}  {result.module:<18} {counts}  ({result.seconds:.1f}s)")
        for line in result.failures[:MAX_DETAILS]:
            print(f"      x {line[:240]}")
        if len(result.failures) > MAX_DETAILS:
            print(f"      ... and {len(result.failures) - MAX_DETAILS} more (-v shows them all)")
        return
    scope = "" if result.tasks_run is None else f" (tasks: {', '.join(result.tasks_run)})"
    print(f"{mark}  {result.module}{scope}  {counts}  ({result.seconds:.1f}s)")
    if result.task_results:
        width = max(len("task"), *(len(t.task) for t in result.task_results))
        print(f"  {'task':<{width}}  points  tests  state")
        for t in result.task_results:
            print(f"  {t.task:<{width}}  {_points(t.points):>6}  {f'{t.passed}/{t.total}':>5}  {t.state}")
    other = result.other
    if other:
        bad = sum(1 for c in other if c.status == "failed")
        waiting = sum(1 for c in other if c.status in ("blocked", "not started"))
        passed = sum(1 for c in other if c.status == "passed")
        ran = sum(1 for c in other if c.status != "skipped")
        print(f"  other checks (ungraded tests, notebook cells): {passed}/{ran} passed"
              + (f", {bad} failing" if bad else "") + (f", {waiting} waiting for tasks" if waiting else ""))
        first_bad = next((c for c in other if c.status == "failed" and c.detail), None)
        if first_bad is not None and any(t.state == "failing" for t in result.task_results):
            print(f"    first: {first_bad.detail[0][:220]}")
    if result.tasks_run is None and result.notebook_message:
        print(f"  notebook: {result.notebook_message}")
    failing = next((t for t in result.task_results if t.state == "failing"), None)
    if failing is not None:
        print(f"first failing task: {failing.task}")
        shown = [c for c in failing.checks if c.status == "failed"]
        for check in shown[:MAX_DETAILS]:
            for i, line in enumerate(check.detail):
                print(f"  {'x' if i == 0 else ' '} {line[:240]}")
        if len(shown) > MAX_DETAILS:
            print(f"  ... and {len(shown) - MAX_DETAILS} more failures of {failing.task} (-v shows them all)")
    elif other and any(c.status == "failed" for c in other):
        print("failing checks outside the tasks:")
        for check in [c for c in other if c.status == "failed"][:MAX_DETAILS]:
            for i, line in enumerate(check.detail):
                print(f"  {'x' if i == 0 else ' '} {line[:240]}")
    todo = next((t for t in result.task_results if t.state == "not started"), None)
    if failing is None and todo is not None:
        hint = next((c.detail[0] for c in todo.checks if c.status == "not started" and c.detail), "")
        then = f"; then tito test {result.module} --task {todo.task}" if result.tasks_run is None else ""
        print(f"next: task {todo.task}" + (f", {hint}" if hint else "") + then)
    if result.tasks_run is not None:
        # Every unfinished task the chosen ones need, at once: not one per run.
        for task in result.task_results:
            if task.state == "done":
                continue
            blockers = task.state[len("blocked by "):].split(", ") if task.state.startswith("blocked by ") else []
            missing = blockers or result.needs.get(task.task, [])
            if missing:
                print(f"{task.task} needs {len(missing)} unfinished task(s) first: {', '.join(missing)} "
                      f"(tito test {result.module} --task {','.join(missing)})")
    if result.figures and result.tasks_run is None:
        print(f"  plots: {len(result.figures)} figure(s) saved in {Path(result.figures[0]).parent}")


# --------------------------------------------------------------------------------------------
# State for `tito status`


def _remember(root: Path, result: ModuleResult, partial: bool) -> None:
    path = root / STATE
    try:
        state = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        state = {}
    entry = {
        "module": result.module, "ok": result.ok, "passed": result.passed, "failed": result.failed,
        "skipped": result.skipped, "seconds": round(result.seconds, 2), "when": time.strftime("%Y-%m-%d %H:%M"),
        "tasks": {t.task: {"state": t.state, "passed": t.passed, "total": t.total} for t in result.task_results},
    }
    previous = state.get(result.module) if isinstance(state.get(result.module), dict) else {}
    if partial:
        # a -k run covers the tasks whose tests it selected
        entry["tasks_run"] = result.covered
        previous = dict(previous)
        previous["last_partial"] = entry
        state[result.module] = previous
    else:
        state[result.module] = entry
    _write_state(root, state)


def _write_state(root: Path, state: dict) -> None:
    try:
        (root / STATE).write_text(json.dumps(state, indent=1, sort_keys=True))
    except OSError:
        pass


def remembered(root: Path) -> dict:
    path = root / STATE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}
