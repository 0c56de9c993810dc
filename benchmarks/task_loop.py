"""`python -m benchmarks.task_loop`: time a student's loop, one exercise at a time.

In a fresh `tito release` copy of module 18, for every task T: write the student's file with only
T solved (the other exercises still stubs), run `tito test 18 --task T` as the student would
(the export included), and record the wall time, the CPU time and the state it reports (done,
or blocked by an unfinished task). Then time the full `tito test 18` on the solution. Prints a
table and the median and maximum. A benchmark, not a test: its timings depend on the machine.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "18_compression"


def timed(command: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.task_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--no-full", action="store_true", help="skip timing the full `tito test 18` on the solution")
    args = parser.parse_args(argv)

    from tito.grade import mixed_source
    from tito.graded import load_points, strip_hidden
    from tito.modules import resolve

    module = resolve(ROOT, MODULE)
    tasks = list(load_points(module.tests_folder(ROOT)).tasks)
    with tempfile.TemporaryDirectory(prefix="tito-bench-loop-") as tmp:
        copy = Path(tmp) / "student"
        subprocess.run([sys.executable, "-m", "tito.cli", "release", MODULE, "--out", str(copy)], cwd=ROOT,
                       check=True, capture_output=True)
        target = copy / "modules" / MODULE / module.source.name
        rows = []
        for task in tasks:
            # what a student's file looks like with only this exercise done
            target.write_text(strip_hidden(mixed_source(module.source, set(tasks) - {task}), str(target)),
                              encoding="utf-8")
            wall, cpu, proc = timed(["tito", "test", "18", "--task", task], copy)
            state = next((" ".join(line.split()[3:]) for line in proc.stdout.splitlines()
                          if line.split()[:1] == [task]), "?")
            rows.append((task, wall, cpu, state))
            print(f"  {task:<22} {wall:6.2f} s wall {cpu:6.2f} s CPU  {state}", flush=True)
        done = [r for r in rows if r[3] == "done"]
        for label, chosen in (("every task", rows), ("tasks without an unfinished prerequisite", done)):
            if chosen:
                walls = [r[1] for r in chosen]
                print(f"{label} ({len(chosen)}): median {statistics.median(walls):.2f} s, max {max(walls):.2f} s wall; "
                      f"CPU median {statistics.median(r[2] for r in chosen):.2f} s")
    if not args.no_full:
        wall, cpu, proc = timed(["tito", "test", "18"], ROOT)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
        print(f"full `tito test 18` on the solution: {wall:.1f} s wall, {cpu:.1f} s CPU ({last})")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
