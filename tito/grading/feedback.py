"""Feedback a student can act on: Gradescope's results.json, one row per task (and per task's
hidden tests), each failure in a few lines at a line of the student's own file or of a visible
test. Hidden tests show only passed or failed. What the student's code printed is shown cut,
with a note saying so: printing never costs points. Nothing here depends on time or paths, so a
regrade gives the same feedback."""
from __future__ import annotations

import json
import re
from pathlib import Path

MAX_FAILURE_LINES = 4
SHOWN_OUTPUT = 300  # characters of printed output shown per task
_ADDRESS = re.compile(r"<(function|built-in function|bound method|class|module)? ?([\w.<>]+)(?: of [^>]*)? at 0x[0-9a-fA-F]+>")


def _shorten_arrays(text: str, longest: int = 60) -> str:
    """`array([[...], ...])` reprs longer than `longest` characters become `array([...])`."""
    out, start = [], 0
    while (at := text.find("array(", start)) >= 0:
        depth, end = 0, len(text)
        for i in range(at + 5, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        out.append(text[start:at] + (text[at:end] if end - at <= longest else "array([...])"))
        start = end
    return "".join(out) + text[start:]


def clean_message(message: str) -> str:
    """A failure in at most a few short lines: no memory addresses, no long array dumps."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", _ADDRESS.sub(lambda m: m.group(2), message))
    lines = [line.rstrip() for line in _shorten_arrays(text.replace("\\n", "\n")).splitlines() if line.strip()]
    kept = [line if len(line) <= 160 else line[:150] + " ... (cut)" for line in lines[:MAX_FAILURE_LINES]]
    return "\n".join(kept + (["..."] if len(lines) > MAX_FAILURE_LINES else []))


def _student_blocks(source: Path) -> list[tuple[str, list[str]]]:
    """The submission as (label, lines) blocks: the whole .py, or each code cell of an .ipynb."""
    try:
        if source.suffix == ".ipynb":
            cells = json.loads(source.read_text(encoding="utf-8")).get("cells", [])
            return [(f"{source.name}, cell {n}, line ", ("".join(c["source"]) if isinstance(c.get("source"), list)
                                                       else str(c.get("source", ""))).split("\n"))
                    for n, c in enumerate(cells, 1) if c.get("cell_type") == "code"]
        return [(f"{source.name}:", source.read_text(encoding="utf-8").split("\n"))]
    except (OSError, ValueError, AttributeError, KeyError):
        return []


def exported_cell(lib_dir: Path, place: str, files: dict) -> list[str]:
    """The lines of the exported cell holding `place` (basename:line), up to that line."""
    name, _, line = place.rpartition(":")
    path = next(iter(lib_dir.rglob(name)), None) if name else None
    if path is None or not line.isdigit():
        return []
    exported = files.setdefault(path, path.read_text(encoding="utf-8").split("\n"))
    start = int(line) - 1
    if not 0 <= start < len(exported):
        return []
    while start > 0 and not exported[start - 1].startswith("# %% "):
        start -= 1  # nbdev writes a `# %% ` line above each exported cell
    return exported[start:int(line)]


def locate(verdicts: dict, lib_dir: Path, source: Path) -> None:
    """Name each failure's place: the deepest frame in the student's code, as a line of their
    file, or else the line of the test that checked it."""
    blocks, files = None, {}
    for verdict in verdicts.values():
        where, found = verdict.pop("where", {}) or {}, ""
        for place in reversed(where.get("student", [])):
            chunk = exported_cell(lib_dir, place, files)
            if not chunk:
                continue
            blocks = _student_blocks(source) if blocks is None else blocks
            for label, lines in blocks:
                at = next((i for i in range(len(lines) - len(chunk) + 1) if lines[i:i + len(chunk)] == chunk), None)
                if at is not None:
                    found = f"in your code at {label}{at + len(chunk)}"
                    break
            if found:
                break
        if not found and "test" in where:
            found = f"checked at {where['test']}"
        verdict["location"] = found


def _output_note(printed: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in printed)
    text = "".join(t for t, _ in printed)
    shown = text[:SHOWN_OUTPUT]
    cut = total > len(shown.encode("utf-8", "replace"))
    note = f"your code printed {total:,} bytes (printing is never graded" + (
        f"; cut to the first {len(shown)} characters)" if cut else ")")
    return note + ":\n    " + shown.rstrip().replace("\n", "\n    ")


def _row(task: str, tests: list[dict], points: float, hidden: bool, number: int, printed: list) -> dict:
    passed = sum(t["passed"] for t in tests)
    if hidden:  # only pass or fail: what the hidden tests check stays hidden
        output = "passed" if passed == len(tests) else "failed"
    elif passed == len(tests):
        output = f"passed ({passed}/{len(tests)} checks)"
    else:
        lines = [f"{passed}/{len(tests)} checks passed; failing:"]
        failures: dict[tuple[str, str], list[str]] = {}  # cases of one test that fail alike: one line
        for test in tests:
            if not test["passed"]:
                base, _, case = test["name"].partition("[")
                failures.setdefault((base, test["message"]), []).append(case.rstrip("]"))
        for (base, text), cases in failures.items():
            lines.append(f"- {base}[{', '.join(cases)}]: {text}" if any(cases) else f"- {base}: {text}")
        output = "\n".join(lines)
    if printed and not hidden:
        output += "\n" + _output_note(printed)
    return {"name": f"{task} (hidden tests)" if hidden else task, "number": number,
            "score": round(points * passed / len(tests), 2), "max_score": round(points, 2),
            "status": "passed" if passed == len(tests) else "failed", "output": output,
            "visibility": "after_published" if hidden else "visible", "tags": [task]}


def results_json(manifest: dict, verdicts: dict, flags: list, fatal: str, kinds: dict, outputs: dict,
                 source: Path | None, trust_stubs: bool = True) -> dict:
    by_task: dict[str, list[dict]] = {task: [] for task in manifest["tasks"]}
    per_test, skipped = [], []
    for test in manifest["tests"]:
        task, nodeid = test["task"], test["nodeid"]
        verdict = verdicts.get(nodeid)
        if verdict is not None:
            message = "" if verdict["passed"] else clean_message(verdict["message"] or "failed").replace("\n", "\n    ")
            if verdict.get("location") and not verdict["passed"]:
                message += f" [{verdict['location']}]"
        elif kinds.get(task) == "stub" and trust_stubs:
            message = f"not started: task {task} is still the released stub"
        elif kinds.get(task) == "broken":
            message = f"not run: task {task} was replaced by the released stub (see the notes)"
        else:
            message = "not run (see the problem above)" if fatal else "not run"
        passed = bool(verdict and verdict["passed"])
        if verdict and verdict.get("skipped"):
            skipped.append(f"{task}: {nodeid.split('/')[-1]} ({clean_message(verdict['message'])[:200]})")
        entry = {"name": nodeid.split("/")[-1], "nodeid": nodeid, "passed": passed, "hidden": test["hidden"],
                 "message": message, "skipped": bool(verdict and verdict.get("skipped"))}
        by_task[task].append(entry)
        per_test.append({**entry, "task": task})
    rows, task_scores, visible_score, visible_max = [], {}, 0.0, 0.0
    for task, points in manifest["tasks"].items():
        tests = by_task[task]
        shown, hidden = [t for t in tests if not t["hidden"]], [t for t in tests if t["hidden"]]
        printed = [outputs[t["nodeid"]] for t in shown if t["nodeid"] in outputs]
        shown_points = round(points * len(shown) / len(tests), 2) if hidden else points
        if shown:
            rows.append(_row(task, shown, shown_points, False, len(rows) + 1, printed))
            visible_score, visible_max = visible_score + rows[-1]["score"], visible_max + shown_points
            if kinds.get(task) == "stub" and trust_stubs:
                rows[-1]["output"] = "not started: still the released stub"
        if hidden:
            rows.append(_row(task, hidden, points - shown_points, True, len(rows) + 1, []))
        task_scores[task] = round(sum(r["score"] for r in rows if r["tags"] == [task]), 2)
    score = round(sum(task_scores.values()), 2)
    lines = [f"{manifest['module']}: {score:g} / {manifest['total']:g} points"]
    if any(t["hidden"] for t in manifest["tests"]):
        lines = [f"{manifest['module']}: {round(visible_score, 2):g} / {round(visible_max, 2):g} points on the visible "
                 f"tests; the hidden tests' {round(manifest['total'] - visible_max, 2):g} points are shown when grades "
                 "are published"]
    if source is not None:
        lines.insert(0, f"graded file: {source.name}")
    if fatal:
        lines.append(f"problem: {fatal}")
    lines += [f"note: {flag}" for flag in flags]
    if "(import)" in outputs:
        lines.append("while it was imported, " + _output_note([outputs["(import)"]]))
    return {"score": score, "max_score": manifest["total"], "execution_time": 0.0, "output": "\n".join(lines),
            "visibility": "visible", "stdout_visibility": "hidden", "tests": rows,
            "extra_data": {"module": manifest["module"], "tasks": task_scores, "flags": flags, "problem": fatal,
                           "skipped": skipped, "kinds": kinds, "tests": per_test}}


def print_results(results: dict) -> None:
    """One line per task, in exercise order, with each failing task's failures under it."""
    extra = results["extra_data"]
    print(f"{extra.get('student', '')}  {extra.get('submission', '')}  ({results['execution_time']:.1f}s, sandbox: "
          f"{extra.get('sandbox') or 'not started'})")
    width = max([len(r["name"]) for r in results["tests"]] + [10])
    for row in results["tests"]:
        hidden = " (hidden)" if row["visibility"] != "visible" else ""
        print(f"  {'ok  ' if row['status'] == 'passed' else 'FAIL'} {row['name']:<{width}} {row['score']:>5g} / "
              f"{row['max_score']:<5g}{hidden}")
        if row["status"] != "passed":
            for line in row["output"].splitlines()[1:] or row["output"].splitlines()[:1]:
                print(f"         {line[:200]}")
    for line in results["output"].splitlines():
        if line.startswith(("problem:", "note:")):
            print(f"  {line[:300]}")
    print(f"  total: {results['score']:g} / {results['max_score']:g}")
