"""The student's process: imports the student's exported code and runs it when the tests ask.

Started by the test runner as `python -I -B -u student.py CONFIG` from the sandbox, beside a copy
of wire.py, with the standard library and NumPy only. It never holds a test or the reference
solution: calls to another task's functions go back to the runner, which answers with the
reference's result. Before it imports anything of the student's, it caps its memory and CPU time
and, with Landlock (Linux >= 5.13), confines itself: read the interpreter, system libraries and
the sandbox; write only its work folder; no TCP, no signals out of its own processes. When the
grader runs as root (Gradescope), the runner starts it as an unprivileged user as well.
"""
from __future__ import annotations

import faulthandler
import functools
import importlib
import json
import os
import sys


def set_limits(memory_mb: int, cpu_seconds: int) -> None:
    import resource

    for which, value in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_seconds),
                         (resource.RLIMIT_FSIZE, 64 << 20), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def landlock(write_dirs: list[str], read_paths: list[str]) -> str:
    """Restrict this process and its children with Landlock; returns what was applied."""
    import ctypes
    import platform

    if platform.system() != "Linux":
        return "unavailable (not Linux)"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    create, add_rule, restrict = 444, 445, 446  # same numbers on x86_64 and aarch64
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return f"unavailable ({os.strerror(ctypes.get_errno())})"
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    net = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP handled and never allowed
    scoped = 0b11 if abi >= 6 else 0  # no abstract unix sockets, no signals out of the domain

    class Ruleset(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = Ruleset(fs, net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return f"unavailable ({os.strerror(ctypes.get_errno())})"
    try:
        for paths, rights in ((read_paths, (1 << 2) | (1 << 3)), (write_dirs, fs)):  # READ_FILE|READ_DIR; all
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                rule = PathBeneath(rights if os.path.isdir(path) else rights & 0b110, fd)
                failed = libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                                      ctypes.c_uint32(0)) < 0
                os.close(fd)
                if failed:
                    return f"unavailable (rule for {path}: {os.strerror(ctypes.get_errno())})"
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            return f"unavailable ({os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    return f"landlock abi {abi}"


def read_roots(sandbox: str) -> list[str]:
    """What the interpreter needs to read: its own files and the system's libraries."""
    import site
    import sysconfig

    roots = {sandbox, sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib64", "/bin",
             "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/urandom", "/proc/self"}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    roots.update(getattr(site, "getsitepackages", lambda: [])())
    return sorted({os.path.realpath(r) for r in roots if os.path.exists(r)})


def main(cfg: dict) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import wire  # beside this file in the sandbox

    set_limits(int(cfg["memory_mb"]), int(cfg["cpu_seconds"]))
    os.chdir(cfg["work"])
    import numpy  # noqa: F401 - imported before Landlock: it reads files under the interpreter only anyway

    applied = landlock([cfg["work"]], read_roots(cfg["sandbox"])) if cfg["landlock"] else "off (--no-landlock)"
    sys.path[:] = [cfg["pkg"]] + [p for p in sys.path if p.startswith((sys.prefix, sys.base_prefix, "/usr"))]
    wire.STUDENT_FILES[:] = [os.path.realpath(f) for f in cfg["student_files"]] + cfg["student_files"]
    peer = wire.Peer(cfg["rfd"], cfg["wfd"], None, safe=False)
    current = {"task": None}
    faulthandler.enable()
    faulthandler.dump_traceback_later(cfg["import_timeout"], exit=True)
    try:
        modules = {name: importlib.import_module(name) for name in cfg["modules"]}
    except BaseException as exc:  # noqa: BLE001 - whatever their module raises at import
        faulthandler.cancel_dump_traceback_later()
        peer.send(("import_error",) + wire.describe_error(exc))
        return 1
    faulthandler.cancel_dump_traceback_later()

    def dispatcher(task: str, module: str, name: str, original):
        def call(*args, **kwargs):
            if current["task"] != task:  # another task: the reference answers, in the runner
                return peer.request(("call", task, module, name, args, kwargs))
            if not callable(original):
                raise NameError(f"{name} is not defined in your notebook (task {task})")
            return original(*args, **kwargs)
        return functools.wraps(original)(call) if callable(original) else call

    wire.route(cfg["tasks"], dispatcher)

    def serve(call):
        _, task, module, name, args, kwargs = call
        current["task"] = task
        try:
            return getattr(modules[module], name)(*args, **kwargs)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    peer.serve = serve
    peer.send(("ready", f"landlock: {applied}; user: {os.geteuid()}"))
    while True:
        try:
            message = peer.receive()
        except wire.BadValue as exc:  # the message was read whole: answer it with the error
            peer.send(("raise", "TypeError", f"the arguments cannot be passed to your code: {exc}", []))
            continue
        except wire.WireError:
            return 0
        peer.answer(message)


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
