"""`tito grade`: score student submissions against the instructor's visible and hidden tests.

Grading has two steps. A *kit* is built once from the course repository: the package exported
from every module except the graded one, the module's tests (hidden ones included), and a
manifest listing each graded test, its task and its points, found by collecting the tests
against the reference solution. Then each submission is graded in its own fresh temporary
folder: its `.py` or `.ipynb` is exported into a copy of the kit's package, and the tests run in
a separate, sandboxed process (`tito/grade_child.py`) whose signed verdicts this process reads.
The score comes from those verdicts alone: never from an exit code, a file or printed output.

The Gradescope bundle (`tito autograder`) ships the kit, so the same code grades there.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .errors import TitoError
from .graded import DEFAULT_LIMITS, is_hidden_test, load_points

LIB = "tinytorch"
CHILD = Path(__file__).with_name("grade_child.py")
MAX_LINE = 1 << 20
PYTEST_INI = """[pytest]
markers =
    task(id): a graded test of the exercise whose nbgrader grade_id is `id`
python_files = test_*.py
addopts =
"""


# ---------------------------------------------------------------------------------------------
# The kit


@dataclass
class Kit:
    folder: Path
    manifest: dict

    @property
    def module(self) -> str:
        return self.manifest["module"]

    @classmethod
    def load(cls, folder: Path) -> "Kit":
        path = folder / "manifest.json"
        if not path.exists():
            raise TitoError(f"{folder} is not a grading kit (no manifest.json)")
        return cls(folder, json.loads(path.read_text(encoding="utf-8")))


def _copytree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache",
                                                             ".hypothesis", ".ipynb_checkpoints"))


def _source_number(path: Path) -> int | None:
    """The course module number a generated package file was exported from (its header)."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return None
    match = re.search(r"File to edit: [^\n]*?modules/(\d+)_", head)
    return int(match.group(1)) if match else None


def _clean_env(sandbox: Path | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TITO_GRADING": "1",
        # third-party pytest plugins cost ~0.5 s per start; the kit names the ones tests need
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    if sandbox is not None:
        env["HOME"] = str(sandbox / "work")
        env["TMPDIR"] = str(sandbox / "work" / "tmp")
    return env


def _tito_path() -> str:
    return str(Path(__file__).resolve().parents[1])


def _run_collect(folder: Path, config: dict, timeout: float = 300) -> dict:
    read, write = os.pipe()
    config = {**config, "result_fd": write}
    env = _clean_env()
    env["HOME"] = env["TMPDIR"] = str(folder / "work")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-I", "-B", str(folder / "grade_child.py"), "collect"],
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(write,), cwd=folder / "work", env=env)
        os.close(write)
        try:
            proc.stdin.write(json.dumps(config).encode("utf-8"))
            proc.stdin.close()
            with os.fdopen(read, "rb") as pipe:
                data = pipe.read()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise TitoError("collecting the tests against the reference solution timed out") from None
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    if not data.strip():
        last = [line for line in output.splitlines() if line.strip()][-1:] or ["no output"]
        raise TitoError(f"collecting the tests against the reference solution failed: {last[0]}")
    return json.loads(data.decode("utf-8").splitlines()[-1])


def _pytest_plugins(tests: Path) -> list[str]:
    """Third-party pytest plugins the tests need (plugin autoloading is off while grading)."""
    import importlib.util

    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in tests.rglob("*.py"))
    wanted = []
    if re.search(r"^\s*(from|import)\s+hypothesis\b", text, re.M) and importlib.util.find_spec("_hypothesis_pytestplugin"):
        wanted.append("_hypothesis_pytestplugin")
    return wanted


def build_kit(root: Path, module, dest: Path, reference: Path | None = None) -> Kit:
    """Everything needed to grade `module`, in `dest` (which must not exist yet)."""
    from .export import _export_to, read_notebook

    tests_folder = module.tests_folder(root)
    points = load_points(tests_folder)
    if points is None:
        raise TitoError(f"{module.id} is not graded: {tests_folder.relative_to(root)}/points.toml is missing")
    reference = reference or module.source
    lib = root / LIB
    if not lib.is_dir():
        raise TitoError(f"{LIB}/ is missing: run 'tito export --all' first")
    dest.mkdir(parents=True)
    _copytree(tests_folder, dest / "tests" / module.id)
    _copytree(lib, dest / "pkg" / LIB)
    shutil.copyfile(CHILD, dest / "grade_child.py")
    (dest / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    shutil.copyfile(root / "pyproject.toml", dest / "pyproject.toml")

    # Which package files the graded module writes: the reference's export says.
    staged_root = Path(tempfile.mkdtemp(prefix="tito-kit-ref-"))
    try:
        staged = staged_root / LIB
        staged.mkdir()
        try:
            _export_to(read_notebook(reference), reference.resolve(), staged, lib.resolve())
        except TitoError:
            raise
        except Exception as exc:
            raise TitoError(f"{reference}: nbdev could not export it ({type(exc).__name__}: {exc})") from None
        targets = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.py"))
        if not targets:
            raise TitoError(f"{reference}: exports nothing")
        for relative in targets:
            (dest / "pkg" / LIB / relative).unlink(missing_ok=True)
        student_modules = [f"{LIB}." + t[:-3].replace("/", ".").removesuffix(".__init__") for t in targets]
        trusted = [LIB]
        for path in sorted((dest / "pkg" / LIB).rglob("*.py")):
            number = _source_number(path)
            if number is not None and number < int(module.number):
                trusted.append(f"{LIB}." + path.relative_to(dest / "pkg" / LIB).as_posix()[:-3].replace("/", "."))

        # Collect the tests against the reference, in a throwaway copy of the package.
        ref = staged_root / "ref"
        _copytree(dest / "pkg", ref / "pkg")
        for relative in targets:
            shutil.copyfile(staged / relative, ref / "pkg" / LIB / relative)
        _copytree(dest / "tests", ref / "tests")
        (ref / "work").mkdir()
        shutil.copyfile(CHILD, ref / "grade_child.py")
        (ref / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
        plugins = _pytest_plugins(dest / "tests")
        found = _run_collect(ref, {
            "sandbox": str(ref), "pkg": str(ref / "pkg"), "work": str(ref / "work"),
            "ini": str(ref / "pytest.ini"), "test_paths": [str(ref / "tests" / module.id)],
            "student_modules": student_modules, "plugins": plugins,
        })
    finally:
        shutil.rmtree(staged_root, ignore_errors=True)
    if found["errors"]:
        first = found["errors"][0]
        lines = [line for line in first["message"].splitlines() if line.strip()]
        raise TitoError(f"the tests of {module.id} do not collect against the reference solution: "
                        f"{first['nodeid']}: {lines[-1] if lines else 'error'}")
    tests, problems = [], []
    for test in found["tests"]:
        tasks = test["tasks"]
        if not tasks:
            continue  # an ungraded test: `tito test` runs it, grading does not
        if len(set(tasks)) > 1:
            problems.append(f"{test['nodeid']} is marked with several tasks ({', '.join(tasks)})")
            continue
        if tasks[0] not in points.tasks:
            problems.append(f"{test['nodeid']} is marked task {tasks[0]!r}, which points.toml does not list")
            continue
        tests.append({"nodeid": test["nodeid"], "task": tasks[0], "hidden": is_hidden_test(Path(test["file"]))})
    for task in points.tasks:
        if not any(t["task"] == task for t in tests):
            problems.append(f"task {task!r} in points.toml has no test marked @pytest.mark.task({task!r})")
    if problems:
        raise TitoError(f"{module.id}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    counts = {task: sum(1 for t in tests if t["task"] == task) for task in points.tasks}
    for test in tests:
        test["max_score"] = points.tasks[test["task"]] / counts[test["task"]]
    manifest = {
        "format": 1,
        "module": module.id,
        "module_name": module.name,
        "number": module.number,
        "lib": LIB,
        "export_targets": targets,
        "student_modules": student_modules,
        "trusted_modules": trusted,
        "tasks": points.tasks,
        "total": points.total,
        "limits": points.limits,
        "tests": tests,
        "api": found["api"],
        "allowed_dunders": found["allowed_dunders"],
        "plugins": plugins,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Kit(dest, manifest)


# ---------------------------------------------------------------------------------------------
# One submission


def find_source(submission: Path, module_name: str) -> Path:
    """The file to grade in a submission: the file itself, or the module's notebook in a folder."""
    if submission.is_file():
        if submission.suffix not in (".py", ".ipynb"):
            raise TitoError(f"{submission.name}: expected a .py or .ipynb file")
        return submission
    candidates = [p for p in sorted(submission.rglob("*")) if p.is_file() and p.suffix in (".py", ".ipynb")
                  and not any(part.startswith((".", "__MACOSX", "__pycache__")) for part in p.relative_to(submission).parts)]
    if not candidates:
        raise TitoError("the submission holds no .py or .ipynb file")
    named = [p for p in candidates if p.stem == f"{module_name}_dev"]
    if named:
        return max(named, key=lambda p: (p.stat().st_mtime, p.suffix == ".ipynb"))
    if len(candidates) == 1:
        return candidates[0]
    dev = [p for p in candidates if p.stem.endswith("_dev")]
    if len(dev) == 1:
        return dev[0]
    names = ", ".join(p.relative_to(submission).as_posix() for p in candidates[:5])
    raise TitoError(f"cannot tell which file to grade ({names}); name it {module_name}_dev.py or .ipynb")


class _Run:
    """What one sandboxed child reported. Only signed messages in increasing order count;
    anything else on the channel (student code can write to it) is dropped and counted."""

    def __init__(self, key: bytes):
        self.key = key
        self.seq = 0
        self.buffer = b""
        self.events: list[tuple] = []
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_LINE and b"\n" not in self.buffer:
            self.dropped += 1
            self.buffer = b""
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            mac, body = line.decode("ascii").split(" ", 1)
            expected = hmac.new(self.key, body.encode("ascii"), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(mac, expected):
                raise ValueError("bad signature")
            parts = body.split(" ")
            seq = int(parts[0])
            fields = [parts[1]] + [bytes.fromhex(p).decode("utf-8") for p in parts[2:]]
            if seq <= self.seq:
                raise ValueError("replayed")
        except (UnicodeDecodeError, ValueError, IndexError):
            self.dropped += 1
            return
        self.seq = seq
        self.events.append(tuple(fields))


def _describe_exit(code: int | None, memory_mb: int) -> str:
    if code is None:
        return "did not finish"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGXCPU":
            return "was stopped by the CPU-time limit"
        if name == "SIGXFSZ":
            return "was stopped for writing too large a file"
        if name == "SIGSEGV":
            return f"crashed (SIGSEGV; e.g. the {memory_mb} MB memory limit hit inside native code)"
        return f"was killed ({name})"
    return f"exited with code {code} (sys.exit or os._exit in student code?)"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
        pass


def _run_child(sandbox: Path, kit: Kit, nodeids: list[str], limits: dict, deadline: float,
               landlock: bool, outcome: dict, flags: list, info: dict) -> bool:
    """One child process over `nodeids`; fills `outcome`. True if it made progress."""
    manifest = kit.manifest
    key = secrets.token_bytes(32)
    read, write = os.pipe()
    memory_mb = int(limits["memory_mb"])
    test_timeout = float(limits["test_timeout"])
    config = {
        "key": key.hex(), "result_fd": write, "sandbox": str(sandbox), "pkg": str(sandbox / "pkg"),
        "work": str(sandbox / "work"), "ini": str(sandbox / "pytest.ini"),
        "test_paths": [str(sandbox / "tests" / manifest["module"])], "nodeids": nodeids,
        "student_files": [str(sandbox / "pkg" / manifest["lib"] / t) for t in manifest["export_targets"]],
        "student_modules": manifest["student_modules"], "trusted_modules": manifest["trusted_modules"],
        "api": manifest["api"], "allowed_dunders": manifest["allowed_dunders"], "memory_mb": memory_mb,
        "plugins": manifest.get("plugins", []),
        "cpu_seconds": int(max(10, deadline - time.monotonic()) + 10), "landlock": landlock,
    }
    logs = sandbox / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "stdout.txt", "ab") as out, open(logs / "stderr.txt", "ab") as err:
        proc = subprocess.Popen([sys.executable, "-I", "-B", str(sandbox / "grade_child.py"), "run"],
                                stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(write,),
                                cwd=sandbox / "work", env=_clean_env(sandbox), start_new_session=True)
    os.close(write)
    run = _Run(key)
    progress = False
    current: str | None = None
    current_since = time.monotonic()
    phase = "boot"  # boot -> import -> tests -> done
    phase_deadline = time.monotonic() + 120 + test_timeout
    stop_reason = ""
    try:
        try:
            proc.stdin.write(json.dumps(config).encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        remaining = set(nodeids)
        handled = 0
        while True:
            now = time.monotonic()
            limit = min(deadline, phase_deadline if current is None else current_since + test_timeout)
            if now >= limit:
                if current is not None:
                    stop_reason = f"timed out after {test_timeout:g} s"
                elif phase in ("boot", "import"):
                    stop_reason = f"timed out while importing the submission (limit {test_timeout:g} s)"
                else:
                    stop_reason = "the grading time limit ran out"
                break
            ready, _, _ = select.select([read], [], [], min(1.0, limit - now))
            if not ready:
                continue
            data = os.read(read, 65536)
            if not data:
                break
            run.feed(data)
            for event in run.events[handled:]:
                handled += 1
                kind = event[0]
                if kind == "phase":
                    phase = "import"
                    phase_deadline = time.monotonic() + test_timeout
                    info["sandbox"] = event[2] if len(event) > 2 else ""
                elif kind == "ready":
                    phase = "tests"
                    phase_deadline = deadline
                    for flag in json.loads(event[1]):
                        if flag not in flags:
                            flags.append(flag)
                elif kind == "collect_error":
                    info.setdefault("collect_errors", {})[event[1]] = event[2]
                elif kind == "start" and event[1] in remaining:
                    if current is not None:  # its end was lost: it cannot count
                        outcome[current] = (False, "its result was lost on the result channel")
                        remaining.discard(current)
                    current, current_since, progress = event[1], time.monotonic(), True
                elif kind == "end" and event[1] in remaining and current in (None, event[1]):
                    outcome[event[1]] = (event[2] == "1", event[3], event[2] == "s")
                    remaining.discard(event[1])
                    current, progress = None, True
                elif kind == "done":
                    phase = "done"
                    info["done"] = True
                    if event[1]:
                        flags.append(event[1])
    finally:
        if run.dropped:
            flag = "unsigned or malformed messages on the result channel were ignored"
            if flag not in flags:
                flags.append(flag)
        os.close(read)
        try:
            proc.wait(timeout=3 if phase == "done" else 0.2)
        except subprocess.TimeoutExpired:
            pass
        code = proc.poll()
        _kill(proc)
    if not stop_reason and phase != "done":
        stop_reason = f"the grading process {_describe_exit(code, memory_mb)}"
    if current is not None:
        outcome[current] = (False, f"{stop_reason} during this test" if stop_reason else "no result")
    if phase in ("boot", "import") and not progress:
        reason = stop_reason if "import" in stop_reason else f"{stop_reason} while importing the submission"
        info["fatal"] = reason
    elif phase != "done" and stop_reason and not progress:
        info["fatal"] = stop_reason
    return progress


def _prepare_sandbox(kit: Kit) -> Path:
    sandbox = Path(tempfile.mkdtemp(prefix="tito-grade-"))
    _copytree(kit.folder / "pkg", sandbox / "pkg")
    _copytree(kit.folder / "tests", sandbox / "tests")
    shutil.copyfile(kit.folder / "grade_child.py", sandbox / "grade_child.py")
    shutil.copyfile(kit.folder / "pytest.ini", sandbox / "pytest.ini")
    (sandbox / "work" / "tmp").mkdir(parents=True)
    (sandbox / "src").mkdir()
    return sandbox


class Exporter:
    """A long-lived `tito.grade_export --serve` process: nbdev is imported once per batch.
    A job that takes too long kills the process; the next job starts a fresh one."""

    def __init__(self, kit: Kit, timeout: float = 120):
        import threading

        self.kit, self.timeout = kit, timeout
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = _clean_env()
        env["PYTHONPATH"] = _tito_path()
        env["HOME"] = env["TMPDIR"] = tempfile.gettempdir()
        return subprocess.Popen([sys.executable, "-B", "-m", "tito.grade_export", "--serve"], cwd=self.kit.folder,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def export(self, source: Path, sandbox: Path) -> str | None:
        """Export the submission into the sandbox's package; an error message, or None."""
        copy = sandbox / "src" / source.name
        shutil.copyfile(source, copy)
        job = {"source": str(copy), "lib_dir": str(sandbox / "pkg" / self.kit.manifest["lib"]),
               "targets": self.kit.manifest["export_targets"]}
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            proc = self.proc
            try:
                proc.stdin.write((json.dumps(job) + "\n").encode("utf-8"))
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
                line = proc.stdout.readline() if ready else b""
            except (BrokenPipeError, OSError):
                line = b""
            if not line:
                _kill(proc)
                self.proc = None
                return "exporting it timed out" if not ready else "the export step crashed"
        answer = json.loads(line.decode("utf-8"))
        return None if answer.get("ok") else answer.get("error", "export failed")

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(self.proc)
            self.proc = None


def grade_submission(kit: Kit, submission: Path, student: str | None = None, limits: dict | None = None,
                     landlock: bool = True, keep: bool = False, exporter: Exporter | None = None) -> dict:
    """Grade one submission; returns Gradescope-style results (never raises for its content)."""
    if exporter is None:
        exporter = Exporter(kit)
        try:
            return grade_submission(kit, submission, student, limits, landlock, keep, exporter)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()  # submissions already being graded finish within their limits
            raise
        finally:
            exporter.close()
    started = time.monotonic()
    limits = {**DEFAULT_LIMITS, **kit.manifest.get("limits", {}), **(limits or {})}
    manifest = kit.manifest
    student = student or submission.stem
    outcome: dict[str, tuple] = {}  # nodeid -> (passed, message[, skipped])
    flags: list[str] = []
    info: dict = {}
    fatal = ""
    source_name = ""
    sandbox = None
    try:
        try:
            source = find_source(submission, manifest["module_name"])
            source_name = source.name
        except TitoError as err:
            fatal = str(err)
        else:
            sandbox = _prepare_sandbox(kit)
            error = exporter.export(source, sandbox)
            if error:
                fatal = f"{source.name}: {error}"
            else:
                deadline = started + float(limits["total_timeout"])
                remaining = [t["nodeid"] for t in manifest["tests"]]
                while remaining and not fatal:
                    progress = _run_child(sandbox, kit, remaining, limits, deadline, landlock, outcome, flags, info)
                    fatal = info.pop("fatal", "")
                    remaining = [n for n in remaining if n not in outcome]
                    broken = info.get("collect_errors", {})
                    finished = info.pop("done", False) and all(
                        any(n.startswith(where) for where in broken) for n in remaining)
                    if finished or not progress or time.monotonic() >= deadline:
                        break  # what is left cannot run (its file does not load) or makes no progress
                if remaining and not fatal:
                    fatal = "the grading time limit ran out" if time.monotonic() >= deadline else ""
    finally:
        if sandbox is not None and not keep:
            shutil.rmtree(sandbox, ignore_errors=True)
    collect_errors = info.get("collect_errors", {})
    results = _results(manifest, outcome, flags, fatal, collect_errors)
    results["execution_time"] = round(time.monotonic() - started, 2)
    results["extra_data"].update(student=student, submission=source_name,
                                 sandbox=info.get("sandbox", ""), kept=str(sandbox) if keep and sandbox else "")
    return results


def _not_run_reason(nodeid: str, collect_errors: dict) -> str:
    for where, message in collect_errors.items():
        if nodeid.startswith(where):
            lines = [line for line in message.splitlines() if line.strip()]
            return f"not run: its test file failed to load ({lines[-1][:300] if lines else 'error'})"
    return "not run"


def _results(manifest: dict, outcome: dict, flags: list, fatal: str, collect_errors: dict) -> dict:
    tests, skipped = [], []  # a skipped test earns nothing; it is only reported apart from failures
    earned = {task: 0 for task in manifest["tasks"]}
    counts = {task: 0 for task in manifest["tasks"]}
    for number, test in enumerate(manifest["tests"], 1):
        passed, message, *rest = outcome.get(test["nodeid"], (False, fatal or _not_run_reason(test["nodeid"], collect_errors)))
        if rest and rest[0]:
            skipped.append(f"{test['task']}: {test['nodeid'].split('/')[-1]}")
        counts[test["task"]] += 1
        earned[test["task"]] += bool(passed)
        tests.append({
            "name": f"{test['task']}: {test['nodeid'].split('/')[-1]}",
            "number": number,
            "score": round(test["max_score"], 4) if passed else 0.0,
            "max_score": round(test["max_score"], 4),
            "status": "passed" if passed else "failed",
            "output": "passed" if passed else message,
            "visibility": "after_published" if test["hidden"] else "visible",
            "tags": [test["task"]],
        })
    task_scores = {task: round(points * earned[task] / counts[task], 4) if counts[task] else 0.0
                   for task, points in manifest["tasks"].items()}
    score = round(sum(task_scores.values()), 4)
    lines = [f"{manifest['module']}: {score:g} / {manifest['total']:g} points"]
    if fatal:
        lines.append(f"problem: {fatal}")
    lines += [f"note: {flag}" for flag in flags]
    return {
        "score": score,
        "max_score": manifest["total"],
        "execution_time": 0.0,
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {"module": manifest["module"], "tasks": task_scores, "flags": flags, "problem": fatal,
                       "skipped": skipped},
    }


# ---------------------------------------------------------------------------------------------
# Printing and batches


def print_results(results: dict, show_hidden: bool = True) -> None:
    extra = results["extra_data"]
    print(f"{extra.get('student', '')}  {extra.get('submission', '')}  ({results['execution_time']:.1f}s,"
          f" sandbox: {extra.get('sandbox') or 'not started'})")
    width = max([len(t["name"]) for t in results["tests"]] + [10])
    skipped = set(extra.get("skipped", []))
    for test in results["tests"]:
        hidden = " (hidden)" if test["visibility"] != "visible" else ""
        mark = "ok  " if test["status"] == "passed" else ("skip" if test["name"] in skipped else "FAIL")
        print(f"  {mark} {test['name']:<{width}} {test['score']:>6.3g} / {test['max_score']:<6.3g}{hidden}")
        if test["status"] != "passed":
            first = (test["output"] or "").strip().splitlines()[:1]
            if first:
                print(f"         {first[0][:160]}")
    if extra.get("problem"):
        print(f"  problem: {extra['problem']}")
    for flag in extra.get("flags", []):
        print(f"  note: {flag[:300]}")
    print(f"  total: {results['score']:g} / {results['max_score']:g}")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name).strip("._") or "submission"


def submissions_in(folder: Path) -> list[tuple[str, Path]]:
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "__")):
            continue
        if path.is_dir() or path.suffix in (".py", ".ipynb"):
            entries.append((_safe_name(path.stem if path.is_file() else path.name), path))
    names = [name for name, _ in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    return [(f"{name}-{path.suffix.lstrip('.')}" if name in duplicates else name, path) for name, path in entries]


def is_single_submission(folder: Path, module_name: str) -> bool:
    return any((folder / f"{module_name}_dev{suffix}").is_file() for suffix in (".py", ".ipynb"))


def grade_batch(kit: Kit, folder: Path, out: Path, jobs: int, limits: dict | None = None,
                landlock: bool = True, quiet: bool = False) -> list[dict]:
    entries = submissions_in(folder)
    if not entries:
        raise TitoError(f"{folder} holds no submissions (.py or .ipynb files, or one folder per student)")
    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    all_results: dict[str, dict] = {}

    exporter = Exporter(kit)

    def one(name: str, path: Path) -> dict:
        try:
            return grade_submission(kit, path, student=name, limits=limits, landlock=landlock, exporter=exporter)
        except Exception as exc:  # one broken submission never stops the batch
            results = _results(kit.manifest, {}, [], f"grading failed: {type(exc).__name__}: {exc}", {})
            results["extra_data"].update(student=name, submission=path.name)
            return results

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, name, path): name for name, path in entries}
        try:
            for future in as_completed(futures):
                name = futures[future]
                results = future.result()
                all_results[name] = results
                (results_dir / f"{name}.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
                if not quiet:
                    problem = results["extra_data"].get("problem")
                    print(f"  {name:<28} {results['score']:>7g} / {results['max_score']:g}"
                          f"  ({results['execution_time']:.1f}s){'  ' + problem[:80] if problem else ''}", flush=True)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()  # submissions already being graded finish within their limits
            raise
        finally:
            exporter.close()
    tasks = list(kit.manifest["tasks"])
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "submission", "score", "max_score", *tasks, "problem", "notes"])
        for name, _ in entries:
            r = all_results[name]
            extra = r["extra_data"]
            writer.writerow([name, extra.get("submission", ""), r["score"], r["max_score"],
                             *[extra["tasks"].get(t, 0) for t in tasks], extra.get("problem", ""),
                             " | ".join(extra.get("flags", []))[:500]])
    if not quiet:
        wall = time.monotonic() - started
        print(f"graded {len(entries)} submissions in {wall:.1f}s with {jobs} job(s): "
              f"{out / 'gradebook.csv'}, {results_dir}/<student>.json")
    return [all_results[name] for name, _ in entries]


# ---------------------------------------------------------------------------------------------
# Self-check and listing


def self_check(root: Path, module, quiet: bool = False) -> bool:
    """The released stub must score 0 on every graded test and the solution full marks."""
    from .graded import release_source, solution_tasks

    with tempfile.TemporaryDirectory(prefix="tito-selfcheck-") as tmp:
        kit = build_kit(root, module, Path(tmp) / "kit")
        stub = Path(tmp) / "stub" / module.source.name
        stub.parent.mkdir()
        stub.write_text(release_source(module.source, stub=True), encoding="utf-8")
        with ThreadPoolExecutor(max_workers=2) as pool:  # the two gradings are independent
            solution_job = pool.submit(grade_submission, kit, module.source, "solution")
            stub_job = pool.submit(grade_submission, kit, stub, "stub")
            solution, stubbed = solution_job.result(), stub_job.result()
    ok = True
    problems = []
    skipped = set(solution["extra_data"].get("skipped", []))
    for test in solution["tests"]:
        if test["name"] in skipped:
            # unchecked, and it would give every submission 0 here: still a failure, named for what it is
            problems.append(f"skipped on the solution, so unchecked (and worth 0 to every submission here), "
                            f"{test['name']}: {test['output'][:200]}; install the course's test requirements")
        elif test["status"] != "passed":
            problems.append(f"solution fails {test['name']}: {test['output'][:200]}")
    for test in stubbed["tests"]:
        if test["status"] == "passed":
            problems.append(f"the released stub passes {test['name']}: this test does not discriminate")
    notebook_tasks = set(solution_tasks(module.source))
    for task in kit.manifest["tasks"]:
        if task not in notebook_tasks:
            problems.append(f"task {task!r} has points but no solution cell with grade_id {task!r}")
    ok = not problems
    if not quiet:
        n = len(kit.manifest["tests"])
        print(f"{'PASS' if ok else 'FAIL'}  {module.id}: solution {solution['score']:g}/{solution['max_score']:g}, "
              f"stub {stubbed['score']:g}/{stubbed['max_score']:g} on {n} graded tests")
        for problem in problems:
            print(f"      x {problem}")
        for task in sorted(notebook_tasks - set(kit.manifest["tasks"])):
            print(f"      note: solution cell {task!r} has no points in points.toml")
    return ok


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
