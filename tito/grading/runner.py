"""The test runner: the instructor's tests and the reference solution, in a trusted process.

`python -B -m tito.grading.runner` (config as JSON on stdin) imports the kit's reference package
and runs the graded tests with pytest. Each task's functions in that package are dispatchers:
during a test of task T, T's functions run in the student's process (student.py), reached through
the wire; every other task's are the reference's. So the tests grade one task at a time, and the
student's code never shares a process with a test, a verdict or the reference. One JSON line per
test goes to `result_fd`; what the student's process prints is kept per test, cut at a limit.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tito.grading import wire

OUTPUT_KEEP = 2000  # characters of a test's printed output kept for the feedback


class StudentProcess:
    """The student's process, started on first use and again after it dies or hangs."""

    def __init__(self, cfg: dict):
        self.cfg, self.proc, self.peer, self.sandbox = cfg, None, None, ""
        self.output, self.output_bytes = bytearray(), 0

    def _drain(self, fd: int, seconds: float) -> bool:
        """Wait for `fd` while keeping the first OUTPUT_KEEP bytes of what the student prints."""
        ready = select.select([fd, self.out], [], [], seconds)[0]
        if self.out in ready and (chunk := os.read(self.out, 1 << 16)):
            self.output_bytes += len(chunk)
            self.output += chunk[:max(0, OUTPUT_KEEP - len(self.output))]
        return fd in ready

    def _drain_all(self) -> None:
        before = -1
        while before != self.output_bytes:
            before = self.output_bytes
            self._drain(self.out, 0)

    def start(self) -> None:
        cfg = self.cfg
        to_student, their_read = os.pipe()
        their_write, from_student = os.pipe()
        out_read, out_write = os.pipe()
        child = {**cfg["student"], "rfd": to_student, "wfd": from_student}
        owner = {}
        needs = (importlib.util.find_spec("numpy").origin, str(Path(cfg["sandbox"]) / "student.py"))
        if os.geteuid() == 0 and cfg["student"].get("user") and others_can_run(sys.executable, *needs):  # Gradescope
            owner = {"user": cfg["student"]["user"], "group": cfg["student"]["user"], "extra_groups": []}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-u", str(Path(cfg["sandbox"]) / "student.py"), json.dumps(child)],
            stdin=subprocess.DEVNULL, stdout=out_write, stderr=out_write, pass_fds=(to_student, from_student),
            cwd=cfg["student"]["work"], env=cfg["env"], start_new_session=True, **owner)
        for fd in (to_student, from_student, out_write):
            os.close(fd)
        self.out = out_read
        os.set_blocking(out_read, False)
        self.peer = wire.Peer(their_write, their_read, serve_reference, safe=True, wait=self._drain)
        # the student's process dumps its stack and exits at the import time limit (faulthandler)
        self.peer.deadline = time.monotonic() + cfg["student"]["import_timeout"] + 5
        try:
            hello = self.peer.receive()
        except wire.WireError:
            self.stop()
            if "Timeout (" in self.text():
                raise ImportHang(self.text()) from None
            last = [line for line in self.text().splitlines() if line.strip()][-1:] or ["no output"]
            raise ImportFailed("SystemExit", f"the process ended while your code was imported ({last[0][:200]})",
                               []) from None
        if hello[0] == "import_error":
            self.stop()
            raise ImportFailed(*hello[1:])
        self.sandbox = hello[1] if len(hello) > 1 else ""

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def call(self, task: str, module: str, name: str, args, kwargs):
        if self.proc is None or self.proc.poll() is not None:
            self.start()  # after a hang or crash: the restart is not the test's time
            STATE["deadline"] = max(STATE["deadline"], time.monotonic() + self.cfg["limits"]["test_timeout"])
        self.peer.deadline = STATE["deadline"]
        try:
            return self.peer.request(("call", task, module, name, args, kwargs))
        except wire.TimedOut:
            self.stop()
            STATE["hung"] = True
            raise Stopped(f"timed out after {self.cfg['limits']['test_timeout']:g} s") from None
        except wire.BadValue as exc:
            self.stop()  # the stream is out of step after a refused value
            raise TypeError(f"{name} returned a value the tests cannot use: {exc}") from None
        except wire.WireError:
            code = self.stop()
            raise Stopped(f"your code ended its process ({describe_exit(code)})") from None
        finally:
            if self.proc is not None:
                self._drain_all()  # it flushed before answering: all it printed is this test's

    def stop(self):
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = self.proc.wait()
        for fd in (self.peer.rfd, self.peer.wfd):
            os.close(fd)
        self._drain_all()  # what it printed before it ended
        os.close(self.out)
        self.proc = None
        return code


def others_can_run(interpreter: str, *files: str) -> bool:
    """Whether an unprivileged user can run `interpreter`, by its path and its target (not if either
    lives under /root or in a venv in a private folder), and read `files` (NumPy, the sandbox)."""
    import stat

    def reach(path: str, bit: int) -> bool:
        p = Path(path)
        return all(q.stat().st_mode & stat.S_IXOTH for q in p.parents) and bool(p.stat().st_mode & bit)

    return all(reach(p, stat.S_IXOTH) for p in (os.path.abspath(interpreter), os.path.realpath(interpreter))) \
        and all(reach(os.path.realpath(f), stat.S_IROTH) for f in files)


def kill_children() -> None:
    """Kill the processes the student's left behind (a child in a session of its own escapes the
    group kill; as orphans they became this process's children), until none is left."""
    tried: set[int] = set()
    while True:
        children = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                    parent = int(handle.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # ended while we looked
            if parent == os.getpid():
                children.append(int(pid))
        if tried.issuperset(children):
            return  # none left, or only what this process may not kill
        tried.update(children)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass


def describe_exit(code) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return {"SIGXCPU": "stopped by the CPU-time limit", "SIGSEGV": "crashed; memory limit?"}.get(name, name)
    return f"exit code {code}: sys.exit or os._exit in your code?"


class ImportFailed(Exception):
    def __init__(self, kind, message, frames):
        super().__init__(f"{kind}: {message}")
        self.frames = frames


class ImportHang(Exception):
    pass


class Stopped(Exception):
    """The student's process timed out or ended during a test: the message says which."""


STATE: dict = {"task": None, "deadline": None, "hung": False}
STUDENT: StudentProcess | None = None
REFERENCE: dict = {}  # (module, name) -> the reference's function


def serve_reference(call):
    """The student's code called another task: the reference answers."""
    _, task, module, name, args, kwargs = call
    return REFERENCE[module, name](*args, **kwargs)


def install_dispatchers(tasks: dict) -> None:
    """Route each task's functions: to the student's process during that task's tests."""
    def dispatcher(task, module, name, original):
        def dispatch(*args, **kwargs):
            if STATE["task"] == task:
                return STUDENT.call(task, module, name, args, kwargs)
            return original(*args, **kwargs)
        return functools.wraps(original)(dispatch)

    REFERENCE.update(wire.route(tasks, dispatcher))


def _where(excinfo, tests_root: str) -> dict:
    exc = excinfo.value
    if hasattr(exc, "student_frames"):
        return {"student": exc.student_frames}
    for entry in reversed(excinfo.traceback):
        path = str(entry.path)
        if path.startswith(tests_root):
            return {"test": f"{os.path.basename(path)}:{entry.lineno + 1}"}
    return {}


def _message(excinfo) -> str:
    exc = excinfo.value
    if hasattr(exc, "remote_type"):
        return f"{exc.remote_type}: {exc}"
    if isinstance(exc, Stopped):
        return str(exc)
    return excinfo.exconly()


def _tasks(item) -> list[str]:
    return [mark.args[0] for mark in item.iter_markers("task") if mark.args]


class Plugin:
    def __init__(self, cfg: dict, write):
        self.cfg, self.write = cfg, write
        self.tests_root = str(Path(cfg["tests"]).resolve().parent) + os.sep
        self.hung: set[str] = set()
        self.found: list = []
        self.errors: list = []

    def pytest_collection_modifyitems(self, items):
        for item in items:
            self.found.append({"nodeid": item.nodeid, "tasks": _tasks(item), "file": str(item.path)})

    def pytest_collectreport(self, report):
        if report.failed:
            lines = [line for line in str(report.longrepr).splitlines() if line.strip()]
            self.errors.append(f"{report.nodeid}: {lines[-1] if lines else 'error'}")

    def pytest_runtest_logstart(self, nodeid, location):
        STATE.update(hung=False, deadline=time.monotonic() + self.cfg["limits"]["test_timeout"])
        STUDENT.output, STUDENT.output_bytes = bytearray(), 0
        self.verdict = {"nodeid": nodeid, "passed": True, "skipped": False, "message": "", "where": {}}
        self.started = time.monotonic()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):  # the student's time starts with the test, after its fixtures
        STATE["deadline"] = time.monotonic() + self.cfg["limits"]["test_timeout"]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        task = STATE["task"] = (_tasks(item) or [None])[0]
        if task in self.hung:
            self.verdict.update(passed=False, message=f"not run: an earlier test of task {task} timed out")
            pytest.skip("an earlier test of its task timed out")

    def pytest_runtest_makereport(self, item, call):
        if call.excinfo is None or not self.verdict["passed"]:
            return
        if call.excinfo.errisinstance(pytest.skip.Exception):
            self.verdict.update(passed=False, skipped=True, message=str(call.excinfo.value))
        else:
            self.verdict.update(passed=False, message=_message(call.excinfo),
                                where=_where(call.excinfo, self.tests_root))

    def pytest_runtest_logfinish(self, nodeid, location):
        if STATE["hung"]:
            self.hung.add(STATE["task"])
        self.write({"event": "test", **self.verdict, "output": STUDENT.text(), "output_bytes": STUDENT.output_bytes,
                    "seconds": round(time.monotonic() - self.started, 2)})
        STATE["task"] = None


def main() -> int:
    cfg = json.loads(sys.stdin.read())
    out = os.fdopen(cfg["result_fd"], "w", buffering=1)

    def write(event):
        out.write(json.dumps(event) + "\n")

    try:  # no other process of this user may read this one's memory (the reference is in it)
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: what the student's leave is ours
    except (OSError, AttributeError):
        pass
    global STUDENT
    STUDENT = StudentProcess(cfg)
    STUDENT.out = -1
    install_dispatchers({task: [tuple(n) for n in names] for task, names in cfg["task_names"].items()})
    plugin = Plugin(cfg, write)
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--strict-markers", "-c", cfg["ini"],
            "--rootdir", cfg["root"]]
    args += [f"-p{name}" for name in cfg.get("plugins", [])]
    if "_hypothesis_pytestplugin" in cfg.get("plugins", []):
        args.append("--hypothesis-seed=0")  # a regrade draws the same examples and gives the same feedback
    if cfg["mode"] == "collect":
        code = pytest.main(args + ["--collect-only", cfg["tests"]], plugins=[plugin])
        write({"event": "collected", "tests": plugin.found, "code": int(code), "errors": plugin.errors})
        return 0
    try:
        STUDENT.start()
    except ImportFailed as exc:
        write({"event": "import_error", "message": str(exc), "frames": exc.frames, "output": STUDENT.text()})
        return 0
    except ImportHang as exc:
        write({"event": "import_hang", "output": str(exc)})
        return 0
    write({"event": "imported", "output": STUDENT.text(), "output_bytes": STUDENT.output_bytes,
           "sandbox": STUDENT.sandbox})
    pytest.main(args + cfg["nodeids"], plugins=[plugin])
    STUDENT.stop()
    write({"event": "done"})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_children()  # on every path: what a child forked at import started outlives a failed import too
