"""`python -m benchmarks.grading`: grade a realistic class with `tito grade DIR --jobs 2`, check every
score, and time it.

The class is what an instructor meets: solutions with one exercise left as the stub, solutions
with one exercise answered wrongly (its stub line replaced by `return None`), and stubs with one
to three exercises solved. Each submission's exact score is known (the points of the tasks it
solved), so the run reports how many scored exactly what they earned, the seconds per
submission, and what a class of 300 would take. `--code DIR` grades with another checkout's
tito (e.g. a `git worktree` of an older commit) to compare before and after in one run.
A benchmark, not a test: its timings depend on the machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tito import ONE_BLAS_THREAD

ROOT = Path(__file__).resolve().parent.parent
MODULE = "18_compression"


def make_class(folder: Path, size: int, seed: int) -> dict[str, dict]:
    """Write `size` submissions into `folder`; what each task of each one earns (None: a wrong
    answer, which may pass some of its task's checks but not all)."""
    from tito.grade import mixed_source
    from tito.graded import load_points
    from tito.modules import resolve

    module = resolve(ROOT, MODULE)
    points = load_points(module.tests_folder(ROOT)).tasks
    tasks = list(points)
    rng = random.Random(seed)
    expected = {}
    folder.mkdir(parents=True)
    for number in range(size):
        kind = ("one stub", "one wrong", "few solved")[number % 3]
        wrong = None
        if kind == "few solved":
            solved = set(rng.sample(tasks, rng.randint(1, 3)))
            text = mixed_source(module.source, set(tasks) - solved)
        else:
            task = rng.choice(tasks)
            solved = set(tasks) - {task}
            if kind == "one stub":
                text = mixed_source(module.source, {task})
            else:
                text, wrong = mixed_source(module.source, {task}, answer="return None  # a wrong answer"), task
        name = f"s{number:02d}_{kind.replace(' ', '_')}_{wrong or ''}".rstrip("_")
        (folder / f"{name}.py").write_text(text, encoding="utf-8")
        expected[name] = {t: None if t == wrong else points[t] if t in solved else 0.0 for t in tasks}
    return expected


def scored_exactly(row: dict, earned: dict, points: dict) -> bool:
    for task, want in earned.items():
        got = float(row[task])
        if want is None and not got < points[task]:
            return False  # a wrong answer must not earn the task's full points
        if want is not None and abs(got - want) > 0.011:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grading", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20, help="submissions in the class (default 20)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout whose tito grades the same class (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tito-bench-grading-") as tmp:
        folder = Path(tmp) / "class"
        expected = make_class(folder, args.size, args.seed)
        from tito.graded import load_points

        points = load_points(ROOT / "tests" / MODULE).tasks
        for code in [ROOT, *args.code]:
            out = Path(tmp) / f"grades-{code.name}"
            env = dict(os.environ, PYTHONPATH=str(code), **ONE_BLAS_THREAD)
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "tito.cli", "grade", str(folder), "--module", MODULE,
                                   "--jobs", str(args.jobs), "--out", str(out)], cwd=code, env=env,
                                  capture_output=True, text=True)
            wall = time.monotonic() - started
            if proc.returncode != 0:
                print(f"{code}: tito grade failed: {proc.stderr.strip()[-500:]}")
                return 1
            with open(out / "gradebook.csv", newline="", encoding="utf-8") as handle:
                rows = {row["student"]: row for row in csv.DictReader(handle)}
            exact = [n for n, earned in expected.items() if scored_exactly(rows[n], earned, points)]
            print(f"{code}: {len(exact)} of {len(expected)} submissions scored exactly what they earned; "
                  f"{wall:.1f} s with --jobs {args.jobs} ({wall / len(expected):.2f} s per submission, "
                  f"a class of 300: {300 * wall / len(expected) / 60:.1f} min); load {os.getloadavg()[0]:.1f}")
            for name in sorted(set(expected) - set(exact)):
                off = [f"{t} {float(rows[name][t]):g} (earned {'less than ' + str(points[t]) if want is None else want})"
                       for t, want in expected[name].items() if not scored_exactly(rows[name], {t: want}, points)]
                print(f"    {name:<40} {', '.join(off)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
