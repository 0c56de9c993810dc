"""`tito grade self-check`: prove that each task's tests discriminate, and `tito grade list`.

Every graded test runs with only its own task's code from the submission (runner.py), so two
gradings cover every mix of solved and stubbed tasks: the reference solution must earn each
task's points and the released stub (its tests really run) must earn none of them. A task whose
tests pass on the stub, or fail on the solution, or a test skipped on the solution, fails the
check. The notebook's nbgrader points must agree with points.toml.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..graded import _nbgrader, release_source, solution_tasks, stub_line
from .kit import Kit, build_kit
from .submission import grade_submission


def mixed_source(source: Path, stubbed: set[str], answer: str | None = None) -> str:
    """The reference source with the tasks in `stubbed` left as the released stub, or, with
    `answer`, with that line (e.g. a wrong `return None`) where each stub raises."""
    import jupytext

    solution = jupytext.read(source, fmt="py:percent")
    stub = jupytext.reads(release_source(source, stub=True), fmt="py:percent")
    for mine, released in zip(solution.cells, stub.cells):
        meta = _nbgrader(mine)
        task = meta.get("grade_id")
        if meta.get("solution") and task in stubbed:
            mine.source = released.source if answer is None else released.source.replace(stub_line(task), answer)
    return jupytext.writes(solution, fmt="py:percent")


def notebook_points(source: Path) -> dict[str, float]:
    """Points of each task's graded test cells (grade_id `<task>-test`) as nbgrader reads them."""
    import jupytext

    points: dict[str, float] = {}
    for cell in jupytext.read(source, fmt="py:percent").cells:
        meta = _nbgrader(cell)
        grade_id = str(meta.get("grade_id", ""))
        if meta.get("grade") and grade_id.endswith("-test"):
            task = grade_id[: -len("-test")]
            points[task] = points.get(task, 0.0) + float(meta.get("points", 0))
    return points


def self_check(root: Path, module, quiet: bool = False) -> bool:
    problems: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tito-selfcheck-") as tmp:
        kit = build_kit(root, module, Path(tmp) / "kit")
        tasks, total = kit.manifest["tasks"], kit.manifest["total"]
        results = {}
        for label, stubbed in (("solution", set()), ("stub", set(tasks))):
            path = Path(tmp) / label / module.source.name
            path.parent.mkdir()
            path.write_text(mixed_source(module.source, stubbed), encoding="utf-8")
            results[label] = grade_submission(kit, path, label, trust_stubs=False)
    solution, stub = results["solution"], results["stub"]
    for label, want in (("solution", lambda p: p), ("stub", lambda p: 0.0)):
        got = results[label]
        if got["extra_data"]["problem"]:
            problems.append(f"{label}: {got['extra_data']['problem']}")
        for task, points in tasks.items():
            if abs(got["extra_data"]["tasks"][task] - want(points)) > 0.011:
                for test in got["extra_data"]["tests"]:
                    if test["task"] == task and test["passed"] == (label == "stub") and not test["skipped"]:
                        problems.append(f"the released stub passes {task}: {test['name']}: this test does not "
                                        "discriminate" if label == "stub" else
                                        f"the solution fails {task}: {test['name']}: {test['message'][:200]}")
    for name in solution["extra_data"]["skipped"]:
        problems.append(f"skipped on the solution, so unchecked (and worth 0 to every submission): {name}")
    notebook_tasks = set(solution_tasks(module.source))
    problems += [f"task {t!r} has points but no solution cell with grade_id {t!r}" for t in tasks if t not in notebook_tasks]
    declared = notebook_points(module.source)
    for task in sorted(set(declared) | set(tasks)):
        if task in declared and abs(declared[task] - tasks.get(task, 0)) > 1e-9:
            problems.append(f"task {task!r}: points.toml gives {tasks.get(task, 0):g} points, the notebook's nbgrader "
                            f"test cell {task}-test gives {declared[task]:g}")
    if not quiet:
        print(f"{'PASS' if not problems else 'FAIL'}  {module.id}: solution {solution['score']:g}/{total:g}, stub "
              f"{stub['score']:g}/{total:g} on {len(kit.manifest['tests'])} graded tests, each of {len(tasks)} tasks "
              f"graded alone ({time.monotonic() - started:.0f}s)")
        for problem in problems:
            print(f"      x {problem}")
    return not problems


def print_listing(kit: Kit) -> None:
    manifest = kit.manifest
    print(f"{manifest['module']}: {len(manifest['tests'])} graded tests, {manifest['total']:g} points")
    width = max(len(t) for t in manifest["tasks"])
    for task, points in manifest["tasks"].items():
        tests = [t for t in manifest["tests"] if t["task"] == task]
        hidden = sum(t["hidden"] for t in tests)
        print(f"  {task:<{width}}  {points:>5g} pts  {len(tests)} test(s){f', {hidden} hidden' if hidden else ''}")
    limits = manifest["limits"]
    print(f"limits: {limits['test_timeout']:g} s per test, {limits['total_timeout']:g} s per submission, "
          f"{limits['memory_mb']:g} MB")
