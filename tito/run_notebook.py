"""Run a module source cell by cell, going on past unfinished exercises.

Used by `tito test` in a subprocess. Each `# %%` code cell runs in one shared namespace, compiled
with the source's own file name and line numbers. A cell that fails because a task is not
implemented yet (`NotImplementedError("Task X: ...")`) is "waiting for task X" and the run goes
on; a later cell failing with NameError on a name that a failed cell should have defined waits for
the same thing instead of counting as an error. The inline test cells of later exercises still run.

With `--tasks a,b` only what those tasks' inline test cells need runs: every exported or solution
cell, the tasks' own test cells, and (found from the names they use) the cells that define those
names; other exercises' tests and the experiments are skipped.

`--json FILE` receives one record per cell (rewritten after every cell, so a crash keeps the
results so far); the printed lines are for people.
"""
from __future__ import annotations

import builtins
import hashlib
import pickle
import json
import os
import re
import symtable
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

_HEADER = re.compile(r"^# %%(?:[ \t]+(.*))?$")
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(export|exports|exporti|default_exp)\b")
TASK_MESSAGE = re.compile(r"^Task ([A-Za-z0-9][A-Za-z0-9_.-]*?):")


@dataclass
class Cell:
    index: int  # position among all cells (markdown included), as jupytext counts them
    line: int  # 1-based line of the `# %%` header (0 for code before the first header)
    body_line: int  # 1-based line of the first body line
    code: str
    kind: str = "code"  # code | export | solution | test
    task: str | None = None  # solution and test cells: the task id
    grade_id: str | None = None
    defines: set = field(default_factory=set)
    uses: set = field(default_factory=set)
    imports: set = field(default_factory=set)  # the defined names that are imports


def _nbgrader(header: str) -> dict:
    start = header.find("nbgrader=")
    if start < 0:
        return {}
    try:
        value, _ = json.JSONDecoder().raw_decode(header[start + len("nbgrader="):])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def task_of_test(grade_id: str, tasks: list[str]) -> str:
    "The task an nbgrader test cell belongs to: `<task>-test` by convention."
    if grade_id in tasks:
        return grade_id
    if grade_id.endswith("-test") and (grade_id[:-5] in tasks or not tasks):
        return grade_id[:-5]
    return grade_id[:-5] if grade_id.endswith("-test") else grade_id


def _names(code: str) -> tuple[set, set, set]:
    "(names the cell defines at top level, names it reads from the notebook namespace, imported names)."
    try:
        table = symtable.symtable(code, "<cell>", "exec")
    except SyntaxError:
        return set(), set(), set()
    defines, uses, imports = set(), set(), set()
    for sym in table.get_symbols():
        if sym.is_imported() and not sym.is_assigned():
            imports.add(sym.get_name())
        if sym.is_assigned() or sym.is_imported():
            defines.add(sym.get_name())
        elif sym.is_referenced():
            uses.add(sym.get_name())

    def walk(t):
        for child in t.get_children():
            for sym in child.get_symbols():
                if sym.is_global() and sym.is_referenced():
                    uses.add(sym.get_name())
            walk(child)

    walk(table)
    uses -= defines
    uses -= set(dir(builtins))
    return defines, uses, imports


def parse_cells(path: Path) -> list[Cell]:
    "The code cells of a percent-format source, with their kinds, tasks and line numbers."
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[tuple[int, str | None, list[str]]] = []  # (header line, header text, body)
    current: tuple[int, str | None, list[str]] = (0, None, [])
    for number, text in enumerate(lines, 1):
        match = _HEADER.match(text)
        if match:
            blocks.append(current)
            current = (number, match.group(1) or "", [])
        else:
            current[2].append(text)
    blocks.append(current)
    raw = []
    index = -1
    for line, header, body in blocks:
        if header is None and not any(l.strip() for l in body):
            continue  # nothing before the first header
        index += 1
        if header is not None and re.match(r"^\[(markdown|md|raw)\]", header.strip()):
            continue
        meta = _nbgrader(header or "")
        raw.append((index, line, meta, "\n".join(body)))
    tasks = [m["grade_id"] for _, _, m, _ in raw if m.get("solution") and m.get("grade_id")]
    cells = []
    for index, line, meta, code in raw:
        cell = Cell(index=index, line=line, body_line=line + 1 if line else 1, code=code)
        gid = meta.get("grade_id")
        if meta.get("solution") and gid:
            cell.kind, cell.task = "solution", gid
        elif meta.get("grade") and gid:
            cell.kind, cell.task = "test", task_of_test(gid, tasks)
        elif any(_DIRECTIVE.match(l) for l in code.split("\n")):
            cell.kind = "export"
        cell.grade_id = gid
        cell.defines, cell.uses, cell.imports = _names(code)
        cells.append(cell)
    return cells


def _closure(cells: list[Cell], chosen: set) -> set:
    "`chosen` (cell indexes) and every cell that defines a name they use, transitively."
    chosen = set(chosen)
    position = {c.index: i for i, c in enumerate(cells)}
    todo = [c for c in cells if c.index in chosen]
    while todo:
        cell = todo.pop()
        at = position[cell.index]
        for name in sorted(cell.uses):
            provider = next((c for c in reversed(cells[:at]) if name in c.defines), None)
            if provider is None:
                provider = next((c for c in cells[at + 1:] if name in c.defines), None)
            if provider is not None and provider.index not in chosen:
                chosen.add(provider.index)
                todo.append(provider)
    return chosen


def select_cells(cells: list[Cell], tasks: list[str]) -> list[Cell]:
    "Exported and solution cells, the tasks' test cells, and the cells defining the names they use."
    chosen = {c.index for c in cells if c.kind in ("export", "solution")}
    chosen |= {c.index for c in cells if c.kind == "test" and c.task in tasks}
    chosen = _closure(cells, chosen)
    return [c for c in cells if c.index in chosen]


def cacheable(cells: list[Cell]) -> dict[int, str]:
    """Plain cells whose results depend on no exercise: `{cell index: digest of the code they run}`.

    A cell qualifies when no cell it depends on (itself included) is a solution, a test or an
    exported cell that defines more than imports, and it imports nothing (modules do not pickle). `--tasks` runs reuse their saved results
    (validated against the package files they loaded), so training the reference models once is
    enough.
    """
    by_index = {c.index: c for c in cells}
    found = {}
    for cell in cells:
        if cell.kind != "code" or not cell.defines or re.search(r"^\s*(import|from)\s", cell.code, re.M):
            continue
        deps = _closure(cells, {cell.index})
        if any(by_index[i].kind in ("solution", "test") or by_index[i].kind == "export"
               and by_index[i].defines - by_index[i].imports for i in deps):
            continue
        digest = hashlib.sha256()
        for i in sorted(deps):
            digest.update(by_index[i].code.encode("utf-8") + b"\0")
        found[cell.index] = digest.hexdigest()[:20]
    return found


def _location(path: Path, exc: BaseException) -> tuple[int, str]:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path]
    if not frames:
        return 0, ""
    return frames[-1].lineno or 0, (frames[-1].line or "").strip()


def waiting_task(exc: BaseException) -> str | None:
    "X for NotImplementedError('Task X: ...'), else None."
    if isinstance(exc, NotImplementedError):
        match = TASK_MESSAGE.match(str(exc))
        if match:
            return match.group(1)
    return None


def _cache_dir() -> Path | None:
    "A private folder for cached cell results (None if it is not ours alone)."
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"tito-cache-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
    except OSError:
        return None
    if uid is not None and (info.st_uid != uid or info.st_mode & 0o077):
        return None  # someone else's folder: never unpickle from it
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _loaded_package_files() -> dict[str, str]:
    "The tinytorch files this process has imported (and the data files next to them), with digests."
    files = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (name == "tinytorch" or name.startswith("tinytorch.")) and file and os.path.exists(file):
            files[file] = _sha(Path(file))
            for data in Path(file).parent.glob("*.npz"):
                files[str(data)] = _sha(data)
    return files


class Runner:
    def __init__(self, path: Path, cells: list[Cell], report: Path | None = None, echo: bool = False,
                 plots: Path | None = None, cache: dict[int, str] | None = None, use_cache: bool = False):
        self.path, self.cells, self.report, self.echo, self.plots = path, cells, report, echo, plots
        self.cache = cache or {}
        self.use_cache = use_cache
        self.cache_dir = _cache_dir() if self.cache else None
        self.ns = {"__name__": "__main__", "__file__": str(path), "__builtins__": builtins}
        self.missing: dict[str, dict] = {}  # name -> why it was never defined (a waiting/failed cell)
        self.records: list[dict] = []
        self.figures: list[str] = []

    def _save_plots(self, cell: Cell) -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None or self.plots is None:
            return
        for number in plt.get_fignums():
            self.plots.mkdir(parents=True, exist_ok=True)
            target = self.plots / f"line{cell.line:05d}-fig{number}.png"
            try:
                plt.figure(number).savefig(target, dpi=80)
                self.figures.append(str(target))
            except Exception:
                pass
        plt.close("all")

    def _cache_file(self, cell: Cell) -> Path | None:
        if self.cache_dir is None or cell.index not in self.cache:
            return None
        where = hashlib.sha256(str(self.path).encode("utf-8")).hexdigest()[:12]
        return self.cache_dir / f"{where}-{self.cache[cell.index]}.pkl"

    def _from_cache(self, cell: Cell) -> bool:
        file = self._cache_file(cell)
        if not self.use_cache or file is None or not file.exists():
            return False
        try:
            saved = pickle.loads(file.read_bytes())
            if saved["python"] != sys.version or any(
                    not os.path.exists(f) or _sha(Path(f)) != digest for f, digest in saved["files"].items()):
                return False
            self.ns.update(saved["values"])
        except Exception:
            return False
        return True

    def _to_cache(self, cell: Cell) -> None:
        file = self._cache_file(cell)
        if file is None:
            return
        try:
            values = {n: self.ns[n] for n in cell.defines if n in self.ns}
            data = pickle.dumps({"python": sys.version, "files": _loaded_package_files(), "values": values})
            tmp = file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, file)
        except Exception:
            pass  # an unpicklable value: this cell simply runs every time

    def run_cell(self, cell: Cell) -> dict:
        record = {"line": cell.line, "kind": cell.kind, "task": cell.task, "status": "ok", "seconds": 0.0}
        if self._from_cache(cell):
            record["cached"] = True
            return record
        start = time.perf_counter()
        try:
            code = compile("\n" * (cell.body_line - 1) + cell.code, str(self.path), "exec")
            exec(code, self.ns)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a student's cell may raise anything, SystemExit included
            self._failed(cell, record, exc)
        record["seconds"] = round(time.perf_counter() - start, 4)
        if record["status"] == "ok":
            for name in cell.defines:
                self.missing.pop(name, None)
        else:
            # Everything a failed cell defines is missing or incomplete (`runs = {}` before the
            # loop that failed): later cells that need it wait for the same cause.
            why = record.get("blocked_by") or {"task": record.get("waiting_for"), "line": cell.line,
                                               "status": record["status"]}
            for name in cell.defines:
                self.missing.setdefault(name, why)
        self._save_plots(cell)
        if record["status"] == "ok":
            self._to_cache(cell)
        return record

    def _failed(self, cell: Cell, record: dict, exc: BaseException) -> None:
        line, text = _location(self.path, exc)
        if isinstance(exc, SyntaxError) and exc.filename == str(self.path) and exc.lineno:
            line, text = exc.lineno, (exc.text or "").strip()
        record.update(error_line=line, error_text=text, exception=type(exc).__name__,
                      message=str(exc).strip().split("\n")[0][:300])
        task = waiting_task(exc)
        name = getattr(exc, "name", None) if isinstance(exc, NameError) else None
        if not (name and name in self.missing):
            # Any error in a cell that reads a missing or incomplete name is a consequence.
            name = next((n for n in sorted(cell.uses) if n in self.missing), None)
        if task:
            record.update(status="waiting", waiting_for=task)
        elif name:
            why = self.missing[name]
            record.update(status="waiting" if why.get("task") else "skipped", waiting_for=why.get("task"),
                          needs=name, needs_line=why.get("line"), blocked_by=why)
        elif isinstance(exc, AssertionError):
            message = str(exc).strip().split("\n")[0]
            shown = self._explain_assert(cell, line)
            if shown:
                message = f"{shown} (message: {message})" if message else shown
            record.update(status="failed", message=(message or "assertion failed")[:400])
        else:
            record.update(status="error")
            if os.environ.get("TITO_TRACEBACK"):
                traceback.print_exception(exc)

    def _explain_assert(self, cell: Cell, line: int) -> str:
        "For a failed `assert a == b`: the value of each side that is not a literal."
        import ast

        try:
            tree = ast.parse(cell.code)
        except SyntaxError:
            return ""
        node = next((n for n in ast.walk(tree) if isinstance(n, ast.Assert)
                     and n.lineno + cell.body_line - 1 == line), None)
        if node is None or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
            return ""
        parts = []
        for side in (node.test.left, node.test.comparators[0]):
            text = ast.get_source_segment(cell.code, side) or ""
            try:
                ast.literal_eval(side)
                continue  # a literal shows itself
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
            try:
                value = eval(compile(ast.Expression(side), str(self.path), "eval"), self.ns)
            except Exception:
                continue
            shown = repr(value).replace("\n", " ")
            parts.append(f"{text[:80]} is {shown[:160]}")
        return "; ".join(parts)

    def run(self) -> list[dict]:
        for cell in self.cells:
            record = self.run_cell(cell)
            self.records.append(record)
            if self.echo and record["status"] != "ok":
                print(describe(record, self.path.name), flush=True)
            self._write()
        return self.records

    def _write(self) -> None:
        if self.report is not None:
            data = {"cells": self.records, "figures": self.figures}
            tmp = self.report.with_suffix(".tmp")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.report)


def describe(record: dict, filename: str) -> str:
    "One line about a cell that did not run through."
    where = f"{filename}:{record.get('error_line') or record['line']}"
    status = record["status"]
    if status == "waiting":
        if record.get("needs"):
            return f"  waiting for task {record['waiting_for']}: needs {record['needs']}  [{where}]"
        return f"  waiting for task {record['waiting_for']}  [{where}]"
    if status == "skipped":
        return f"  skipped: needs {record['needs']} from the cell at line {record.get('needs_line')}, which failed  [{where}]"
    if status == "failed":
        return f"  inline test failed: {record['message']}  [{where}: {record.get('error_text', '')}]"
    return f"  error: {record['exception']}: {record['message']}  [{where}: {record.get('error_text', '')}]"


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tito.run_notebook")
    parser.add_argument("source")
    parser.add_argument("--tasks", default="", help="comma-separated task ids: run only what their tests need")
    parser.add_argument("--json", dest="report", help="write one record per cell here")
    parser.add_argument("--plots", help="save the figures each cell draws into this folder")
    args = parser.parse_args(argv)
    path = Path(args.source).resolve()
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are saved (with --plots), never shown
    sys.argv = [str(path)]
    sys.path.insert(0, str(path.parent))
    cells = parse_cells(path)
    cache = cacheable(cells)
    tasks = [t for t in args.tasks.split(",") if t]
    if tasks:
        cells = select_cells(cells, tasks)
    # The full run is the reference: it always runs every cell (and refreshes the cache);
    # a --tasks run reuses the results of cells that no exercise can change.
    runner = Runner(path, cells, Path(args.report) if args.report else None, echo=True,
                    plots=Path(args.plots) if args.plots else None, cache=cache, use_cache=bool(tasks))
    records = runner.run()
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
