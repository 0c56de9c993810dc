"""Mutation testing of the graded reference solutions: does a wrong answer lose points?

    python -m benchmarks.mutation 18 [--tasks ID[,ID]] [--sample N --seed S] [--jobs 2]
                                     [--timeout SECONDS] [--out DIR] [--verify-export K]
                                     [--mutants ID[,ID]] [--list]

For every graded task of a module (the tasks of tests/NN_name/points.toml) the tool takes the
reference solution (the code between `### BEGIN SOLUTION` and `### END SOLUTION` in the lesson
notebook modules/NN_name/<name>_dev.py), changes one token of it at a time (a mutant), builds the
package with only that change and runs only that task's graded tests (`@pytest.mark.task(id)`),
as `tito grade` scores a submission whose other tasks are the reference. A mutant is killed when
a graded test fails (or it hangs past the time limit, or the package no longer imports): that
wrong answer loses points. A surviving mutant is either equivalent (it computes the same thing)
or a hole in the tests. Output: DIR/mutation.md and DIR/mutation.json with the score per task
and every survivor with its diff (default DIR: bench_results/scratch/mutation, git-ignored).

Why a small AST tool over the solution cells instead of mutmut: mutmut mutates whole files of a
copied source tree and runs the whole test command per mutant. Here the files it would mutate
are generated (tinytorch/ is exported from the notebooks), most of their lines are given code or
argument checks that no task is graded on, and a mutant must be scored the way the grader scores
it: by the graded tests of the one task it belongs to, the other tasks untouched. Knowing the
solution regions, the tasks and the markers, the tool mutates only graded code and runs only
the tests that give that code its points, with no new dependency and about 600 lines.

Fast path: instead of exporting the notebook with nbdev per mutant (about 2 s), the mutated
function is written over the same function in a copy of the exported file. `--verify-export K`
checks that shortcut: the unmutated copy and K mutants are compared, as ASTs, with what nbdev
exports from the (mutated) notebook; `tests/tito/test_mutation_sample.py` runs it in CI.

Operators (one change per mutant): comparison `<`/`<=`, `>`/`>=`, `==`/`!=`, `is`/`is not`,
`in`/`not in`; arithmetic `+`/`-`, `*`/`/`, `//`->`/`, `%`->`//`, `**`->`*` (also in `+=`...);
`and`/`or`; unary `-x`, `not x`, `~x` -> `x`; constants 0->1, 1->0, n->n+1, True/False, None->0;
min/max, any/all, argmin/argmax, floor/ceil, minimum/maximum swapped; a statement replaced by
`pass`; the first two positional arguments of a call swapped; slice bounds off by one (+1, -1).
Strings, f-strings, docstrings and annotations are left alone (messages and types: no behaviour).

Equivalent mutants are detected where it is cheap: a mutant whose AST equals the original's, or
another mutant's, is not generated; one whose AST equals the original's after folding identities
(`x * 1`, `x / 1`, `x + 0`, `x - 0`, `x ** 1`, `-0`) is reported as equivalent without running.
Survivors reviewed by hand and found equivalent are listed, with the reason, in
benchmarks/mutation_equivalent.toml (keyed by a mutant key stable across line moves); the report
scores each task over the mutants that change behaviour.
"""
from __future__ import annotations

import argparse
import ast
import copy
import difflib
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = "tinytorch"
EQUIVALENT_FILE = Path(__file__).resolve().parent / "mutation_equivalent.toml"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_CELL = re.compile(r"^# %%.*nbgrader=(\{.*\})\s*$")
_STOP = threading.Event()  # set by SIGTERM/SIGINT: finish the mutants running, start no more

# --------------------------------------------------------------------------------------------
# Solution regions


@dataclass
class Region:
    task: str
    source: Path      # the lesson notebook
    first: int        # first solution line (1-based, after the BEGIN marker)
    last: int         # last solution line (before the END marker)
    function: str     # the top-level function holding it


def solution_regions(source: Path) -> list[Region]:
    """Every solution region of a notebook, with its task id and the top-level function around it."""
    text = source.read_text(encoding="utf-8")
    lines = text.split("\n")
    tree = ast.parse(text, filename=str(source))
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    regions, task, start = [], None, None
    for number, line in enumerate(lines, 1):
        cell = _CELL.match(line)
        if cell:
            meta = json.loads(cell.group(1))
            task = meta.get("grade_id") if meta.get("solution") else None
        elif line.strip() == BEGIN:
            start = number
        elif line.strip() == END and start is not None:
            holder = next((f for f in functions if f.lineno < start < f.end_lineno), None)
            if task is None or holder is None:
                raise ValueError(f"{source}:{start}: a solution region needs a solution cell's grade_id "
                                 "and a top-level function around it")
            regions.append(Region(task, source, start + 1, number - 1, holder.name))
            start = None
    return regions


# --------------------------------------------------------------------------------------------
# Operators

_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
          ast.BitXor: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift}
_BOOLOP = {ast.And: ast.Or, ast.Or: ast.And}
_NAMES = {"min": "max", "max": "min", "any": "all", "all": "any", "argmin": "argmax", "argmax": "argmin",
          "floor": "ceil", "ceil": "floor", "minimum": "maximum", "maximum": "minimum"}
_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
           ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
           ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
           ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
           ast.And: "and", ast.Or: "or"}
_DELETABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return, ast.If, ast.For,
              ast.While, ast.Raise, ast.Assert, ast.With, ast.Try, ast.Break, ast.Continue)
_SKIP_FIELDS = {"annotation", "returns", "type_comment"}


def _walk(tree: ast.AST) -> list[tuple[ast.AST, ast.AST | None, str | None, int | None]]:
    """Every node with its parent, field and list index, in a fixed depth-first order. Strings,
    f-strings and annotations are not descended into: no operator applies there."""
    out = []

    def visit(node, parent, name, index):
        out.append((node, parent, name, index))
        if isinstance(node, ast.JoinedStr):
            return
        for child_name, value in ast.iter_fields(node):
            if child_name in _SKIP_FIELDS:
                continue
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        visit(item, node, child_name, i)
            elif isinstance(value, ast.AST):
                visit(value, node, child_name, None)

    visit(tree, None, None, None)
    return out


def _is_docstring(node: ast.AST, parent: ast.AST | None, index: int | None) -> bool:
    return (isinstance(node, ast.Expr) and index == 0 and isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef))
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))


def _plus(expr: ast.expr, delta: int) -> ast.expr:
    """`expr + delta`, folded when `expr` is an int constant."""
    if isinstance(expr, ast.Constant) and type(expr.value) is int:
        return ast.Constant(expr.value + delta)
    op = ast.Add() if delta > 0 else ast.Sub()
    return ast.BinOp(copy.deepcopy(expr), op, ast.Constant(abs(delta)))


def _constant_variants(value):
    if isinstance(value, bool):
        return [(not value, f"{value} -> {not value}")]
    if value is None:
        return [(0, "None -> 0")]
    if isinstance(value, (int, float)) and not isinstance(value, complex):
        if value == 0:
            new = type(value)(1)
        elif value == 1:
            new = type(value)(0)
        else:
            new = value + 1
        return [(new, f"{value!r} -> {new!r}")]
    return []  # strings, bytes, Ellipsis: messages and markers, not behaviour


def variants(node: ast.AST, parent: ast.AST | None, index: int | None):
    """(operator, description, make) for each mutation of `node`; make(copy) returns the
    replacement node (ast.Pass() deletes a statement)."""
    out = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            new = _COMPARE.get(type(op))
            if new:
                def make(n, i=i, new=new):
                    n.ops[i] = new()
                    return n
                out.append(("compare", f"`{_SYMBOL[type(op)]}` -> `{_SYMBOL[new]}`", make))
    elif isinstance(node, (ast.BinOp, ast.AugAssign)):
        new = _BINOP.get(type(node.op))
        if new:
            def make(n, new=new):
                n.op = new()
                return n
            out.append(("arithmetic", f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new]}`", make))
    elif isinstance(node, ast.BoolOp):
        new = _BOOLOP[type(node.op)]

        def make(n, new=new):
            n.op = new()
            return n
        out.append(("boolean", f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new]}`", make))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
        symbol = {ast.USub: "-x", ast.Not: "not x", ast.Invert: "~x"}[type(node.op)]
        out.append(("unary", f"`{symbol}` -> `x`", lambda n: n.operand))
    elif isinstance(node, ast.Constant) and not (isinstance(parent, ast.Expr)):
        for value, text in _constant_variants(node.value):
            out.append(("constant", text, lambda n, value=value: ast.Constant(value)))
    elif isinstance(node, ast.Name) and node.id in _NAMES and isinstance(parent, ast.Call) and node is parent.func:
        new = _NAMES[node.id]
        out.append(("call-name", f"`{node.id}` -> `{new}`", lambda n, new=new: ast.Name(new, ast.Load())))
    elif isinstance(node, ast.Attribute) and node.attr in _NAMES and isinstance(parent, ast.Call) and node is parent.func:
        new = _NAMES[node.attr]

        def make(n, new=new):
            n.attr = new
            return n
        out.append(("call-name", f"`.{node.attr}` -> `.{new}`", make))
    if isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
        def make(n):
            n.args[0], n.args[1] = n.args[1], n.args[0]
            return n
        out.append(("swap-args", "first two arguments swapped", make))
    if isinstance(node, ast.Slice):
        for bound in ("lower", "upper"):
            if getattr(node, bound) is not None:
                for delta in (1, -1):
                    def make(n, bound=bound, delta=delta):
                        setattr(n, bound, _plus(getattr(n, bound), delta))
                        return n
                    out.append(("slice", f"slice {bound} bound {delta:+d}", make))
    if isinstance(node, _DELETABLE) and not _is_docstring(node, parent, index):
        out.append(("delete", "statement replaced by `pass`", lambda n: ast.Pass()))
    return out


class _Fold(ast.NodeTransformer):
    "Fold the identities a mutant may introduce (x * 1, x / 1, x + 0, x - 0, x ** 1, -0)."

    def visit_BinOp(self, node):
        self.generic_visit(node)
        right = node.right.value if isinstance(node.right, ast.Constant) else None
        left = node.left.value if isinstance(node.left, ast.Constant) else None
        if isinstance(node.op, (ast.Mult, ast.Div, ast.Pow)) and right == 1 and not isinstance(right, bool):
            return node.left
        if isinstance(node.op, ast.Mult) and left == 1 and not isinstance(left, bool):
            return node.right
        if isinstance(node.op, (ast.Add, ast.Sub)) and right == 0 and not isinstance(right, bool):
            return node.left
        if isinstance(node.op, ast.Add) and left == 0 and not isinstance(left, bool):
            return node.right
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) and node.operand.value == 0:
            return node.operand
        return node


def _normal(tree: ast.AST) -> str:
    return ast.dump(_Fold().visit(copy.deepcopy(tree)))


@dataclass
class Mutant:
    id: str                # "<task>#<n>", n in generation order (changes when the code changes)
    key: str               # stable across line moves: hash of task, operator, change and statement
    task: str
    function: str
    line: int              # line of the lesson notebook
    operator: str
    description: str
    original: str          # the statement changed, as code
    diff: str
    code: str = field(repr=False)  # the whole mutated function
    equivalent: str | None = None  # why, when detected without running
    status: str = "pending"        # killed | survived | timeout | error | equivalent
    seconds: float = 0.0
    detail: str = ""


def _statement_of(nodes, target):
    "The innermost statement holding `target` (for a readable, stable description)."
    stmt = None
    for node, _, _, _ in nodes:
        if isinstance(node, ast.stmt) and node.lineno <= target.lineno and node.end_lineno >= target.end_lineno:
            if stmt is None or (node.lineno, -node.end_lineno) >= (stmt.lineno, -stmt.end_lineno):
                stmt = node
    return stmt


def mutants_of(function: ast.FunctionDef, region: Region) -> list[Mutant]:
    """Every mutant of `function` that changes a node lying inside the solution region."""
    original = ast.unparse(function)
    seen = {ast.dump(function)}
    normal = _normal(function)
    nodes = _walk(function)
    out: list[Mutant] = []
    occurrences: dict[str, int] = {}
    for position, (node, parent, name, index) in enumerate(nodes):
        if not hasattr(node, "lineno") or node.lineno < region.first or node.end_lineno > region.last:
            continue
        for operator, description, make in variants(node, parent, index):
            mutated = copy.deepcopy(function)
            target, t_parent, t_name, t_index = _walk(mutated)[position]
            new = make(target)
            if t_index is None:
                setattr(t_parent, t_name, new)
            else:
                getattr(t_parent, t_name)[t_index] = new
            ast.fix_missing_locations(mutated)
            dump = ast.dump(mutated)
            if dump in seen:
                continue  # no change, or the same code as an earlier mutant
            seen.add(dump)
            try:
                code = ast.unparse(mutated)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # `x is 0` and the like: meant
                    compile(code, "<mutant>", "exec")
            except (SyntaxError, ValueError):
                continue  # e.g. `pass` where a bare name was required
            stmt = _statement_of(nodes, node)
            statement = ast.unparse(stmt).split("\n")[0] if stmt is not None else ""
            signature = f"{region.task}|{operator}|{description}|{statement}"
            occurrences[signature] = occurrences.get(signature, 0) + 1
            key = hashlib.sha1(f"{signature}|{occurrences[signature]}".encode()).hexdigest()[:10]
            diff = "\n".join(difflib.unified_diff(original.split("\n"), code.split("\n"), "reference", "mutant",
                                                  n=1, lineterm=""))
            mutant = Mutant(f"{region.task}#{len(out) + 1}", key, region.task, function.name, node.lineno,
                            operator, description, statement, diff, code)
            if _normal(mutated) == normal:
                mutant.equivalent = "same AST once identities (x*1, x+0, ...) are folded"
                mutant.status = "equivalent"
            out.append(mutant)
    return out


# --------------------------------------------------------------------------------------------
# The module, its tasks, its exported files and graded tests


@dataclass
class Target:
    number: str
    tests: Path
    sources: list[Path]
    points: dict[str, float]
    regions: list[Region]
    exported: dict[str, Path] = field(default_factory=dict)   # function -> package file (relative to ROOT)


def find_module(wanted: str) -> Target:
    from tito.graded import load_points
    from tito.modules import resolve

    module = resolve(ROOT, wanted)
    tests = module.tests_folder(ROOT)
    points = load_points(tests)
    if points is None:
        raise SystemExit(f"module {module.id} is not graded: no {tests / 'points.toml'}")
    regions = [r for source in module.sources if BEGIN in source.read_text(encoding="utf-8")
               for r in solution_regions(source)]
    target = Target(module.number, tests, module.sources, points.tasks, regions)
    for region in regions:
        target.exported[region.function] = _exported_file(region)
    return target


def _exported_file(region: Region) -> Path:
    "The package file nbdev wrote the region's function to (its cell headers name the notebook)."
    stem = region.source.name
    for path in sorted((ROOT / LIB).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if stem in text and re.search(rf"^def {re.escape(region.function)}\(", text, re.M):
            return path.relative_to(ROOT)
    raise SystemExit(f"{region.source.name}: {region.function} is in no file of {LIB}/; run `tito export` first")


def replace_function(text: str, name: str, code: str) -> str:
    "`text` (a module) with its top-level function `name` replaced by `code`."
    tree = ast.parse(text)
    node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = text.split("\n")
    return "\n".join(lines[:first - 1] + code.split("\n") + lines[node.end_lineno:])


def function_node(source: Path, name: str) -> ast.FunctionDef:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)


def _env(lib_parent: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # the mutated package first; tito and the plugin from this checkout
    env["PYTHONPATH"] = os.pathsep.join([str(lib_parent), str(ROOT)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a rewritten file must never meet a stale .pyc
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    env.update(extra or {})
    return env


def _pytest(files: list[str], lib_parent: Path, task: str | None, timeout: float | None,
            collect: Path | None = None) -> tuple[str, float, str]:
    """Run the graded tests of `task` in `files` against the package in `lib_parent`.
    Returns (status, seconds, last lines of output)."""
    # -P: the checkout's own tinytorch/ must not shadow the copy (python -m puts the cwd first)
    command = [sys.executable, "-P", "-m", "pytest", "-q", "-x", "--no-header", "-p", "benchmarks.mutation_select",
               "--hypothesis-seed=0", "-W", "ignore::SyntaxWarning", *files]
    if collect is not None:
        command.append("--collect-only")
    with tempfile.TemporaryDirectory(prefix="mutant-") as scratch:
        env = _env(lib_parent, {"HYPOTHESIS_STORAGE_DIRECTORY": str(Path(scratch) / "hypothesis")})
        if task:
            env["MUTATION_TASK"] = task
        if collect is not None:
            env["MUTATION_COLLECT"] = str(collect)
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            return "timeout", time.perf_counter() - start, f"no result within {timeout:.0f} s"
        seconds = time.perf_counter() - start
    tail = "\n".join((done.stdout + done.stderr).strip().split("\n")[-6:])
    status = {0: "survived", 1: "killed", 5: "no-tests"}.get(done.returncode, "error")
    return status, seconds, tail


def graded_files(target: Target, lib_parent: Path) -> dict[str, list[str]]:
    "Each task's test files (relative to ROOT), from one collection run of the module's tests."
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "collected.json"
        status, _, tail = _pytest([str(target.tests.relative_to(ROOT))], lib_parent, None, 600, collect=listing)
        if not listing.exists():
            raise SystemExit(f"could not collect {target.tests}: {tail}")
        items = json.loads(listing.read_text())
    files: dict[str, list[str]] = {}
    for item in items:
        if item["task"]:
            path = item["nodeid"].split("::")[0]
            files.setdefault(item["task"], [])
            if path not in files[item["task"]]:
                files[item["task"]].append(path)
    return files


# --------------------------------------------------------------------------------------------
# Checking the fast path against nbdev


def nbdev_export(sources: dict[Path, str], lib: Path) -> dict[Path, str]:
    """Export notebook texts (path -> text) with tito's nbdev export; returns package file
    (relative to ROOT) -> text."""
    from tito.export import export_notebook

    out = {}
    with tempfile.TemporaryDirectory(prefix="mutation-export-") as tmp:
        staged = Path(tmp) / LIB
        staged.mkdir()
        for source, text in sources.items():
            copy_path = Path(tmp) / "nb" / source.name
            copy_path.parent.mkdir(exist_ok=True)
            copy_path.write_text(text, encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)  # a mutant's `x is 0`: meant
                export_notebook(copy_path, staged, lib)
        for path in staged.rglob("*.py"):
            out[Path(LIB) / path.relative_to(staged)] = path.read_text(encoding="utf-8")
    return out


def mutated_notebook(region: Region, code: str) -> str:
    "The lesson notebook with the region's whole function replaced by `code` (markers go with it)."
    return replace_function(region.source.read_text(encoding="utf-8"), region.function, code)


def verify_export(target: Target, mutants: list[Mutant]) -> list[str]:
    """Problems found comparing the fast path with nbdev: the unmutated identity rewrite of each
    function, then each of `mutants`, must give the same AST as exporting the notebook."""
    problems = []
    lib = ROOT / LIB
    exported = nbdev_export({s: s.read_text(encoding="utf-8") for s in target.sources}, lib)
    for region in target.regions:
        path = target.exported[region.function]
        committed = (ROOT / path).read_text(encoding="utf-8")
        if ast.dump(ast.parse(committed)) != ast.dump(ast.parse(exported[path])):
            problems.append(f"{path} is not what nbdev exports from the notebooks: run `tito export {target.number}`")
            continue
        same = replace_function(committed, region.function, ast.unparse(function_node(region.source, region.function)))
        if ast.dump(ast.parse(same)) != ast.dump(ast.parse(exported[path])):
            problems.append(f"{region.function}: the unmutated fast path differs from the nbdev export")
    regions = {r.function: r for r in target.regions}
    for mutant in mutants:
        region = regions[mutant.function]
        path = target.exported[region.function]
        fast = replace_function((ROOT / path).read_text(encoding="utf-8"), region.function, mutant.code)
        texts = {s: s.read_text(encoding="utf-8") for s in target.sources}
        texts[region.source] = mutated_notebook(region, mutant.code)
        real = nbdev_export(texts, lib)[path]
        if ast.dump(ast.parse(fast)) != ast.dump(ast.parse(real)):
            problems.append(f"{mutant.id}: the fast path differs from the nbdev export of the mutated notebook")
    return problems


# --------------------------------------------------------------------------------------------
# Running


def load_equivalents(path: Path = EQUIVALENT_FILE) -> dict[str, dict]:
    "Mutant key -> {task, mutant, reason}: survivors reviewed by hand and found equivalent."
    if not path.exists():
        return {}
    import tomllib

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {entry["key"]: entry for entry in data.get("equivalent", [])}


def all_mutants(target: Target, tasks: list[str]) -> list[Mutant]:
    out = []
    for region in target.regions:
        if region.task in tasks:
            found = mutants_of(function_node(region.source, region.function), region)
            for mutant in found:  # ids count per task, across its regions
                mutant.id = f"{region.task}#{sum(m.task == region.task for m in out) + 1}"
                out.append(mutant)
    return out


def run(target: Target, mutants: list[Mutant], jobs: int, timeout: float | None, log=print) -> dict:
    """Baseline each task, then every mutant; returns {task: baseline seconds}."""
    work = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        slots: queue.Queue = queue.Queue()
        for j in range(max(1, jobs)):
            parent = work / f"job{j}"
            shutil.copytree(ROOT / LIB, parent / LIB, ignore=shutil.ignore_patterns("__pycache__"))
            slots.put(parent)
        first = slots.get()
        files = graded_files(target, first)
        slots.put(first)
        tasks = sorted({m.task for m in mutants}, key=list(target.points).index)
        baseline = {}
        for task in tasks:
            if task not in files:
                raise SystemExit(f"task {task} has no graded tests (@pytest.mark.task({task!r}))")
            status, seconds, tail = _pytest(files[task], first, task, 900)
            if status != "survived":
                raise SystemExit(f"the reference fails task {task}'s graded tests:\n{tail}")
            baseline[task] = seconds
            log(f"baseline {task}: {seconds:.1f} s ({', '.join(files[task])})")

        originals = {path: (ROOT / path).read_text(encoding="utf-8") for path in set(target.exported.values())}
        pending = [m for m in mutants if m.status == "pending"]
        done = [0]

        def one(mutant: Mutant) -> None:
            if _STOP.is_set():
                mutant.status = "not-run"
                return
            parent = slots.get()
            path = target.exported[mutant.function]
            try:
                (parent / path).write_text(replace_function(originals[path], mutant.function, mutant.code), encoding="utf-8")
                limit = timeout or max(30.0, 5 * baseline[mutant.task])
                status, seconds, tail = _pytest(files[mutant.task], parent, mutant.task, limit)
                mutant.status, mutant.seconds = status, round(seconds, 2)
                mutant.detail = "" if status == "killed" else tail
            finally:
                (parent / path).write_text(originals[path], encoding="utf-8")
                slots.put(parent)
            done[0] += 1
            log(f"[{done[0]}/{len(pending)}] {mutant.id} {mutant.status} ({mutant.seconds:.1f} s) "
                f"line {mutant.line}: {mutant.description}")

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, pending))
        return baseline
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(target: Target, mutants: list[Mutant], equivalents: dict[str, dict]) -> dict:
    tasks = {}
    for task in target.points:
        mine = [m for m in mutants if m.task == task and m.status != "not-run"]
        if not mine:
            continue
        lost = [m for m in mine if m.status in ("killed", "timeout", "error")]
        survived = [m for m in mine if m.status == "survived"]
        reviewed = [m for m in survived if m.key in equivalents]
        static = [m for m in mine if m.status == "equivalent"]
        behaviour = len(mine) - len(static) - len(reviewed)
        tasks[task] = {"mutants": len(mine), "killed": len(lost), "timeout": sum(m.status == "timeout" for m in mine),
                       "error": sum(m.status == "error" for m in mine), "survived": len(survived),
                       "equivalent_detected": len(static), "equivalent_reviewed": len(reviewed),
                       "behaviour_changing": behaviour,
                       "score": round(len(lost) / behaviour, 4) if behaviour else None}
    lost = sum(t["killed"] for t in tasks.values())
    behaviour = sum(t["behaviour_changing"] for t in tasks.values())
    return {"tasks": tasks, "killed": lost, "behaviour_changing": behaviour,
            "score": round(lost / behaviour, 4) if behaviour else None}


def render(result: dict) -> str:
    meta, summary = result["meta"], result["summary"]
    lines = [f"# Mutation testing of module {meta['module']}'s graded solutions", "",
             f"- **Command:** `{meta['command']}`",
             f"- **Code:** commit `{meta['commit']}`; {meta['mutants']} mutants run of {meta['generated']} generated"
             + (f" (sample of {meta['sample']}, seed {meta['seed']})" if meta.get("sample") else ""),
             f"- **Time:** {meta['seconds']:.0f} s with {meta['jobs']} job(s); per-mutant limit: "
             + (f"{meta['timeout']:.0f} s" if meta.get("timeout") else "5x the task's baseline, at least 30 s"),
             *(["- **Interrupted:** the mutants not run are left out of every count."] if meta.get("interrupted") else []),
             "- **Killed** = a graded test of the task fails, hangs or cannot import: the wrong answer loses points. "
             "Score = killed / mutants that change behaviour (all minus the equivalent ones).", "",
             "| task | mutants | lose points | of which hang | survived | equivalent (detected / reviewed) | score |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for task, row in summary["tasks"].items():
        score = "n/a" if row["score"] is None else f"{100 * row['score']:.1f}%"
        lines.append(f"| {task} | {row['mutants']} | {row['killed']} | {row['timeout']} | {row['survived']} | "
                     f"{row['equivalent_detected']} / {row['equivalent_reviewed']} | {score} |")
    total = "n/a" if summary["score"] is None else f"{100 * summary['score']:.1f}%"
    lines += [f"| **all** | {sum(r['mutants'] for r in summary['tasks'].values())} | {summary['killed']} | "
              f"{sum(r['timeout'] for r in summary['tasks'].values())} | "
              f"{sum(r['survived'] for r in summary['tasks'].values())} | "
              f"{sum(r['equivalent_detected'] for r in summary['tasks'].values())} / "
              f"{sum(r['equivalent_reviewed'] for r in summary['tasks'].values())} | **{total}** |", ""]
    equivalents = result["equivalents"]
    open_ = [m for m in result["mutants"] if m["status"] == "survived" and m["key"] not in equivalents]
    reviewed = [m for m in result["mutants"] if m["status"] == "survived" and m["key"] in equivalents]
    for title, group, why in (("Survivors to review (no test kills them)", open_, False),
                              ("Survivors reviewed as equivalent", reviewed, True),
                              ("Detected equivalent (not run)", [m for m in result["mutants"] if m["status"] == "equivalent"], False)):
        lines += [f"## {title}: {len(group)}", ""]
        for m in group:
            reason = equivalents[m["key"]]["reason"] if why else (m.get("equivalent") or "")
            lines += [f"### {m['id']} `{m['key']}` ({m['function']}, line {m['line']}): {m['operator']}, {m['description']}",
                      ""] + ([f"Why equivalent: {reason}", ""] if reason else []) + ["```diff", m["diff"], "```", ""]
    return "\n".join(lines)


def _write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out / "mutation.md").write_text(render(result), encoding="utf-8")
    for task, row in result["summary"]["tasks"].items():
        score = "n/a" if row["score"] is None else f"{100 * row['score']:.1f}%"
        print(f"{task:24} {row['mutants']:4} mutants  {row['killed']:4} killed  {row['survived']:3} survived  "
              f"{row['equivalent_detected'] + row['equivalent_reviewed']:3} equivalent  score {score}")


def rescore(target: Target, out: Path) -> int:
    "Score an earlier run again with the reviewed equivalents as they are now."
    result = json.loads((out / "mutation.json").read_text(encoding="utf-8"))
    equivalents = load_equivalents()
    fields = set(Mutant.__dataclass_fields__)
    mutants = [Mutant(**{k: v for k, v in m.items() if k in fields and k != "code"}, code="") for m in result["mutants"]]
    result["summary"] = summarize(target, mutants, equivalents)
    result["equivalents"] = {k: v for k, v in equivalents.items() if any(m.key == k for m in mutants)}
    _write(result, out)
    return 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutation", description=__doc__.split("\n")[0])
    parser.add_argument("module", help="module number or name, e.g. 18")
    parser.add_argument("--tasks", help="comma-separated task ids (default: every task of points.toml)")
    parser.add_argument("--sample", type=int, help="run only N mutants drawn at random (with --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 5x the task's baseline, >= 30)")
    parser.add_argument("--out", default="bench_results/scratch/mutation", help="folder for mutation.md/.json")
    parser.add_argument("--verify-export", type=int, default=0, metavar="K",
                        help="also check the fast path against nbdev for K of the mutants (0: unmutated only)")
    parser.add_argument("--mutants", help="comma-separated mutant ids or keys: run only these")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--rescore", metavar="DIR", help="re-score DIR/mutation.json with the current "
                        "mutation_equivalent.toml (after a review) and rewrite its report; runs nothing")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _STOP.set())  # stop cleanly: temp copies removed, report of what ran
    start = time.perf_counter()
    target = find_module(args.module)
    if args.rescore:
        return rescore(target, Path(args.rescore))
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else list(target.points)
    unknown = [t for t in tasks if t not in target.points]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; module {target.number} has: {', '.join(target.points)}")
    missing = [t for t in tasks if t not in {r.task for r in target.regions}]
    if missing:
        raise SystemExit(f"task(s) {', '.join(missing)} of points.toml have no solution region in the notebooks")
    mutants = all_mutants(target, tasks)
    generated = len(mutants)
    equivalents = load_equivalents()
    if args.sample:
        # drawn from the mutants that change behaviour: a sample should all be killed
        runnable = [m for m in mutants if m.status == "pending" and m.key not in equivalents]
        chosen = {m.id for m in random.Random(args.seed).sample(runnable, min(args.sample, len(runnable)))}
        mutants = [m for m in mutants if m.id in chosen]
    if args.mutants:
        wanted = {w.strip() for w in args.mutants.split(",")}
        mutants = [m for m in mutants if m.id in wanted or m.key in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.id:28} {m.key} line {m.line:5} {m.operator:11} {m.description:32} {m.original[:60]}")
        print(f"{len(mutants)} mutants")
        return 0
    problems = verify_export(target, [m for m in mutants if m.status == "pending"][:args.verify_export])
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"fast path checked against nbdev: unmutated and {min(args.verify_export, len(mutants))} mutant(s)")
    baseline = run(target, mutants, args.jobs, args.timeout)
    result = {"meta": {"module": target.number, "command": " ".join(["python -m benchmarks.mutation", *(argv or sys.argv[1:])]),
                       "commit": _commit(), "generated": generated, "mutants": len(mutants), "sample": args.sample,
                       "seed": args.seed if args.sample else None, "jobs": args.jobs, "timeout": args.timeout,
                       "seconds": round(time.perf_counter() - start, 1), "baseline_seconds": baseline,
                       "interrupted": _STOP.is_set()},
              "summary": summarize(target, mutants, equivalents),
              "equivalents": {k: v for k, v in equivalents.items() if any(m.key == k for m in mutants)},
              "mutants": [{k: v for k, v in asdict(m).items() if k != "code"} for m in mutants]}  # diffs, not whole functions
    out = Path(args.out)
    _write(result, out)
    print(f"report: {out / 'mutation.md'} ({result['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
