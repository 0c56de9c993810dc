"""What makes a module graded: nbgrader solution regions, task ids, points and hidden tests.

Conventions (documented in modules/README.md, section Tests):
- A student-completed cell carries nbgrader metadata with `"solution": true` and a `grade_id`
  (the task id); its code between `### BEGIN SOLUTION` and `### END SOLUTION` is the solution.
- `### BEGIN HIDDEN TESTS` / `### END HIDDEN TESTS` regions are instructor-only.
- Graded pytest tests carry `@pytest.mark.task("<task-id>")`.
- `tests/NN_name/points.toml` gives each task its points (`[tasks] task-id = 2`); a task's
  points are split evenly across its graded tests, visible and hidden alike.
- Files named `test_hidden_*.py` in `tests/NN_name/` are hidden tests: `tito release` leaves
  them out and `tito grade` runs them.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TitoError

POINTS_FILE = "points.toml"
HIDDEN_PREFIX = "test_hidden_"
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"

DEFAULT_LIMITS = {"test_timeout": 60.0, "total_timeout": 900.0, "memory_mb": 2048}


def is_hidden_test(path: Path) -> bool:
    return path.name.startswith(HIDDEN_PREFIX) and path.suffix == ".py"


def shared_tests(tests: Path) -> list[Path]:
    """What every module's tests may use, beside the module folders in `tests/`: its `.py` files
    (conftest.py) and its `_`-named folders (`_shared/`). A release and a grading kit copy them
    with the module's tests (copy_shared_tests)."""
    if not tests.is_dir():
        return []
    return sorted(p for p in tests.iterdir() if (p.is_file() and p.suffix == ".py")
                  or (p.is_dir() and p.name.startswith("_") and not p.name.startswith("__")))


def copy_shared_tests(tests: Path, dest: Path, ignore) -> None:
    "Copy shared_tests(tests) into the folder `dest` (a copy's tests/), folders filtered by `ignore`."
    dest.mkdir(parents=True, exist_ok=True)
    for path in shared_tests(tests):
        if path.is_dir():
            shutil.copytree(path, dest / path.name, ignore=ignore)
        else:
            shutil.copyfile(path, dest / path.name)


# --------------------------------------------------------------------------------------------
# points.toml


def _parse_toml(text: str, path: Path) -> dict:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - 3.10: the small subset points.toml uses
        return _parse_simple_toml(text, path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TitoError(f"{path}: not valid TOML ({exc})") from None


def _parse_simple_toml(text: str, path: Path) -> dict:
    data: dict = {}
    table = data
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            table = data.setdefault(line[1:-1].strip(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise TitoError(f"{path}:{number}: expected 'key = value', got {raw.strip()!r}")
        key, value = key.strip().strip('"'), value.strip()
        try:
            table[key] = json.loads(value.lower() if value in ("true", "false") else value)
        except ValueError:
            raise TitoError(f"{path}:{number}: cannot read value {value!r}") from None
    return data


@dataclass
class Points:
    tasks: dict[str, float]
    limits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    path: Path | None = None

    @property
    def total(self) -> float:
        return float(sum(self.tasks.values()))


def load_points(tests_folder: Path) -> Points | None:
    """The module's points table, or None when the module is not graded."""
    path = tests_folder / POINTS_FILE
    if not path.exists():
        return None
    data = _parse_toml(path.read_text(encoding="utf-8"), path)
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if flat and "tasks" not in data:
        data = {"tasks": flat, **{k: v for k, v in data.items() if isinstance(v, dict)}}  # task = points, untabled
    unknown = set(data) - {"tasks", "limits"}
    if unknown:
        raise TitoError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; expected [tasks] and optional [limits]")
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise TitoError(f"{path}: needs a [tasks] table mapping each task id to its points, e.g. magnitude-mask = 2")
    for task, value in tasks.items():
        if not TASK_ID.match(task):
            raise TitoError(f"{path}: task id {task!r} must be letters, digits, '-', '_' or '.'")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise TitoError(f"{path}: points for task {task!r} must be a positive number, got {value!r}")
    limits = dict(DEFAULT_LIMITS)
    for key, value in (data.get("limits") or {}).items():
        if key not in DEFAULT_LIMITS:
            raise TitoError(f"{path}: unknown limit {key!r}; known: {', '.join(DEFAULT_LIMITS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise TitoError(f"{path}: limit {key!r} must be a positive number, got {value!r}")
        limits[key] = float(value)
    return Points({k: float(v) for k, v in tasks.items()}, limits, path)


# --------------------------------------------------------------------------------------------
# Solution and hidden-test regions (nbgrader's ClearSolutions / ClearHiddenTests semantics)


def _marker_lines(lines: list[str], begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """(begin, end) line indexes of each region; unbalanced markers are an error."""
    regions, start = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text == begin:
            if start is not None:
                raise TitoError(f"{where}: '{begin}' at line {i + 1} inside another region")
            start = i
        elif text == end:
            if start is None:
                raise TitoError(f"{where}: '{end}' at line {i + 1} without a '{begin}'")
            regions.append((start, i))
            start = None
    if start is not None:
        raise TitoError(f"{where}: '{begin}' at line {start + 1} is never closed by '{end}'")
    return regions


def stub_line(task: str) -> str:
    """The line a released stub raises at (tito test and tito grade recognise it by "Task <id>:")."""
    return f'raise NotImplementedError("Task {task}: not implemented yet; replace this line with your code")'


def stub_code(source: str, task: str, where: str) -> str:
    """Replace every solution region, keeping its indentation, with a NotImplementedError stub."""
    lines = source.split("\n")
    regions = _marker_lines(lines, BEGIN_SOLUTION, END_SOLUTION, where)
    for start, end in reversed(regions):
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        lines[start:end + 1] = [
            f"{indent}# YOUR CODE HERE",
            f"{indent}{stub_line(task)}",
        ]
    return "\n".join(lines)


def stub_markdown(source: str, where: str) -> str:
    lines = source.split("\n")
    for start, end in reversed(_marker_lines(lines, BEGIN_SOLUTION, END_SOLUTION, where)):
        lines[start:end + 1] = ["YOUR ANSWER HERE"]
    return "\n".join(lines)


def strip_hidden(source: str, where: str) -> str:
    lines = source.split("\n")
    for start, end in reversed(_marker_lines(lines, BEGIN_HIDDEN, END_HIDDEN, where)):
        del lines[start:end + 1]
    return "\n".join(lines)


def _nbgrader(cell) -> dict:
    meta = cell.metadata.get("nbgrader") if hasattr(cell, "metadata") else None
    return meta if isinstance(meta, dict) else {}


def _cell_line(text: str, cell_source: str) -> int:
    first = cell_source.split("\n", 1)[0]
    position = text.find(first) if first else -1
    return text[:position].count("\n") + 1 if position >= 0 else 0


def solution_tasks(source: Path) -> list[str]:
    """Task ids of the solution cells of a module source, in order."""
    import jupytext

    nb = jupytext.read(source, fmt="py:percent")
    tasks = []
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("solution") and meta.get("grade_id") and meta["grade_id"] not in tasks:
            tasks.append(meta["grade_id"])
    return tasks


def release_source(source: Path, stub: bool) -> str:
    """The module source as students get it: hidden tests gone and, if `stub`, solutions too."""
    import jupytext

    text = source.read_text(encoding="utf-8")
    nb = jupytext.reads(text, fmt="py:percent")
    changed = False
    for cell in nb.cells:
        where = f"{source}:{_cell_line(text, cell.source)}"
        new = strip_hidden(cell.source, where) if BEGIN_HIDDEN in cell.source else cell.source
        if stub and (BEGIN_SOLUTION in new or _nbgrader(cell).get("solution")):
            if cell.cell_type == "code":
                task = _nbgrader(cell).get("grade_id")
                if BEGIN_SOLUTION in new and not task:
                    raise TitoError(f"{where}: a cell with solution markers needs nbgrader metadata with a grade_id (the task id)")
                new = stub_code(new, task, where)
            else:
                new = stub_markdown(new, where)
        if new != cell.source:
            cell.source = new
            changed = True
    return jupytext.writes(nb, fmt="py:percent") if changed else text


# --------------------------------------------------------------------------------------------
# Grading each task alone: a submission's solution cells by task, and hybrids built from them


def normalized(source: str) -> str:
    """A cell's code with trailing spaces and blank lines dropped (what an editor may change)."""
    return "\n".join(line.rstrip() for line in source.strip("\n").split("\n"))


def solution_cells(nb) -> dict[str, list]:
    """The code cells of each task (nbgrader `"solution": true` with a grade_id), in order."""
    cells: dict[str, list] = {}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and meta.get("solution") and meta.get("grade_id"):
            cells.setdefault(str(meta["grade_id"]), []).append(cell)
    return cells


_DEFINES = re.compile(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.M)


def defined_names(source: str) -> list[str]:
    """Top-level functions and classes a cell defines (a regex: the cell may not even parse)."""
    return _DEFINES.findall(source)
