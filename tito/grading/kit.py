"""The grading kit: everything needed to grade one module, built once from the course repository.

    kit/manifest.json   tasks, points, limits, graded tests (collected against the reference),
                        each task's function names and released stub cells (no solution)
    kit/reference/      the package with the reference solution: only the test runner imports it
    kit/public/         the package without the graded module: each submission's export joins a copy
    kit/tests/          the module's tests, hidden ones included, and the shared test helpers
    kit/student.py, kit/wire.py   the student's process's program, copied into each sandbox
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import ONE_BLAS_THREAD
from ..errors import TitoError
from ..graded import copy_shared_tests, is_hidden_test, load_points, solution_cells

LIB = "tinytorch"
HERE = Path(__file__).parent
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints")
PYTEST_INI = "[pytest]\nmarkers =\n    task(id): a graded test of the exercise whose grade_id is `id`\naddopts =\n"


@dataclass
class Kit:
    folder: Path
    manifest: dict

    @property
    def module(self) -> str:
        return self.manifest["module"]

    @classmethod
    def load(cls, folder: Path) -> "Kit":
        path = Path(folder) / "manifest.json"
        if not path.exists():
            raise TitoError(f"{folder} is not a grading kit (no manifest.json)")
        return cls(Path(folder).resolve(), json.loads(path.read_text(encoding="utf-8")))


def clean_env(**extra) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "TITO_GRADING": "1",
            # third-party pytest plugins cost ~0.5 s per start; the kit names the ones tests need
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **ONE_BLAS_THREAD, **extra}


def run_runner(kit_folder: Path, config: dict, cwd: Path, timeout: float):
    """Start the test runner (tito.grading.runner) on `config`; yield each event it reports."""
    import threading

    read, write = os.pipe()
    env = clean_env(HOME=str(cwd), TMPDIR=str(cwd),
                    PYTHONPATH=os.pathsep.join([str(kit_folder / "reference"), str(HERE.parents[1])]))
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-B", "-m", "tito.grading.runner"], stdin=subprocess.PIPE,
                                stdout=log, stderr=log, pass_fds=(write,), cwd=cwd, env=env, start_new_session=True)
        os.close(write)
        proc.stdin.write(json.dumps({**config, "result_fd": write}).encode())
        proc.stdin.close()
        fired = threading.Event()

        def stop():  # the submission's total time limit
            fired.set()
            _kill(proc)

        timer = threading.Timer(timeout, stop)
        timer.start()
        finished = False
        try:
            with os.fdopen(read, "rb") as pipe:
                for line in pipe:
                    event = json.loads(line)
                    finished = finished or event["event"] in ("done", "collected", "import_error", "import_hang")
                    yield event
        finally:
            timer.cancel()
            _kill(proc)
            code = proc.wait()
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        if not finished:
            yield {"event": "timeout"} if fired.is_set() else \
                {"event": "runner_failed", "message": f"exit code {code}: " + " | ".join(tail)}


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def _source_number(path: Path) -> int | None:
    match = re.search(r"File to edit: [^\n]*?modules/(\d+)_", path.read_text(encoding="utf-8", errors="replace")[:2000])
    return int(match.group(1)) if match else None


def _pytest_plugins(tests: Path) -> list[str]:
    import importlib.util

    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in tests.rglob("*.py"))
    if re.search(r"^\s*(from|import)\s+hypothesis\b", text, re.M) and importlib.util.find_spec("_hypothesis_pytestplugin"):
        return ["_hypothesis_pytestplugin"]
    return []


def task_names(reference: Path, staged: Path, targets: list[str]) -> tuple[dict, dict]:
    """Each task's (module, function) pairs, found in the reference's cells and export, and its
    released stub cells (to tell a task the student has not started)."""
    import jupytext

    from ..graded import release_source

    where = {}
    for relative in targets:
        module = f"{LIB}." + relative[:-3].replace("/", ".").removesuffix(".__init__")
        for node in ast.parse((staged / relative).read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                where[node.name] = module
    solution = solution_cells(jupytext.read(reference, fmt="py:percent"))
    stubs = solution_cells(jupytext.reads(release_source(reference, stub=True), fmt="py:percent"))
    names, cells = {}, {}
    for task, found in solution.items():
        defined = []
        for cell in found:
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.ClassDef):
                    raise TitoError(f"task {task} defines class {node.name}: graded exercises must be functions")
                if isinstance(node, ast.FunctionDef) and node.name in where:
                    defined.append(node.name)
        names[task] = [[where[n], n] for n in defined]
        cells[task] = {"stub": [c.source for c in stubs.get(task, [])], "names": [
            [n.name for n in ast.parse(c.source).body if isinstance(n, ast.FunctionDef)] for c in found]}
    return names, cells


def build_kit(root: Path, module, dest: Path, reference: Path | None = None) -> Kit:
    """Everything needed to grade `module`, in `dest` (which must not exist yet)."""
    from ..export import export_or_explain, read_notebook

    tests_folder = module.tests_folder(root)
    points = load_points(tests_folder)
    if points is None:
        raise TitoError(f"{module.id} is not graded: {tests_folder.relative_to(root)}/points.toml is missing")
    reference = Path(reference or module.source)
    lib = root / LIB
    if not lib.is_dir():
        raise TitoError(f"{LIB}/ is missing: run 'tito export --all' first")
    dest = dest.resolve()
    dest.mkdir(parents=True)
    os.chmod(dest, 0o700)  # the reference inside: never readable by the student's user
    shutil.copytree(tests_folder, dest / "tests" / module.id, ignore=IGNORED)
    copy_shared_tests(root / "tests", dest / "tests", IGNORED)
    (dest / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    for name in ("student.py", "wire.py"):
        shutil.copyfile(HERE / name, dest / name)
    public = dest / "public" / LIB
    shutil.copytree(lib, public, ignore=IGNORED)
    with tempfile.TemporaryDirectory(prefix="tito-kit-") as tmp:
        staged = Path(tmp) / LIB
        staged.mkdir()
        export_or_explain(read_notebook(reference), reference, staged, lib, f"{reference}: ")
        targets = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.py"))
        if not targets:
            raise TitoError(f"{reference}: exports nothing")
        for path in sorted(public.rglob("*.py")):
            number = _source_number(path)
            if number is not None and number > int(module.number):
                path.unlink()  # a later module's solutions: graded code has no business with them
        for relative in targets:
            (public / relative).unlink(missing_ok=True)
        shutil.copytree(dest / "public", dest / "reference")
        for relative in targets:
            shutil.copyfile(staged / relative, dest / "reference" / LIB / relative)
        names, cells = task_names(reference, staged, targets)
    plugins = _pytest_plugins(dest / "tests")
    config = {"mode": "collect", "tests": str(dest / "tests" / module.id), "ini": str(dest / "pytest.ini"),
              "root": str(dest), "plugins": plugins, "task_names": {}, "limits": points.limits}
    with tempfile.TemporaryDirectory(prefix="tito-kit-collect-") as cwd:
        events = list(run_runner(dest, config, Path(cwd), 600))
    found = next((e for e in events if e["event"] == "collected"), None)
    if found is None or found["code"] not in (0, 5) or found["errors"]:
        detail = (found or {}).get("errors", [None])[0] if (found or {}).get("errors") else \
            next((e.get("message") for e in events if e.get("message")), "see pytest's output")
        raise TitoError(f"the tests of {module.id} do not collect against the reference solution ({detail})")
    tests, problems = [], []
    for test in found["tests"]:
        tasks = test["tasks"]
        if not tasks:
            continue  # an ungraded test: `tito test` runs it, grading does not
        if len(set(tasks)) > 1:
            problems.append(f"{test['nodeid']} is marked with several tasks ({', '.join(tasks)})")
            continue
        if tasks[0] not in points.tasks:
            problems.append(f"{test['nodeid']} is marked task {tasks[0]!r}, which points.toml does not list")
            continue
        tests.append({"nodeid": test["nodeid"], "task": tasks[0], "hidden": is_hidden_test(Path(test["file"]))})
    for task in points.tasks:
        if not any(t["task"] == task for t in tests):
            problems.append(f"task {task!r} in points.toml has no test marked @pytest.mark.task({task!r})")
    problems += [f"task {t!r} in points.toml has no solution cell defining a function" for t in points.tasks
                 if not names.get(t)]
    if problems:
        raise TitoError(f"{module.id}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    counts = {task: sum(1 for t in tests if t["task"] == task) for task in points.tasks}
    for test in tests:
        test["max_score"] = points.tasks[test["task"]] / counts[test["task"]]
    manifest = {"format": 3, "module": module.id, "module_name": module.name, "number": module.number, "lib": LIB,
                "export_targets": targets, "tasks": points.tasks, "total": points.total, "limits": points.limits,
                "tests": tests, "plugins": plugins, "task_names": {t: names[t] for t in points.tasks},
                "cells": cells}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Kit(dest, manifest)
