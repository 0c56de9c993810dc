"""`tito release MODULE --out DIR`: the course as a student gets it, without MODULE's solutions.

Every module's source is copied with its hidden-test regions removed; the chosen module's
solution regions become `raise NotImplementedError("Task <id>: ...")` stubs (nbgrader's
ClearSolutions semantics, same markers, so the source still works with nbgrader). Hidden test
files (`tests/*/test_hidden_*.py`) are left out. `tinytorch/` is exported from the released
sources, so the student's package never contained the solution.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import TitoError
from .graded import copy_shared_tests, is_hidden_test, release_source, shared_tests, solution_tasks
from .modules import all_modules, resolve
from .prerequisites import task_table, write_shipped

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.ipynb", ".ipynb_checkpoints", ".pytest_cache",
                               ".hypothesis")

STUDENT_README = """# {course}: student copy ({module})

This is your copy of the course. Module **{module}** is yours to complete: its exercises raise
`NotImplementedError("Task <id>: ...")` until you replace each stub with your code.

## Work on it

```bash
pip install -e ".[test]"              # once; add ",jupyter" for JupyterLab: pip install -e ".[test,jupyter]"
```

1. Edit one exercise in `modules/{module}/{name}_dev.py` (the task ids are in the table below).
2. `tito test {module} --task ID` runs that exercise's inline and graded tests in seconds.
3. `tito test {module}` runs everything: one line per task (done, failing, not started, blocked by X).
4. Jupyter instead: `tito notebook {module}`, then `jupyter lab modules/{module}/{name}_dev.ipynb`; `tito test` syncs your notebook edits back into the `.py`.

A task "blocked by X" needs task X first (the table's last column lists what each task needs,
read from the code); the notebook keeps running past unfinished exercises, so every task's tests count. For a failing task you see the expected and the actual value and
the line; `-v` shows the full output. Nothing you write is lost: when a notebook edit replaces
the `.py`, the old one is kept in `.tito_backups/`.

## Tasks

{tasks}

{hidden}## Hand in

Submit `modules/{module}/{name}_dev.py` (or `{name}_dev.ipynb`).
"""


HIDDEN_NOTE = """Your grade also counts hidden tests that are not in this copy, so make your code correct in
general, not just for the visible tests.

"""


def release(root: Path, wanted: str, out: Path, force: bool = False) -> Path:
    from .export import export_module

    module = resolve(root, wanted)
    out = out.resolve()
    if out == root.resolve() or root.resolve() in out.parents and out.name in ("modules", "tests", "tito", "tinytorch"):
        raise TitoError(f"refusing to release into {out}: choose a folder outside the course's own folders")
    if out.exists():
        if not force:
            raise TitoError(f"{out} already exists; pass --force to replace it")
        if not out.is_dir():
            raise TitoError(f"{out} exists and is not a folder")
        if (out / ".git").exists():
            raise TitoError(f"{out} is a git repository; refusing to replace it")
        shutil.rmtree(out)
    tasks = solution_tasks(module.source)
    if not tasks:
        raise TitoError(f"{module.source} has no solution cells (nbgrader metadata with \"solution\": true)")
    staging = out.with_name(out.name + ".tito-partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        later = {m.id for m in all_modules(root) if int(m.number) > int(module.number)}
        for other in all_modules(root):
            if other.id in later:
                continue  # a later module's solutions are not the students' yet
            target = staging / "modules" / other.folder.name
            shutil.copytree(other.folder, target, ignore=_SKIP)
            text = release_source(other.source, stub=other == module)
            (target / other.source.name).write_text(text, encoding="utf-8")
        tests = root / "tests"
        if tests.is_dir():
            shared = shared_tests(tests)
            copy_shared_tests(tests, staging / "tests", _SKIP)
            for folder in sorted(p for p in tests.iterdir() if p.is_dir() and p not in shared):
                if folder.name == "tito" or folder.name.startswith((".", "__")):
                    continue  # the CLI's own tests are the instructors' business
                if folder.name in later:
                    continue
                shutil.copytree(folder, staging / "tests" / folder.name, ignore=_SKIP)
                for hidden in [p for p in (staging / "tests" / folder.name).rglob("*.py") if is_hidden_test(p)]:
                    hidden.unlink()
        # What each task needs first, by the reference: the copy's stubs call nothing.
        (staging / "tests" / module.id).mkdir(parents=True, exist_ok=True)
        write_shipped(module, staging / "tests" / module.id)
        shutil.copytree(Path(__file__).resolve().parent, staging / "tito", ignore=_SKIP)
        for name in ("pyproject.toml", "LICENSE", ".gitignore"):
            if (root / name).is_file():
                shutil.copyfile(root / name, staging / name)
        match = re.search(r'^name\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(encoding="utf-8"), re.M)
        course = match.group(1) if match else "tinytorch"
        has_hidden = any(is_hidden_test(p) for p in module.tests_folder(root).rglob("*.py"))
        hidden = HIDDEN_NOTE if has_hidden else ""
        (staging / "README.md").write_text(STUDENT_README.format(
            course=course, module=module.id, name=module.name, tasks=task_table(module, root), hidden=hidden),
            encoding="utf-8")
        for other in all_modules(staging):
            export_module(other, staging, quiet=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
