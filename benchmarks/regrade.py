"""Is a grade repeatable? One wrong module-18 submission graded N times by each grading channel.

    python -m benchmarks.regrade [--times N] [--channels tito,nbgrader,gradescope] [--work DIR]

The submission is the reference solution `modules/18_compression/compression_dev.py` with two
fixed bugs (BUGS below), so that two tasks score partial points and the feedback holds failure
messages (assertions, hypothesis examples, file and line), the parts most likely to vary. Each
channel is set up once and then grades that same file N times:

- tito:       one kit (`build_kit`), then `grade_submission` N times in this process: what
              `tito grade run FILE -m 18` does after building its kit, minus the printing.
- nbgrader:   a course as in README.md's "nbgrader" section, with nbgrader's defaults (30 s per
              cell); `nbgrader generate_assignment` once, then `nbgrader autograde --student
              run-NN` once per run, each run a student holding the same notebook.
- gradescope: the bundle of `tito autograder`, run by tests/tito/test_gradescope_sim.py's
              simulation: setup.sh once, then each run in a fresh container (needs root,
              unshare and the network).

Per channel it prints the runs, the distinct scores, the distinct feedback (a hash of what the
channel gives back, with only the time- and run-dependent parts taken out; `normalized_results`
and `nbgrader_feedback` say which) and the seconds per run. It exits 1 if any channel gave two
different scores or two different feedbacks, and prints how the first two differ.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "18_compression"
SOURCE = ROOT / "modules" / MODULE / "compression_dev.py"
CHANNELS = ("tito", "nbgrader", "gradescope")

# (task, the reference line's text, the wrong text, what is wrong). Each bug breaks only some of
# its task's tests, so the task scores partial points and its row lists failures.
BUGS = (
    # The lesson's tie rule prunes the lower flat index first; this gives back the first ties
    # instead of the last, so it prunes the higher index first. Right whenever nothing ties.
    ("magnitude-mask", "keep[tied[tied.size - (pruned - k):]] = True", "keep[tied[:pruned - k]] = True",
     "the tie rule reversed: among equal magnitudes the higher index is pruned first"),
    # No filler entries: right while every gap fits in `bits`, wrong past it.
    ("delta-encode", "counts = gaps // base + 1", "counts = np.ones_like(gaps)",
     "no filler entries: a gap of 2**bits positions or more is stored wrapped"),
)

# nbgrader's route as in README.md: its defaults, only the course named.
NBGRADER_CONFIG = 'c = get_config()\nc.CourseDirectory.course_id = "tinytorch-compression"\n'


@dataclass
class Run:
    score: float
    feedback: str      # the normalized feedback, as canonical JSON: hashed, and diffed on disagreement
    seconds: float

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.feedback.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# The submission


def wrong_submission(source: Path = SOURCE) -> str:
    """The reference solution with BUGS applied, each inside its task's solution region."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.mutation import solution_regions  # the mutation tool's reading of the regions

    lines = source.read_text(encoding="utf-8").split("\n")
    regions = {r.task: r for r in solution_regions(source)}
    for task, old, new, _ in BUGS:
        if task not in regions:
            raise SystemExit(f"{source.name} has no solution region for task {task!r}: update BUGS")
        region = regions[task]
        hits = [i for i in range(region.first - 1, region.last) if old in lines[i]]
        if len(hits) != 1:
            raise SystemExit(f"task {task}: {old!r} occurs {len(hits)} times in its solution, not once: update BUGS")
        lines[hits[0]] = lines[hits[0]].replace(old, new)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Normalizing what a channel gives back


def normalized_results(results: dict) -> str:
    """A results.json (tito and Gradescope) without `execution_time`, the grading's wall clock:
    the only field that depends on the run. Everything else (scores, messages, the printed
    output, the sandbox line) is kept, so any other difference shows."""
    results = copy.deepcopy(results)
    results.pop("execution_time", None)
    return json.dumps(results, indent=1, sort_keys=True)


# In an autograded notebook: a traceback's kernel file is /tmp/ipykernel_<kernel pid>/<hash>.py, and
# ANSI colour codes surround a traceback's parts.
_KERNEL_FILE = re.compile(r"/tmp/ipykernel_\d+/")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def nbgrader_feedback(gradebook_grades: dict, notebook: Path) -> str:
    """What nbgrader gives back for a run: each graded cell's score (from gradebook.db) and the
    outputs of the graded test cells in the autograded notebook (the tracebacks a student sees).
    Taken out: the kernel's process id in traceback file names, colour codes, and where printed
    text was cut into output chunks (it depends on when the kernel flushed). The lesson's other
    cells print measured times and speeds (they differ on every run); they are no feedback and
    are left out."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        shown = ""
        for out in cell.get("outputs", []):
            if out.output_type == "stream":  # joined as printed: where the kernel cut it into chunks varies
                shown += out.text
            elif out.output_type == "error":
                shown += "\n".join([f"{out.ename}: {out.evalue}", *out.traceback]) + "\n"
            else:
                shown += str(out.get("data", {}).get("text/plain", "")) + "\n"
        cells[meta["grade_id"]] = _ANSI.sub("", _KERNEL_FILE.sub("/tmp/ipykernel_PID/", shown))
    return json.dumps({"grades": gradebook_grades, "outputs": cells}, indent=1, sort_keys=True)


# --------------------------------------------------------------------------------------------
# Channels: each sets up once, grades `submission` `times` times, returns (setup seconds, runs)


def tito_runs(submission: Path, times: int, work: Path, log) -> tuple[float, list[Run]]:
    sys.path.insert(0, str(ROOT))
    from tito.grading.kit import build_kit
    from tito.grading.submission import grade_submission
    from tito.modules import resolve

    started = time.perf_counter()
    kit = build_kit(ROOT, resolve(ROOT, MODULE), work / "kit")
    setup = time.perf_counter() - started
    runs = []
    for i in range(times):
        started = time.perf_counter()
        results = grade_submission(kit, submission)
        runs.append(Run(results["score"], normalized_results(results), time.perf_counter() - started))
        log(f"tito {i + 1}/{times}: {results['score']:g} in {runs[-1].seconds:.1f} s")
    return setup, runs


def _tail(text: str) -> str:
    "The last line of a tool's output: an error stays one readable line (--work keeps the rest)."
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else "no output"


def _nbgrader(course: Path, *args: str) -> None:
    # As an instructor's shell runs it (tests/tito/test_nbgrader.py): no Jupyter configuration of
    # this machine's user, the kernel's own plot backend, this checkout's tinytorch importable.
    env = dict(os.environ, PYTHONPATH=str(ROOT), JUPYTER_CONFIG_DIR=str(course / ".jupyter"))
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"nbgrader {' '.join(args)} failed (exit {proc.returncode}): {_tail(proc.stdout + proc.stderr)}")


def nbgrader_runs(submission: Path, times: int, work: Path, log) -> tuple[float, list[Run]]:
    import jupytext
    from nbgrader.api import Gradebook

    def put(folder: Path, text: str) -> None:
        folder.mkdir(parents=True)
        jupytext.write(jupytext.reads(text, fmt="py:percent"), folder / "compression_dev.ipynb", fmt="ipynb")

    course = work / "course"
    course.mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG, encoding="utf-8")
    put(course / "source" / MODULE, SOURCE.read_text(encoding="utf-8"))
    started = time.perf_counter()
    _nbgrader(course, "generate_assignment", MODULE)
    setup = time.perf_counter() - started
    students = [f"run-{i + 1:02d}" for i in range(times)]
    text = submission.read_text(encoding="utf-8")
    seconds = {}
    for student in students:
        put(course / "submitted" / student / MODULE, text)
        started = time.perf_counter()
        _nbgrader(course, "autograde", MODULE, "--student", student)
        seconds[student] = time.perf_counter() - started
        log(f"nbgrader {student}: {seconds[student]:.1f} s")
    runs = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in students:
            graded = gb.find_submission(MODULE, student)
            grades = {g.name: g.auto_score for nb in graded.notebooks for g in nb.grades}
            notebook = course / "autograded" / student / MODULE / "compression_dev.ipynb"
            runs.append(Run(graded.score, nbgrader_feedback(grades, notebook), seconds[student]))
    return setup, runs


def _gradescope_sim():
    """tests/tito/test_gradescope_sim.py, imported: its simulation is the one this runs."""
    tests = ROOT / "tests" / "tito"
    sys.path.insert(0, str(tests))
    spec = importlib.util.spec_from_file_location("test_gradescope_sim", tests / "test_gradescope_sim.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    return sim


def gradescope_runs(submission: Path, times: int, work: Path, log) -> tuple[float, list[Run]]:
    sim = _gradescope_sim()
    reason = sim.unavailable()
    if reason:
        raise SystemExit(f"gradescope: cannot simulate Gradescope here: {reason}")
    bundle = work / "autograder.zip"
    proc = sim.run_tito(ROOT, "autograder", MODULE, "--out", str(bundle), tmpdir=work / "tmp")
    if proc.returncode != 0:
        raise SystemExit(f"gradescope: tito autograder failed: {_tail(proc.stdout + proc.stderr)}")
    names = [f"run-{i + 1:02d}" for i in range(times)]
    log(f"gradescope: setup.sh once, then {times} runs, each in a fresh container")
    run = sim.simulate(bundle, {name: [submission] for name in names}, work / "sim", timeout=600 + 120 * times)
    if run["driver"].returncode != 0:
        raise SystemExit(f"gradescope: the simulation failed (exit {run['driver'].returncode}): "
                         f"{_tail(run['driver'].stderr + run['setup_log'])}")
    if run["host_changed"]:
        raise SystemExit(f"gradescope: the simulation changed the host: {sorted(run['host_changed'])}")
    runs = []
    for name in names:
        status, seconds = run["timings"].get(name, (None, 0.0))
        results = run["submissions"][name]["results"]
        if status != 0 or results is None:
            raise SystemExit(f"gradescope: {name} exited {status} without results.json: "
                             f"{_tail(run['submissions'][name]['stdout'])}")
        runs.append(Run(results["score"], normalized_results(results), seconds))
    return run["timings"]["setup"][1], runs


# --------------------------------------------------------------------------------------------
# Report


def summary_row(channel: str, setup: float, runs: list[Run]) -> str:
    scores = sorted({r.score for r in runs})
    digests = sorted({r.digest for r in runs})
    seconds = [r.seconds for r in runs]
    return (f"| {channel} | {len(runs)} | {len(scores)} ({', '.join(f'{s:g}' for s in scores)}) | "
            f"{len(digests)} ({', '.join(digests)}) | {statistics.median(seconds):.1f} "
            f"({min(seconds):.1f}-{max(seconds):.1f}) | {setup:.1f} |")


def first_difference(runs: list[Run]) -> str:
    """How the first run that differs from run 1 differs from it (a unified diff, at most 40 lines)."""
    other = next(i for i, r in enumerate(runs) if r.feedback != runs[0].feedback or r.score != runs[0].score)
    diff = difflib.unified_diff(runs[0].feedback.splitlines(), runs[other].feedback.splitlines(),
                                "run 1", f"run {other + 1}", lineterm="", n=1)
    return "\n".join(list(diff)[:40])


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.regrade", description=__doc__.split("\n")[0])
    parser.add_argument("--times", type=int, default=20, help="gradings per channel (default 20)")
    parser.add_argument("--channels", default=",".join(CHANNELS), help=f"comma-separated, of {', '.join(CHANNELS)}")
    parser.add_argument("--work", metavar="DIR", help="keep the kit, course, bundle and results here "
                                                      "(default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels:
        raise SystemExit(f"unknown channel(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CHANNELS)}")
    if args.times < 2:
        raise SystemExit(f"--times must be at least 2 to compare gradings, got {args.times}")
    if args.work and Path(args.work).exists() and any(Path(args.work).iterdir()):
        raise SystemExit(f"--work {args.work} is not empty: give a new or empty folder")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started, commit = time.perf_counter(), _commit()  # the code that grades: HEAD may move during a long run
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tito-regrade-"))
    try:
        submission = work / "submission" / SOURCE.name
        submission.parent.mkdir(parents=True)
        submission.write_text(wrong_submission(), encoding="utf-8")
        grade = {"tito": tito_runs, "nbgrader": nbgrader_runs, "gradescope": gradescope_runs}
        measured = {}
        for channel in channels:
            (work / channel).mkdir()
            measured[channel] = grade[channel](submission, args.times, work / channel, log)
            for i, run in enumerate(measured[channel][1]):  # what was hashed, to read or diff with --work
                (work / channel / f"feedback-{i + 1:02d}.json").write_text(run.feedback, encoding="utf-8")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"`python -m benchmarks.regrade {' '.join(argv if argv is not None else sys.argv[1:])}` at {commit}: "
          f"module {MODULE} with {len(BUGS)} bugs ({'; '.join(f'{t}: {why}' for t, _, _, why in BUGS)})\n")
    print("| channel | runs | distinct scores | distinct feedback (sha256[:12]) | s/run, median (min-max) | setup s |")
    print("|---|---|---|---|---|---|")
    for channel, (setup, runs) in measured.items():
        print(summary_row(channel, setup, runs))
    disagree = [c for c, (_, runs) in measured.items() if len({(r.score, r.feedback) for r in runs}) > 1]
    for channel in disagree:
        print(f"\n{channel}: the gradings disagree; the first difference:\n{first_difference(measured[channel][1])}")
    print(f"\nwall time {time.perf_counter() - started:.0f} s; "
          + (f"DISAGREE: {', '.join(disagree)}" if disagree else "every channel repeated its score and feedback"))
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
