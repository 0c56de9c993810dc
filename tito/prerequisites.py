"""Which exercises a task needs finished first, read from the code rather than typed by hand.

Task T needs task U when T's reference solution calls one of the functions U's solution cell
defines, directly or through exported code that is no exercise (a helper in the lesson, or a
given notebook of the same module). The names come from Python's own symbol tables, cell by
cell, so a local variable or a parameter that happens to share an exercise's name is no call.
Only exported cells count: they are what the package runs. `tito test --task` names every
unfinished one at once; `tito tasks` shows them (and renders the README's task table).
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import TitoError
from .modules import Module

README_BEGIN = "<!-- tasks: begin"
README_END = "<!-- tasks: end -->"
SHIPPED = "prerequisites.json"  # in a student copy's tests/NN_name/


def _exported_cells(module: Module) -> list[tuple[Path, object]]:
    "(source, cell) for every exported or solution cell of the module's notebooks, lesson first."
    from .run_notebook import parse_cells

    return [(source, cell) for source in module.sources for cell in parse_cells(source)
            if cell.kind in ("export", "solution")]


def direct_prerequisites(module: Module) -> dict[str, list[str]]:
    "For each task, in exercise order, the other tasks its solution calls into (not transitively)."
    cells = _exported_cells(module)
    order = []
    for _, cell in cells:
        if cell.kind == "solution" and cell.task not in order:
            order.append(cell.task)

    def definers(name: str, source: Path) -> list:
        "The cells that define `name`, those of the same notebook first (an import is no definition)."
        found = [(s, c) for s, c in cells if name in c.defines - c.imports]
        return [c for s, c in found if s == source] or [c for s, c in found]

    where = {id(c): s for s, c in cells}
    needs = {}
    for task in order:
        start = [c for _, c in cells if c.kind == "solution" and c.task == task]
        seen, found, todo = {id(c) for c in start}, set(), list(start)
        while todo:
            cell = todo.pop()
            for name in sorted(cell.uses | cell.imports):
                for provider in definers(name, where[id(cell)]):
                    if provider.kind == "solution" and provider.task != task:
                        found.add(provider.task)  # its own needs come with it, transitively
                    elif id(provider) not in seen:
                        seen.add(id(provider))
                        todo.append(provider)
        needs[task] = [t for t in order if t in found]
    return needs


def prerequisites(module: Module) -> dict[str, list[str]]:
    "For each task, in exercise order, every task it needs first, transitively (in exercise order)."
    return _closure(direct_prerequisites(module))


def _closure(direct: dict[str, list[str]]) -> dict[str, list[str]]:
    order = list(direct)
    closed = {}
    for task in order:
        found, todo = set(), list(direct[task])
        while todo:
            other = todo.pop()
            if other not in found and other != task:
                found.add(other)
                todo.extend(direct.get(other, []))
        closed[task] = [t for t in order if t in found]
    return closed


def shipped_prerequisites(module: Module, root: Path) -> dict[str, list[str]]:
    """What each task needs first, by the reference solution, in a student copy: `tito release`
    writes it beside the tests (the copy's own source has stubs, which call nothing), then the
    student's own calls. Without the file (the course repository) the source is the reference."""
    import json

    derived = direct_prerequisites(module)
    path = module.tests_folder(root) / SHIPPED
    try:
        shipped = json.loads(path.read_text(encoding="utf-8")).get("needs", {}) if path.is_file() else {}
    except (OSError, ValueError):
        shipped = {}
    order = list(derived) + [t for t in shipped if t not in derived]
    return _closure({task: [t for t in order if t in set(derived.get(task, [])) | set(shipped.get(task, []))]
                     for task in order})


def write_shipped(module: Module, folder: Path) -> Path:
    "The reference's prerequisites as `tito release` ships them (`folder`: the copy's tests folder)."
    import json

    path = folder / SHIPPED
    path.write_text(json.dumps({"note": "what each task needs first, derived from the reference solution by "
                                        "tito.prerequisites; written by tito release", "needs": prerequisites(module)},
                               indent=1) + "\n", encoding="utf-8")
    return path


def unfinished_tasks(module: Module) -> list[str]:
    "Tasks whose solution cell in the source still raises the released stub's NotImplementedError."
    from .run_notebook import parse_cells

    left = []
    for cell in parse_cells(module.source):
        if cell.kind == "solution" and re.search(rf"""NotImplementedError\(\s*(f?["'])Task {re.escape(cell.task)}:""",
                                                 cell.code):
            if cell.task not in left:
                left.append(cell.task)
    return left


def task_table(module: Module, root: Path) -> str:
    "A markdown table: each task, its points and the tasks it needs first (derived from the code)."
    from .graded import load_points

    points = load_points(module.tests_folder(root))
    needs = prerequisites(module)
    direct = direct_prerequisites(module)
    if not needs:
        return "(this module has no graded tasks)"
    lines = ["| task | points | needs first |", "| --- | --- | --- |"]
    for task, before in needs.items():
        value = points.tasks.get(task) if points else None
        shown = ", ".join(f"`{t}`" if t in direct[task] else f"`{t}` (via {_via(t, task, direct)})" for t in before)
        lines.append(f"| `{task}` | {'-' if value is None else f'{value:g}'} | {shown or '-'} |")
    if points:
        lines.append(f"| **total** | **{points.total:g}** | |")
    return "\n".join(lines)


def _via(needed: str, task: str, direct: dict[str, list[str]]) -> str:
    "The direct prerequisite of `task` through which it needs `needed`."
    for step in direct[task]:
        todo, seen = [step], set()
        while todo:
            current = todo.pop()
            if current == needed:
                return f"`{step}`"
            if current not in seen:
                seen.add(current)
                todo.extend(direct.get(current, []))
    return "?"


def readme_block(root: Path, modules: list[Module]) -> str:
    "The README's task tables of the graded modules, between the markers `tito tasks --readme` keeps."
    parts = [f"{README_BEGIN}. Rendered from the reference solutions by `tito tasks --readme README.md`; "
             "do not edit by hand. -->"]
    for module in modules:
        parts += ["", f"**{module.id}**", "", task_table(module, root)]
    parts += ["", README_END]
    return "\n".join(parts)


def update_readme(path: Path, block: str) -> bool:
    "Replace the task block in `path`; True if the file changed. No markers: a one-line error."
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise TitoError(f"{path} has no '{README_BEGIN} ... {README_END}' block to render the task tables into")
    new = text[:start] + block + text[end + len(README_END):]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
