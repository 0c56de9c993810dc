"""Every contract a graded test checks is written where the student reads it.

For every graded module (one with tests/NN_name/points.toml), each graded test of task T (a
`@pytest.mark.task("T")` test, or the notebook's graded `T-test` cell) may check two kinds of
detail a student cannot guess: the words of an error (`pytest.raises(..., match=PATTERN)`) and the
keys of a returned dict (`result["key"]`). Both must appear in the docstring of the function that
task T's solution cell defines, so the exercise states them and a changed test cannot silently
demand more than the prose promises.
"""
from __future__ import annotations

import ast
import re
import tomllib

import jupytext
import pytest

from tito.graded import _nbgrader
from tito.modules import all_modules
from tito_testlib import REPO


def _graded_modules():
    return [m for m in all_modules(REPO) if (m.tests_folder(REPO) / "points.toml").is_file()]


def _task_docstrings(source) -> dict[str, str]:
    "Task id -> the docstrings of the functions its solution cell(s) define, joined."
    docs: dict[str, str] = {}
    for cell in jupytext.read(source, fmt="py:percent").cells:
        meta = _nbgrader(cell)
        if not (meta.get("solution") and meta.get("grade_id")):
            continue
        text = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("#|", "%")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                docs[meta["grade_id"]] = docs.get(meta["grade_id"], "") + "\n" + (ast.get_docstring(node) or "")
    return docs


def _task_of(function: ast.FunctionDef) -> str | None:
    for decorator in function.decorator_list:
        if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                and decorator.func.attr == "task" and decorator.args
                and isinstance(decorator.args[0], ast.Constant)):
            return decorator.args[0].value
    return None


def _checks(tree: ast.AST) -> list[tuple[str, str]]:
    "(kind, text) for every `match=` string and every string-keyed subscript under `tree`."
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "match" and isinstance(keyword.value, ast.Constant):
                    found.append(("match", keyword.value.value))
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str)):
            found.append(("key", node.slice.value))
    return found


def _graded_checks(module) -> list[tuple[str, str, str, str]]:
    "(task, where, kind, text) for the module's graded pytest tests and graded notebook cells."
    rows = []
    for path in sorted(module.tests_folder(REPO).glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and _task_of(node):
                rows += [(_task_of(node), f"{path.name}::{node.name}", kind, text) for kind, text in _checks(node)]
    for cell in jupytext.read(module.source, fmt="py:percent").cells:
        meta = _nbgrader(cell)
        grade_id = str(meta.get("grade_id", ""))
        if meta.get("grade") and grade_id.endswith("-test"):
            text = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("#|", "%")))
            rows += [(grade_id[: -len("-test")], f"cell {grade_id}", kind, t) for kind, t in _checks(ast.parse(text))]
    return rows


def _stated(kind: str, text: str, doc: str) -> bool:
    if kind == "key" and re.fullmatch(r"[\d.]+", text):
        return True  # a layer's name ("0", "2.body.0"), which the model defines, not the function
    if kind == "match":
        return re.search(text, doc) is not None or text in doc
    return re.search(rf"(?<![\w]){re.escape(text)}(?![\w])", doc) is not None


@pytest.mark.parametrize("module", _graded_modules(), ids=lambda m: m.id)
def test_every_checked_error_word_and_key_is_in_the_tasks_docstring(module):
    tasks = tomllib.loads((module.tests_folder(REPO) / "points.toml").read_text(encoding="utf-8"))["tasks"]
    docs = _task_docstrings(module.source)
    missing = [f"{where}: {kind} {text!r} is not in the docstring of task {task}'s function"
               for task, where, kind, text in _graded_checks(module)
               if task in tasks and not _stated(kind, text, docs.get(task, ""))]
    assert not missing, "\n".join(missing)


def test_the_contract_check_finds_what_it_must():
    tree = ast.parse('with pytest.raises(ValueError, match="min_keep"):\n    f()\nassert r["step"] == [0]\n')
    assert _checks(tree) == [("match", "min_keep"), ("key", "step")]
    assert _stated("match", r"sparsity must be in \[0, 1\)", "raises: sparsity must be in [0, 1), got ...")
    assert not _stated("key", "step", "returns {'steps': ...}")
