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
from dataclasses import dataclass, field
from pathlib import Path

from . import ONE_BLAS_THREAD
from .errors import TitoError
from .graded import DEFAULT_LIMITS, copy_shared_tests, is_hidden_test, load_points

LIB = "tinytorch"
CHILD = Path(__file__).with_name("grade_child.py")
MAX_LINE = 1 << 20
REFERENCE_FILE = "reference.json"
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
    # (exported package, limits) -> each test's verdict: identical code meets identical, seeded
    # tests, so a batch or the self-check never runs a test twice against the same package
    runs: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def module(self) -> str:
        return self.manifest["module"]

    @classmethod
    def load(cls, folder: Path) -> "Kit":
        path = folder / "manifest.json"
        if not path.exists():
            raise TitoError(f"{folder} is not a grading kit (no manifest.json)")
        return cls(folder, json.loads(path.read_text(encoding="utf-8")))


_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints")


def _copytree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=_IGNORED)


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
        **ONE_BLAS_THREAD,
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
    # conftest.py and _shared/ beside the module folders: the module's tests use them too
    copy_shared_tests(root / "tests", dest / "tests", _IGNORED)
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
        for path in sorted((dest / "pkg" / LIB).rglob("*.py")):
            number = _source_number(path)
            if number is not None and number > int(module.number):
                path.unlink()  # a later module's solutions: graded code has no business with them
        student_modules = [f"{LIB}." + t[:-3].replace("/", ".").removesuffix(".__init__") for t in targets]
        trusted = [LIB]
        for path in sorted((dest / "pkg" / LIB).rglob("*.py")):
            number = _source_number(path)
            # Earlier modules and this module's given notebooks are reference code, not the student's.
            if number is not None and number <= int(module.number):
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
    # The reference's solution cells, so that each task can be graded alone (see grade_submission).
    # They stay in the kit folder, outside every sandbox, and the child refuses reads of the kit.
    from .graded import reference_cells

    (dest / REFERENCE_FILE).write_text(json.dumps(reference_cells(reference), indent=1), encoding="utf-8")
    manifest = {
        "format": 2,
        "reference": REFERENCE_FILE,
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


def _code_cells(path: Path) -> list[str] | None:
    """A .py (percent format) or .ipynb's code cells, compared across the two formats; None if
    the file cannot be read. Plain text and JSON only: nothing of the submission runs here."""
    try:
        if path.stat().st_size > 5 * 1024 * 1024:
            return None
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            cells = json.loads(text).get("cells", [])
            sources = ["".join(c.get("source", "")) if isinstance(c.get("source"), list) else str(c.get("source", ""))
                       for c in cells if c.get("cell_type") == "code"]
        else:
            sources, current, skip = [], [], True  # what precedes the first cell is a header
            for line in text.split("\n"):
                if line.startswith("# %%"):
                    if current and not skip:
                        sources.append("\n".join(current))
                    current, skip = [], bool(re.match(r"# %%\s*\[", line))  # markdown or raw
                    continue
                current.append(line)
            if current and not skip:
                sources.append("\n".join(current))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    normalized = ["\n".join(l.rstrip() for l in s.strip().split("\n")) for s in sources]
    return [s for s in normalized if s]


def find_source(submission: Path, module_name: str) -> tuple[Path, list[str]]:
    """The file to grade in a submission, and the candidates it ignored.

    The rule: a file is graded as given. In a folder, the module's notebook is graded, named
    `<name>_dev.py` or `<name>_dev.ipynb` anywhere in it (or else the only .py/.ipynb there is,
    or the only `*_dev` file). When both the .py and the .ipynb are there, they must hold the
    same code: the .py is graded and the .ipynb named as ignored; two different versions are
    refused, never guessed between."""
    if submission.is_file():
        if submission.suffix not in (".py", ".ipynb"):
            raise TitoError(f"{submission.name}: expected a .py or .ipynb file")
        return submission, []
    candidates = [p for p in sorted(submission.rglob("*")) if p.is_file() and p.suffix in (".py", ".ipynb")
                  and not any(part.startswith((".", "__MACOSX", "__pycache__")) for part in p.relative_to(submission).parts)]
    if not candidates:
        raise TitoError("the submission holds no .py or .ipynb file")

    def shown(paths):
        return [p.relative_to(submission).as_posix() for p in paths]

    named = [p for p in candidates if p.stem == f"{module_name}_dev"]
    if not named:
        dev = [p for p in candidates if p.stem.endswith("_dev")]
        named = [candidates[0]] if len(candidates) == 1 else dev
    if not named:
        raise TitoError(f"cannot tell which file to grade ({', '.join(shown(candidates[:5]))}); "
                        f"name it {module_name}_dev.py or {module_name}_dev.ipynb")
    pys = [p for p in named if p.suffix == ".py"]
    notebooks = [p for p in named if p.suffix == ".ipynb"]
    if len(pys) > 1 or len(notebooks) > 1:
        raise TitoError(f"the submission holds several copies of the module ({', '.join(shown(named))}); "
                        "submit one")
    chosen = pys[0] if pys else notebooks[0]
    if pys and notebooks:
        py_code, nb_code = _code_cells(pys[0]), _code_cells(notebooks[0])
        if py_code is None or nb_code is None or py_code != nb_code:
            raise TitoError(f"the submission holds two different versions of the module ({', '.join(shown(named))}); "
                            "submit only the one you want graded")
    ignored = [p for p in candidates if p != chosen]
    return chosen, shown(ignored)


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
        "lib_dir": str(sandbox / "pkg" / manifest["lib"]), "no_read": [str(kit.folder.resolve())],
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
        if stop_reason.startswith("timed out after"):
            info["timed_out"] = current
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
    """Long-lived `tito.grade_export --serve` processes: nbdev is imported once per batch, and
    each grading thread gets a process of its own (an export takes about half a second).
    A job that takes too long kills its process; the next job starts a fresh one."""

    def __init__(self, kit: Kit, timeout: float = 120):
        import threading

        self.kit, self.timeout = kit, timeout
        self.idle: list[subprocess.Popen] = []
        self.started: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = _clean_env()
        env["PYTHONPATH"] = _tito_path()
        env["HOME"] = env["TMPDIR"] = tempfile.gettempdir()
        proc = subprocess.Popen([sys.executable, "-B", "-m", "tito.grade_export", "--serve"], cwd=self.kit.folder,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.started.append(proc)
        return proc

    def _take(self) -> subprocess.Popen:
        with self.lock:
            while self.idle:
                proc = self.idle.pop()
                if proc.poll() is None:
                    return proc
            return self._start()

    def export(self, source: Path, sandbox: Path, keep="*") -> tuple[str | None, dict]:
        """Export the submission (as `keep` says, see tito.grade_export) into the sandbox's package:
        (an error message or None, what the submission did with each task)."""
        copy = sandbox / "src" / source.name
        shutil.copyfile(source, copy)
        reference = self.kit.manifest.get("reference")
        job = {"source": str(copy), "lib_dir": str(sandbox / "pkg" / self.kit.manifest["lib"]),
               "targets": self.kit.manifest["export_targets"], "keep": keep,
               "reference": str(self.kit.folder / reference) if reference else None}
        proc = self._take()
        ready = False
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode("utf-8"))
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            line = proc.stdout.readline() if ready else b""
        except (BrokenPipeError, OSError, ValueError):
            line = b""
        if not line:
            _kill(proc)
            return ("exporting it timed out" if not ready else "the export step crashed"), {}
        with self.lock:
            self.idle.append(proc)
        answer = json.loads(line.decode("utf-8"))
        return (None if answer.get("ok") else answer.get("error", "export failed")), answer.get("tasks", {})

    def close(self) -> None:
        with self.lock:
            started, self.started, self.idle = self.started, [], []
        for proc in started:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(proc)


def _grade_tests(kit: Kit, sandbox: Path, nodeids: list[str], limits: dict, deadline: float, landlock: bool,
                 flags: list, info: dict) -> tuple[dict, str]:
    """Run `nodeids` in an exported sandbox until each has a verdict, restarting the child after a
    crash or a time-out. A test that times out also fails the rest of its task's tests unrun, so a
    hang costs one time-out per task, not one per test."""
    task_of = {t["nodeid"]: t["task"] for t in kit.manifest["tests"]}
    outcome: dict[str, tuple] = {}
    remaining, fatal = list(nodeids), ""
    while remaining and not fatal:
        progress = _run_child(sandbox, kit, remaining, limits, deadline, landlock, outcome, flags, info)
        fatal = info.pop("fatal", "")
        hung = info.pop("timed_out", None)
        if hung is not None:
            for nodeid in remaining:
                if nodeid not in outcome and task_of[nodeid] == task_of[hung]:
                    outcome[nodeid] = (False, f"not run: an earlier test of task {task_of[hung]} timed out")
        remaining = [n for n in remaining if n not in outcome]
        broken = info.get("collect_errors", {})
        finished = info.pop("done", False) and all(any(n.startswith(where) for where in broken) for n in remaining)
        if finished or not progress or time.monotonic() >= deadline:
            break  # what is left cannot run (its file does not load) or makes no progress
    if remaining and not fatal and time.monotonic() >= deadline:
        fatal = "the grading time limit ran out"
    return outcome, fatal


@dataclass
class _Variant:
    """One export of a submission (as submitted, or with reference cells swapped in) and its run."""
    outcome: dict
    error: str | None  # the export's error: nothing ran
    kinds: dict  # task -> 'stub' | 'solution' | 'attempted' | 'missing'
    fatal: str
    sandbox: Path | None


def _run_key(kit: Kit, sandbox: Path, limits: dict, landlock: bool) -> str:
    """The exported package and the settings a run depends on (the tests are the kit's)."""
    digest = hashlib.sha256()
    for relative in kit.manifest["export_targets"]:
        text = (sandbox / "pkg" / kit.manifest["lib"] / relative).read_bytes()
        # nbdev's cell markers and header name the (temporary) file it exported from: not code
        code = b"\n".join(line for line in text.split(b"\n") if not line.startswith((b"# %% ", b"# AUTOGENERATED")))
        digest.update(relative.encode() + b"\0" + code)
    settings = {k: v for k, v in limits.items() if k != "total_timeout"}
    digest.update(json.dumps([settings, landlock], sort_keys=True).encode())
    return digest.hexdigest()


def _grade_variant(kit: Kit, exporter: "Exporter", source: Path, keep, select, limits: dict, deadline: float,
                   landlock: bool, flags: list, info: dict, keep_sandbox: bool) -> _Variant:
    sandbox = _prepare_sandbox(kit)
    try:
        error, kinds = exporter.export(source, sandbox, keep)
        if error:
            return _Variant({}, error, kinds, "", sandbox if keep_sandbox else None)
        nodeids = select(kinds)
        known = kit.runs.setdefault(_run_key(kit, sandbox, limits, landlock), {"verdicts": {}, "flags": []})
        outcome = {n: known["verdicts"][n] for n in nodeids if n in known["verdicts"]}
        flags.extend(f for f in known["flags"] if f not in flags)
        if known.get("sandbox"):
            info.setdefault("sandbox", known["sandbox"])
        missing = [n for n in nodeids if n not in outcome]
        fatal = ""
        if missing:
            before = len(flags)
            ran, fatal = _grade_tests(kit, sandbox, missing, limits, deadline, landlock, flags, info)
            outcome.update(ran)
            if not fatal and not info.get("collect_errors") and time.monotonic() < deadline:
                known["verdicts"].update(ran)
                known["flags"] += [f for f in flags[before:] if f not in known["flags"]]
                known["sandbox"] = info.get("sandbox", "")
        _locate_failures(outcome, sandbox, source, kit.manifest)
        return _Variant(outcome, None, kinds, fatal, sandbox if keep_sandbox else None)
    finally:
        if not keep_sandbox:
            shutil.rmtree(sandbox, ignore_errors=True)


def grade_submission(kit: Kit, submission: Path, student: str | None = None, limits: dict | None = None,
                     landlock: bool = True, keep: bool = False, exporter: Exporter | None = None,
                     trust_stubs: bool = True) -> dict:
    """Grade one submission, each task alone; returns Gradescope-style results (never raises for
    its content).

    The rule: a task's score depends on that task's code only. First the submission is graded
    as a whole, with the reference solution in place of the tasks still left as the released stub
    (they score 0 without running: the self-check proves their tests fail). Then each task with a
    failing test is graded again alone, in a hybrid whose every other task is the reference, and
    that verdict counts. `trust_stubs=False` (the self-check) runs the stubs' tests too."""
    if exporter is None:
        exporter = Exporter(kit)
        try:
            return grade_submission(kit, submission, student, limits, landlock, keep, exporter, trust_stubs)
        finally:
            exporter.close()
    started = time.monotonic()
    limits = {**DEFAULT_LIMITS, **kit.manifest.get("limits", {}), **(limits or {})}
    deadline = started + float(limits["total_timeout"])
    manifest = kit.manifest
    student = student or submission.stem
    by_task: dict[str, list[str]] = {task: [] for task in manifest["tasks"]}
    for test in manifest["tests"]:
        by_task[test["task"]].append(test["nodeid"])
    outcome: dict[str, tuple] = {}  # nodeid -> (passed, message[, skipped])
    flags: list[str] = []
    info: dict = {}
    fatal, source_name, ignored, kinds, kept = "", "", [], {}, []
    isolated = manifest.get("reference") is not None
    try:
        source, ignored = find_source(submission, manifest["module_name"])
        source_name = source.name
    except TitoError as err:
        fatal = str(err)
    else:
        def run(keep_tasks, select):
            variant = _grade_variant(kit, exporter, source, keep_tasks, select, limits, deadline, landlock,
                                     flags, info, keep)
            if variant.sandbox is not None:
                kept.append(str(variant.sandbox))
            return variant

        def not_stub(found):
            stubs = {t for t, kind in found.items() if kind == "stub"} if trust_stubs else set()
            return [t["nodeid"] for t in manifest["tests"] if t["task"] not in stubs]

        whole = run("attempted" if isolated and trust_stubs else "*", not_stub)
        kinds = whole.kinds
        outcome.update(whole.outcome)
        if trust_stubs:
            for task, kind in kinds.items():
                if kind == "stub":
                    for nodeid in by_task.get(task, []):
                        outcome[nodeid] = (False, f"not started: task {task} is still the released stub")
        swappable = {t for t, kind in kinds.items() if kind == "attempted" or (kind == "stub" and not trust_stubs)}
        redo = []
        if isolated and (whole.error or whole.fatal or swappable):
            for task in manifest["tasks"]:
                if kinds.get(task) == "stub" and trust_stubs:
                    continue
                failing = [n for n in by_task[task] if not outcome.get(n, (False,))[0]]
                # alone, the task meets the same code as before unless another task was swapped out
                if failing and (whole.error or whole.fatal or swappable - {task}):
                    redo.append((task, failing))
        exported_alone = ran_alone = False
        for task, failing in redo:
            if time.monotonic() >= deadline:
                fatal = fatal or "the grading time limit ran out"
                break
            alone = run([task], lambda found, failing=failing: failing)
            if alone.error:
                for nodeid in failing:
                    outcome[nodeid] = (False, alone.error if alone.error.startswith(source.name) else
                                       f"{source.name}: {alone.error}")
                continue
            exported_alone = True
            ran_alone = ran_alone or not alone.fatal
            for nodeid in failing:
                verdict = alone.outcome.get(nodeid, (False, alone.fatal or "not run"))
                if not verdict[0] and verdict[1].startswith("NameError") and nodeid in outcome:
                    # alone it lacks a name that the student defined in another task's cell: the
                    # swap, not the task, failed; the verdict with their own cells stands
                    continue
                outcome[nodeid] = verdict
        if whole.error:
            if exported_alone:
                flags.append(f"{source.name} does not export as a whole ({whole.error}); each task was graded "
                             "alone, with the reference solution in place of the other tasks")
            else:
                fatal = f"{source.name}: {whole.error}"
        elif whole.fatal and not ran_alone:
            fatal = whole.fatal
        elif whole.fatal:
            flags.append(f"graded as a whole, {whole.fatal}; each task was then graded alone")
        missing = [t for t, kind in kinds.items() if kind == "missing"]
        if missing and isolated:
            flags.append(f"no cell of task(s) {', '.join(missing)} was found (by nbgrader grade_id or by the "
                         "functions it defines): graded as submitted, together with the rest of the notebook")
    collect_errors = info.get("collect_errors", {})
    results = _results(manifest, outcome, flags, fatal, collect_errors, kinds)
    results["execution_time"] = round(time.monotonic() - started, 2)
    if source_name:
        note = f"graded file: {source_name}" + (f" (ignored: {', '.join(ignored)})" if ignored else "")
        results["output"] = note + "\n" + results["output"]
    results["extra_data"].update(student=student, submission=source_name, ignored=ignored,
                                 sandbox=info.get("sandbox", ""), kept=" ".join(kept),
                                 started=round(time.time() - (time.monotonic() - started), 3),
                                 finished=round(time.time(), 3))
    return results


# ---------------------------------------------------------------------------------------------
# Feedback a student can act on


_ADDRESS = re.compile(r"<(function|built-in function|bound method|class|module)? ?([\w.<>]+)(?: of [^>]*)? at 0x[0-9a-fA-F]+>")
_ANY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_WHERE = re.compile(r"\n@where (.*)$", re.S)
MAX_FAILURE_LINES = 4


def _shorten_arrays(text: str, longest: int = 60) -> str:
    """`array([[...], ...])` reprs longer than `longest` characters become `array([...])`."""
    out, start = [], 0
    while True:
        at = text.find("array(", start)
        if at < 0:
            return "".join(out) + text[start:]
        depth, end = 0, None
        for i in range(at + 5, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        end = end or len(text)
        shown = text[at:end] if end - at <= longest else "array([...])"
        out.append(text[start:at] + shown)
        start = end


def clean_message(message: str) -> str:
    """A failure in at most a few short lines: no memory addresses, no long array dumps."""
    text = _ADDRESS.sub(lambda m: m.group(2), message)
    text = _ANY_ADDRESS.sub("", text)
    text = _shorten_arrays(text.replace("\\n", "\n"))
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    kept: list[str] = []
    for line in lines:
        if len(kept) == MAX_FAILURE_LINES:
            kept.append("...")
            break
        kept.append(line if len(line) <= 160 else line[:150] + " ... (cut)")
    return "\n".join(kept)


def _student_text(source: Path) -> list[tuple[str, list[str]]]:
    """The submission as (label, lines) blocks: the whole .py, or each code cell of an .ipynb."""
    try:
        if source.suffix == ".ipynb":
            cells = json.loads(source.read_text(encoding="utf-8")).get("cells", [])
            blocks = []
            for number, cell in enumerate(cells, 1):
                text = cell.get("source", "")
                text = "".join(text) if isinstance(text, list) else str(text)
                if cell.get("cell_type") == "code":
                    blocks.append((f"{source.name}, cell {number}, line ", text.split("\n")))
            return blocks
        return [(f"{source.name}:", source.read_text(encoding="utf-8").split("\n"))]
    except (OSError, ValueError, AttributeError):
        return []


def _source_line(exported: list[str], line: int, blocks: list[tuple[str, list[str]]]) -> str | None:
    """Where line `line` of an exported package file came from in the student's file."""
    if not 1 <= line <= len(exported):
        return None
    start = line - 1
    while start > 0 and not exported[start - 1].startswith("# %% "):
        start -= 1  # the first line of the cell this line was exported from
    chunk = exported[start:line]
    for label, lines in blocks:
        for i in range(len(lines) - len(chunk) + 1):
            if lines[i:i + len(chunk)] == chunk:
                return f"{label}{i + len(chunk)}"
    return None


def _locate_failures(outcome: dict, sandbox: Path, source: Path, manifest: dict) -> None:
    """Replace the child's raw location tags by the student's file and line (or the test's)."""
    blocks = None
    files: dict[str, list[str]] = {}
    for nodeid, verdict in list(outcome.items()):
        passed, message, *rest = verdict
        match = _WHERE.search(message or "")
        if not match:
            continue
        where = dict(part.split("=", 1) for part in match.group(1).split() if "=" in part)
        found = ""
        for place in reversed(where.get("student", "").split(",")):  # the deepest frame that is theirs
            relative, _, line = place.rpartition(":")
            if not relative or not line.isdigit():
                continue
            if relative not in files:
                path = sandbox / "pkg" / manifest["lib"] / relative
                inside = path.resolve().is_relative_to((sandbox / "pkg").resolve())
                files[relative] = path.read_text(encoding="utf-8").split("\n") if inside and path.is_file() else []
            if blocks is None:
                blocks = _student_text(source)
            mapped = _source_line(files[relative], int(line), blocks)
            if mapped:
                found = f"in your code at {mapped}"
                break
        if not found and "test" in where:
            found = f"checked at {where['test']}"
        outcome[nodeid] = (passed, message[:match.start()] + (f" [{found}]" if found else ""), *rest)


def _not_run_reason(nodeid: str, collect_errors: dict) -> str:
    for where, message in collect_errors.items():
        if nodeid.startswith(where):
            lines = [line for line in message.splitlines() if line.strip()]
            return f"not run: its test file failed to load ({lines[-1][:300] if lines else 'error'})"
    return "not run"


def _row(name: str, task: str, number: int, tests: list[dict], points: float, hidden: bool) -> dict:
    passed = sum(t["passed"] for t in tests)
    score = round(points * passed / len(tests), 2)
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
                text = clean_message(test["message"] or "failed").replace("\n", "\n    ")
                failures.setdefault((base, text), []).append(case.rstrip("]"))
        for (base, text), cases in failures.items():
            shown = f"{base}[{', '.join(cases)}]" if any(cases) else base
            lines.append(f"- {shown}: {text}")
        output = "\n".join(lines)
    return {"name": name, "number": number, "score": score, "max_score": round(points, 2),
            "status": "passed" if passed == len(tests) else "failed", "output": output,
            "visibility": "after_published" if hidden else "visible", "tags": [task]}


def _results(manifest: dict, outcome: dict, flags: list, fatal: str, collect_errors: dict,
             kinds: dict | None = None) -> dict:
    """Gradescope's results.json: one row per task (and one for its hidden tests, if any)."""
    kinds = kinds or {}
    per_test, skipped = [], []  # a skipped test earns nothing; it is only reported apart from failures
    by_task: dict[str, list[dict]] = {task: [] for task in manifest["tasks"]}
    for test in manifest["tests"]:
        passed, message, *rest = outcome.get(test["nodeid"], (False, fatal or _not_run_reason(test["nodeid"], collect_errors)))
        name = test["nodeid"].split("/")[-1]  # test_file.py::test_name[case]
        if rest and rest[0]:
            skipped.append(f"{test['task']}: {name} ({clean_message(message or '')[:200]})")
        entry = {"name": name, "nodeid": test["nodeid"], "passed": bool(passed), "hidden": test["hidden"],
                 "message": "" if passed else message}
        by_task[test["task"]].append(entry)
        per_test.append({**entry, "task": test["task"]})
    rows, task_scores = [], {}
    visible_score = visible_max = 0.0
    for task, points in manifest["tasks"].items():
        tests = by_task[task]
        if not tests:
            task_scores[task] = 0.0
            continue
        shown = [t for t in tests if not t["hidden"]]
        hidden = [t for t in tests if t["hidden"]]
        # a task's points are split over its tests; the hidden row takes what rounding leaves
        shown_points = round(points * len(shown) / len(tests), 2) if hidden else points
        if shown:
            rows.append(_row(task, task, len(rows) + 1, shown, shown_points, False))
            visible_score += rows[-1]["score"]
            visible_max += shown_points
        if hidden:
            rows.append(_row(f"{task} (hidden tests)", task, len(rows) + 1, hidden, points - shown_points, True))
        task_scores[task] = round(sum(r["score"] for r in rows if r["tags"] == [task]), 2)
        if kinds.get(task) == "stub":
            rows[-1 - bool(hidden)]["output"] = "not started: still the released stub"
    score = round(sum(task_scores.values()), 2)
    lines = [f"{manifest['module']}: {score:g} / {manifest['total']:g} points"]
    if any(t["hidden"] for t in manifest["tests"]):
        lines = [f"{manifest['module']}: {round(visible_score, 2):g} / {round(visible_max, 2):g} points on the visible "
                 f"tests; the hidden tests' {round(manifest['total'] - visible_max, 2):g} points are shown when grades "
                 "are published"]
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
        "tests": rows,
        "extra_data": {"module": manifest["module"], "tasks": task_scores, "flags": flags, "problem": fatal,
                       "skipped": skipped, "kinds": kinds, "tests": per_test},
    }


# ---------------------------------------------------------------------------------------------
# Printing and batches


def print_results(results: dict, show_hidden: bool = True) -> None:
    """One line per task, in exercise order, then each failing task's failures."""
    extra = results["extra_data"]
    ignored = extra.get("ignored") or []
    print(f"{extra.get('student', '')}  {extra.get('submission', '')}  ({results['execution_time']:.1f}s,"
          f" sandbox: {extra.get('sandbox') or 'not started'})")
    if ignored:
        print(f"  ignored: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}")
    rows = [r for r in results["tests"] if show_hidden or r["visibility"] == "visible"]
    width = max([len(r["name"]) for r in rows] + [10])
    for row in rows:
        hidden = " (hidden)" if row["visibility"] != "visible" else ""
        mark = "ok  " if row["status"] == "passed" else "FAIL"
        print(f"  {mark} {row['name']:<{width}} {row['score']:>5g} / {row['max_score']:<5g}{hidden}")
        if row["status"] != "passed":
            for line in row["output"].splitlines()[1:] or row["output"].splitlines()[:1]:
                print(f"         {line[:200]}")
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


def gradescope_submitters(folder: Path) -> dict[str, dict[str, str]]:
    """Gradescope's "Export Submissions" zip: one `submission_<id>` folder per submission and a
    `submission_metadata.yml` naming its submitters; folder -> {Name, SID, Email}."""
    path = folder / "submission_metadata.yml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TitoError(f"{path}: not readable as Gradescope's submission metadata ({exc})") from None
    found = {}
    for name, entry in (data.items() if isinstance(data, dict) else []):
        entry = entry if isinstance(entry, dict) else {}
        people = entry.get(":submitters") or entry.get("submitters") or []
        people = [p for p in people if isinstance(p, dict)] if isinstance(people, list) else []

        def field(key):
            return "; ".join(str(p.get(f":{key}", p.get(key, "")) or "") for p in people)

        found[_safe_name(str(name))] = {"Name": field("name"), "SID": field("sid"), "Email": field("email")}
    return found


def load_roster(path: Path, names: list[str], key: str | None = None) -> tuple[list[str], dict[str, dict], str]:
    """An LMS roster or gradebook export (CSV with a header): its columns, the row of each
    submission folder, and the column that matched them (`key`, or the one matching most names)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in (reader.fieldnames or []) if c]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TitoError(f"{path}: cannot read the roster ({exc})") from None
    if not columns:
        raise TitoError(f"{path}: the roster needs a header row naming its columns (e.g. SID, Email, Name)")
    if key is not None and key not in columns:
        raise TitoError(f"{path}: no column {key!r}; columns: {', '.join(columns)}")
    wanted = {n.lower() for n in names}

    def matches(column):
        return sum(_safe_name(str(r.get(column) or "")).lower() in wanted for r in rows)

    key = key or max(columns, key=matches)
    if not matches(key):
        raise TitoError(f"{path}: no column of the roster holds the submissions' names (e.g. {names[0]}); "
                        "name the folders after a roster column, or pass --roster-key")
    by_name = {_safe_name(str(r.get(key) or "")).lower(): {c: r.get(c) or "" for c in columns} for r in rows}
    return columns, by_name, key


def grade_batch(kit: Kit, folder: Path, out: Path, jobs: int, limits: dict | None = None,
                landlock: bool = True, quiet: bool = False, assignment: str | None = None,
                roster: Path | None = None, roster_key: str | None = None) -> list[dict]:
    entries = submissions_in(folder)
    if not entries:
        raise TitoError(f"{folder} holds no submissions (.py or .ipynb files, or one folder per student)")
    identities: tuple[list[str], dict[str, dict]] = ([], {})
    submitters = gradescope_submitters(folder)
    if submitters:
        identities = (["Name", "SID", "Email"], {n.lower(): row for n, row in submitters.items()})
    roster_rows: list[dict] = []
    if roster is not None:  # read before grading: a bad roster fails in a second, not after an hour
        columns, by_name, _ = load_roster(roster, [n for n, _ in entries], roster_key)
        identities = (columns, by_name)
        roster_rows = list(by_name.items())
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
    write_gradebook(kit, out / "gradebook.csv", entries, all_results, assignment or kit.module,
                    identities, roster_rows, quiet)
    if not quiet:
        wall = time.monotonic() - started
        print(f"graded {len(entries)} submissions in {wall:.1f}s with {jobs} job(s): "
              f"{out / 'gradebook.csv'}, {results_dir}/<student>.json")
    return [all_results[name] for name, _ in entries]


def write_gradebook(kit: Kit, path: Path, entries: list, all_results: dict, assignment: str,
                    identities: tuple[list[str], dict[str, dict]], roster_rows: list, quiet: bool) -> None:
    """gradebook.csv: one row per submission (and per roster student without one), with the
    assignment, the identifier columns of the roster (or of Gradescope's export), and per-task points."""
    tasks = list(kit.manifest["tasks"])
    columns, by_name = identities
    seen = set()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["assignment", "student", *columns, "submission", "score", "max_score", *tasks,
                         "problem", "notes"])
        for name, _ in entries:
            r = all_results[name]
            extra = r["extra_data"]
            who = by_name.get(name.lower(), {})
            seen.add(name.lower())
            writer.writerow([assignment, name, *[who.get(c, "") for c in columns], extra.get("submission", ""),
                             r["score"], r["max_score"], *[extra["tasks"].get(t, 0) for t in tasks],
                             extra.get("problem", ""), " | ".join(extra.get("flags", []))[:500]])
        for name, who in roster_rows:
            if name not in seen:
                writer.writerow([assignment, "", *[who.get(c, "") for c in columns], "", 0, kit.manifest["total"],
                                 *[0 for _ in tasks], "no submission", ""])
    unmatched = [n for n, _ in entries if by_name and n.lower() not in by_name]
    if unmatched and not quiet:
        print(f"note: {len(unmatched)} submission(s) match no roster row: {', '.join(unmatched[:10])}")


# ---------------------------------------------------------------------------------------------
# Self-check and listing


def mixed_source(source: Path, stubbed: set[str], answer: str | None = None) -> str:
    """The reference module source with the tasks in `stubbed` left as the released stub, or, with
    `answer`, with that line (e.g. a wrong `return None`) where each stub raises."""
    import jupytext

    from .graded import _nbgrader, release_source, stub_line

    solution = jupytext.read(source, fmt="py:percent")
    stub = jupytext.reads(release_source(source, stub=True), fmt="py:percent")
    for mine, released in zip(solution.cells, stub.cells):
        meta = _nbgrader(mine)
        task = meta.get("grade_id")
        if meta.get("solution") and task in stubbed:
            mine.source = released.source if answer is None else released.source.replace(stub_line(task), answer)
    return jupytext.writes(solution, fmt="py:percent")


def notebook_points(source: Path) -> dict[str, float]:
    """Points of each task's graded test cells in the notebook's nbgrader metadata (grade_id
    `<task>-test`), which nbgrader reads; points.toml must agree with them."""
    import jupytext

    from .graded import _nbgrader

    points: dict[str, float] = {}
    for cell in jupytext.read(source, fmt="py:percent").cells:
        meta = _nbgrader(cell)
        grade_id = str(meta.get("grade_id", ""))
        if meta.get("grade") and grade_id.endswith("-test"):
            task = grade_id[: -len("-test")]
            points[task] = points.get(task, 0.0) + float(meta.get("points", 0))
    return points


def _stub_tests_passing(kit: Kit, exporter: "Exporter", source: Path, task: str) -> list[str]:
    """Run `task`'s graded tests against `source` as it is; the names of those that pass."""
    limits = {**DEFAULT_LIMITS, **kit.manifest.get("limits", {})}
    deadline = time.monotonic() + float(limits["total_timeout"])
    nodeids = [t["nodeid"] for t in kit.manifest["tests"] if t["task"] == task]
    variant = _grade_variant(kit, exporter, source, "*", lambda kinds: nodeids, limits, deadline, True, [], {}, False)
    if variant.error:
        return []
    return [n.split("/")[-1] for n in nodeids if variant.outcome.get(n, (False,))[0]]


def self_check(root: Path, module, quiet: bool = False, jobs: int = 2) -> bool:
    """Prove the grading discriminates, task by task: the solution scores full marks and the
    released stub 0 (its stubs' tests really run); for every task T, the solution with only T
    stubbed scores exactly the total minus T's points (T's tests run against the stub, every other
    task is graded alone) and the stub with only T solved scores exactly T's points. Also: the
    notebook's nbgrader points agree with points.toml."""
    from .graded import solution_tasks

    problems: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tito-selfcheck-") as tmp:
        kit = build_kit(root, module, Path(tmp) / "kit")
        tasks = kit.manifest["tasks"]
        total = kit.manifest["total"]
        every = set(tasks)
        # (label, stubbed tasks, expected score, trust_stubs)
        cases = [("solution", set(), total, True), ("stub", every, 0.0, False)]
        cases += [(f"solution without {t}", {t}, total - p, True) for t, p in tasks.items()]
        cases += [(f"stub with only {t}", every - {t}, p, True) for t, p in tasks.items()]
        files = {}
        for number, (label, stubbed, _, _) in enumerate(cases):
            path = Path(tmp) / f"case{number}" / module.source.name
            path.parent.mkdir()
            path.write_text(mixed_source(module.source, stubbed), encoding="utf-8")
            files[label] = path
        exporter = Exporter(kit)
        try:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                futures = {label: pool.submit(grade_submission, kit, files[label], label, None, True, False,
                                              exporter, trust)
                           for label, _, _, trust in cases}
                # Grading scores a released stub 0 without running it; that is sound only if each
                # task's own tests fail when it alone is the stub, so run them so, every one.
                proofs = {task: pool.submit(_stub_tests_passing, kit, exporter, files[f"solution without {task}"], task)
                          for task in tasks}
                results = {label: future.result() for label, future in futures.items()}
                for task, future in proofs.items():
                    for name in future.result():
                        problems.append(f"with only {task} stubbed, its test {name} passes: it does not discriminate")
        finally:
            exporter.close()
    for label, stubbed, expected, _ in cases:
        got = results[label]
        if abs(got["score"] - expected) > 0.011:
            wrong = [f"{t} {got['extra_data']['tasks'][t]:g}/{p:g}" for t, p in tasks.items()
                     if abs(got["extra_data"]["tasks"][t] - (0 if t in stubbed else p)) > 0.011]
            first = next((r["output"].splitlines()[-1] for r in got["tests"]
                          if r["tags"][0] in {w.split()[0] for w in wrong} and r["status"] == "failed"), "")
            problems.append(f"{label}: scored {got['score']:g}, expected {expected:g} ({', '.join(wrong)})"
                            + (f"; {first[:200]}" if first else ""))
    solution = results["solution"]
    skipped = solution["extra_data"].get("skipped", [])
    for name in skipped:
        # unchecked, and it would give every submission 0 here: still a failure, named for what it is
        problems.append(f"skipped on the solution, so unchecked (and worth 0 to every submission here): {name}; "
                        "install the course's test requirements")
    for test in results["stub"]["extra_data"]["tests"]:
        if test["passed"]:
            problems.append(f"the released stub passes {test['task']}: {test['name']}: this test does not discriminate")
    notebook_tasks = set(solution_tasks(module.source))
    for task in tasks:
        if task not in notebook_tasks:
            problems.append(f"task {task!r} has points but no solution cell with grade_id {task!r}")
    declared = notebook_points(module.source)
    for task in sorted(set(declared) | set(tasks)):
        if task in declared and abs(declared[task] - tasks.get(task, 0)) > 1e-9:
            problems.append(f"task {task!r}: points.toml gives {tasks.get(task, 0):g} points, the notebook's "
                            f"nbgrader test cell {task}-test gives {declared[task]:g}")
    ok = not problems
    if not quiet:
        n = len(kit.manifest["tests"])
        print(f"{'PASS' if ok else 'FAIL'}  {module.id}: solution {solution['score']:g}/{total:g}, "
              f"stub {results['stub']['score']:g}/{total:g} on {n} graded tests; each of {len(tasks)} tasks "
              f"scored alone ({len(cases)} gradings, {time.monotonic() - started:.0f}s)")
        for problem in problems:
            print(f"      x {problem}")
        for task in sorted(notebook_tasks - set(tasks)):
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
