"""Grade one submission: find its notebook, export it into a sandbox, run the tests, score.

The rule: a task's score depends on that task's code only. Each graded test runs with its own
task's functions from the student's process and every other task's from the reference (see
runner.py), so a wrong or unfinished earlier exercise costs only its own points. A task left as
the released stub scores 0 without running (the self-check proves its tests fail). A task whose
cell does not compile, or whose code raises or hangs while the module is imported, is replaced
by its released stub and scores 0, and the rest is graded: such a hang costs one time limit.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import TitoError
from ..graded import DEFAULT_LIMITS, normalized, solution_cells
from .feedback import exported_cell, locate, results_json
from .kit import LIB, Kit, clean_env, run_runner

NOBODY = 65534
IMPORT_SLACK = 10.0  # seconds beyond a test's limit for importing numpy and the module on a busy machine


def _code_cells(path: Path) -> list[str] | None:
    """A .py (percent format) or .ipynb's code cells, compared across the two formats."""
    try:
        if path.stat().st_size > 5 << 20:
            return None
        import jupytext

        nb = jupytext.read(path) if path.suffix == ".ipynb" else jupytext.read(path, fmt="py:percent")
    except Exception:  # noqa: BLE001 - an unreadable file is not the same as another
        return None
    code = ["\n".join(line.rstrip() for line in c.source.strip().split("\n")) for c in nb.cells if c.cell_type == "code"]
    return [c for c in code if c]


def find_source(submission: Path, module_name: str) -> tuple[Path, list[str]]:
    """The file to grade in a submission and the candidates it ignored. A file is graded as given;
    in a folder, `<name>_dev.py`/`.ipynb` anywhere (or the only .py/.ipynb, or the only `*_dev`
    file). A .py and an .ipynb must hold the same code: two different versions are refused."""
    if submission.is_file():
        if submission.suffix not in (".py", ".ipynb"):
            raise TitoError(f"{submission.name}: expected a .py or .ipynb file")
        return submission, []
    candidates = [p for p in sorted(submission.rglob("*")) if p.is_file() and p.suffix in (".py", ".ipynb")
                  and not any(part.startswith((".", "__MACOSX", "__pycache__")) for part in p.relative_to(submission).parts)]
    if not candidates:
        raise TitoError("the submission holds no .py or .ipynb file")
    shown = [p.relative_to(submission).as_posix() for p in candidates]
    named = [p for p in candidates if p.stem == f"{module_name}_dev"]
    if not named:
        dev = [p for p in candidates if p.stem.endswith("_dev")]
        named = [candidates[0]] if len(candidates) == 1 else dev
    if not named:
        raise TitoError(f"cannot tell which file to grade ({', '.join(shown[:5])}); name it {module_name}_dev.py "
                        f"or {module_name}_dev.ipynb")
    pys, notebooks = [p for p in named if p.suffix == ".py"], [p for p in named if p.suffix == ".ipynb"]
    if len(pys) > 1 or len(notebooks) > 1:
        raise TitoError(f"the submission holds several copies of the module "
                        f"({', '.join(p.relative_to(submission).as_posix() for p in named)}); submit one")
    chosen = pys[0] if pys else notebooks[0]
    if pys and notebooks:
        mine, other = _code_cells(pys[0]), _code_cells(notebooks[0])
        if mine is None or mine != other:
            raise TitoError(f"the submission holds two different versions of the module "
                            f"({', '.join(p.relative_to(submission).as_posix() for p in named)}); submit only the one "
                            "you want graded")
    return chosen, [p.relative_to(submission).as_posix() for p in candidates if p != chosen]


def task_cells(nb, cells: dict) -> dict[str, list]:
    """Each task's cells: by nbgrader grade_id, or else the code cells defining the same functions."""
    from ..graded import defined_names

    found = {t: c for t, c in solution_cells(nb).items() if t in cells}
    taken = {id(c) for group in found.values() for c in group}
    code = [c for c in nb.cells if c.cell_type == "code"]
    for task, ref in cells.items():
        if task in found:
            continue
        mine = []
        for names in ref["names"]:
            match = next((c for c in code if names and id(c) not in taken and set(names) <= set(defined_names(c.source))), None)
            if match is None:
                break
            mine.append(match)
            taken.add(id(match))
        if mine and len(mine) == len(ref["names"]):
            found[task] = mine
    return found


def export(source: Path, kit: Kit, lib_dir: Path, stubbed: dict[str, str]) -> tuple[dict, dict]:
    """Export `source` into `lib_dir`, with the tasks in `stubbed` (and every task whose cell does
    not compile, added to it) as the released stub; returns (kinds, cells found by task)."""
    import jupytext

    from ..export import export_notebook

    if source.stat().st_size > 5 << 20:
        raise TitoError(f"{source.name} is larger than 5 MB")
    try:
        nb = jupytext.read(source) if source.suffix == ".ipynb" else jupytext.read(source, fmt="py:percent")
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's problem
        raise TitoError(f"{source.name} cannot be read as a notebook ({exc})") from None
    ref = kit.manifest["cells"]
    found = task_cells(nb, ref)
    kinds = {}
    for task in kit.manifest["tasks"]:
        mine = [normalized(c.source) for c in found.get(task, [])]
        stub = [normalized(s) for s in ref[task]["stub"]]
        kinds[task] = "missing" if not mine else "stub" if mine == stub else "attempted"
        for cell in found.get(task, []):
            try:
                compile("\n".join(l for l in cell.source.split("\n") if not l.lstrip().startswith(("%", "!"))),
                        task, "exec")
            except (SyntaxError, ValueError) as exc:
                stubbed.setdefault(task, f"task {task} does not compile ({type(exc).__name__}: {exc.msg if hasattr(exc, 'msg') else exc}); "
                                         "graded 0, the rest without it")
        if task in stubbed and len(found.get(task, [])) == len(ref[task]["stub"]):
            for cell, stub_source in zip(found[task], ref[task]["stub"]):
                cell.source = stub_source
    with tempfile.TemporaryDirectory(prefix="tito-export-") as tmp:
        text = Path(tmp) / (source.stem + ".py")
        text.write_text(jupytext.writes(nb, fmt="py:percent"), encoding="utf-8")
        staged = Path(tmp) / LIB
        staged.mkdir()
        try:
            export_notebook(text, staged, lib_dir)
        except TitoError as err:
            raise TitoError(str(err).replace(str(text), source.name)) from None
        produced = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.py"))
        targets = kit.manifest["export_targets"]
        if produced != sorted(targets):
            raise TitoError(f"it exports {', '.join(produced) or 'nothing'}; expected {', '.join(targets)} "
                            "(check its '#| default_exp' and '#| export' lines)")
        for relative in produced:
            shutil.copyfile(staged / relative, lib_dir / relative)
    return kinds, found


def _task_at(frames: list[str], lib_dir: Path, found: dict) -> str | None:
    """The task whose cell holds the deepest of `frames` (basename:line in the exported files)."""
    files: dict = {}
    for place in reversed(frames):
        chunk = [text.strip() for text in exported_cell(lib_dir, place, files)]
        for size in (len(chunk), 1) if chunk else ():  # the cell up to the line, or else the line alone
            for task, cells in found.items():
                for cell in cells:
                    mine = [text.strip() for text in cell.source.split("\n")]
                    if any(mine[i:i + size] == chunk[-size:] for i in range(len(mine) - size + 1)):
                        return task
    return None


def _sandbox(kit: Kit) -> Path:
    sandbox = Path(tempfile.mkdtemp(prefix="tito-grade-"))
    shutil.copytree(kit.folder / "public", sandbox / "pkg")
    for name in ("student.py", "wire.py"):
        shutil.copyfile(kit.folder / name, sandbox / name)
    for folder in ("work/tmp", "runner"):
        (sandbox / folder).mkdir(parents=True)
    if os.geteuid() == 0:  # the student's user reads the sandbox (the kit is root's) and writes its work folder
        for folder, _, files in os.walk(sandbox):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        os.chmod(sandbox / "runner", 0o700)
        for path in (sandbox / "work", sandbox / "work" / "tmp"):
            os.chown(path, NOBODY, NOBODY)
    return sandbox


def grade_submission(kit: Kit, submission: Path, student: str | None = None, limits: dict | None = None,
                     landlock: bool = True, keep: bool = False, trust_stubs: bool = True) -> dict:
    """Grade one submission; returns Gradescope's results.json (never raises for its content)."""
    started = time.monotonic()
    manifest = kit.manifest
    limits = {**DEFAULT_LIMITS, **manifest.get("limits", {}), **(limits or {})}
    deadline = started + float(limits["total_timeout"])
    verdicts, flags, fatal, kinds, outputs, source_name, ignored, source = {}, [], "", {}, {}, "", [], None
    sandbox = _sandbox(kit)
    try:
        source, ignored = find_source(submission, manifest["module_name"])
        source_name = source.name
        stubbed: dict[str, str] = {}
        while not fatal:
            lib_dir = sandbox / "pkg" / LIB
            kinds, found = export(source, kit, lib_dir, stubbed)
            skip = {t for t, kind in kinds.items() if (kind == "stub" and trust_stubs) or t in stubbed}
            nodeids = [t["nodeid"] for t in manifest["tests"] if t["task"] not in skip]
            event = _run(kit, sandbox, nodeids, limits, landlock, deadline, verdicts, outputs)
            if event is None:
                break
            if event["event"] == "problem":
                fatal = event["message"]
                break
            if event["event"] == "import_hang":
                frames = re.findall(r'File "[^"]*?([^"/]+)", line (\d+)', event["output"])
                frames = [f"{name}:{line}" for name, line in frames]
                what = f"timed out while importing (limit {limits['test_timeout'] + IMPORT_SLACK:g} s)"
            else:
                frames, what = event["frames"], f"raised {event['message'][:300]} while it was imported"
            task = _task_at(frames, lib_dir, found)
            if task is None or task in stubbed:
                where = f" at {frames[-1]}" if frames else ""
                fatal = f"your code {what}{where}"
                break
            stubbed[task] = f"task {task}: your code {what}; graded 0, the rest without it"
        flags += list(stubbed.values())
        missing = [t for t, kind in kinds.items() if kind == "missing"]
        if missing:
            flags.append(f"no cell of task(s) {', '.join(missing)} was found (by nbgrader grade_id or the functions it "
                         "defines)")
        for task in stubbed:
            kinds[task] = "broken"
        locate(verdicts, sandbox / "pkg" / LIB, source)
    except TitoError as err:
        fatal = str(err)
    finally:
        if not keep:
            shutil.rmtree(sandbox, ignore_errors=True)
    results = results_json(manifest, verdicts, flags, fatal, kinds, outputs,
                           source, trust_stubs)
    results["execution_time"] = round(time.monotonic() - started, 2)
    if ignored:
        first, _, rest = results["output"].partition("\n")
        results["output"] = f"{first} (ignored: {', '.join(ignored)})\n{rest}"
    results["extra_data"].update(student=student or submission.stem, submission=source_name, ignored=ignored,
                                 sandbox=outputs.get("(sandbox)", ""), kept=str(sandbox) if keep else "")
    return results


def _run(kit, sandbox, nodeids, limits, landlock, deadline, verdicts, outputs) -> dict | None:
    """Run the tests `nodeids`; fill `verdicts`; return an import failure event, or None."""
    if not nodeids:
        return None
    manifest = kit.manifest
    work = sandbox / "work"
    config = {
        "mode": "grade", "tests": str(kit.folder / "tests" / manifest["module"]), "ini": str(kit.folder / "pytest.ini"),
        "root": str(kit.folder), "plugins": manifest.get("plugins", []), "limits": limits, "sandbox": str(sandbox),
        "nodeids": [str(kit.folder / n) for n in nodeids], "task_names": manifest["task_names"],
        "env": clean_env(HOME=str(work), TMPDIR=str(work / "tmp")),
        "student": {"sandbox": str(sandbox), "pkg": str(sandbox / "pkg"), "work": str(work), "landlock": landlock,
                    "student_files": [str(sandbox / "pkg" / LIB / t) for t in manifest["export_targets"]],
                    "modules": sorted({m for names in manifest["task_names"].values() for m, _ in names}),
                    "tasks": manifest["task_names"], "memory_mb": int(limits["memory_mb"]),
                    "cpu_seconds": int(limits["total_timeout"]) + 10, "import_timeout": float(limits["test_timeout"]) + IMPORT_SLACK,
                    "user": NOBODY},
    }
    # Closed here, not when garbage collected: a Ctrl-C that lands while the runner is being stopped
    # must reach the user, and an exception in a generator finalized by the collector is only printed.
    events = run_runner(kit.folder, config, sandbox / "runner", max(1.0, deadline - time.monotonic()))
    with contextlib.closing(events):
        return _collect(events, verdicts, outputs)


def _collect(events, verdicts, outputs) -> dict | None:
    for event in events:
        kind = event["event"]
        if kind in ("import_error", "import_hang"):
            return event
        if kind == "imported":
            outputs["(sandbox)"] = event.get("sandbox", "")
            if event.get("output_bytes"):
                outputs["(import)"] = (event["output"], event["output_bytes"])
        if kind == "test":
            verdicts[event["nodeid"]] = event
            if event.get("output_bytes"):
                outputs[event["nodeid"]] = (event["output"], event["output_bytes"])
        if kind == "timeout":
            return {"event": "problem", "message": "the grading time limit ran out"}
        if kind == "runner_failed":
            return {"event": "problem", "message": f"the test runner failed: {event['message']}"}
    return None
