"""The grading child: runs the instructor's tests against a student's package, in a sandbox.

This file runs as a standalone script (`python -I grade_child.py run|collect`) inside the
grading sandbox; it imports only the standard library, pytest and numpy, so it works from a
Gradescope bundle as well as from the course repository. The parent (`tito.grade`) starts it
with a clean environment and reads its verdicts from a pipe.

Trust model. The parent never believes an exit code, a file or a printed line: a test counts
as passed only if this harness sends an `end` message for it with `passed`, signed (HMAC) with a
key the parent handed over on stdin before any student code ran, numbered in increasing order.
Student code shares this process, so the defences are layered:

- process limits: address space, CPU time, file size (set here, before anything else); the
  parent adds wall-clock limits per test and per submission and kills the process group;
- Landlock (Linux >= 5.13), applied before the student's module is imported: the process may
  write only in its work folder, read only the interpreter, system libraries and the sandbox,
  execute nothing, open no TCP connection and signal no process outside itself;
- an audit hook (PEP 578, cannot be removed) that refuses, whenever student code is on the
  stack: writing outside the work folder, processes (fork/exec/spawn/kill), sockets, ctypes,
  tracing, and forging code objects; and, when student code asks directly: frames (tracebacks,
  generators, sys._getframe) and the garbage collector's view of other objects;
- the signing key lives only in a generator's frame, unreachable without those refused
  operations, and the generator signs only for this file's own functions, with no student
  frame below them;
- the pass/fail of a test comes from this file calling the test function itself and seeing it
  return, not from pytest's reports (which a registered plugin could rewrite);
- integrity checks: the functions and classes of numpy, pytest, the standard library, the
  trusted tinytorch modules and the test modules are snapshotted before student code runs;
  whatever student code rebinds is put back, after every call into student code and around
  every test, and the test during which it happened fails; so do new threads, signal
  handlers, timers and pytest plugins;
- values crossing from student code into a test (return values, and arguments it may have
  mutated) are checked: numpy arrays of object dtype, `unittest.mock` objects and objects whose
  comparison/conversion dunders come from student code (unless the reference solution's class
  defines them too) are refused, so an object that "equals anything" cannot pass a test.

What this cannot stop: student code that deliberately reverse-engineers this harness's
in-memory state through a path none of the checks above sees. Every such path we know of needs
one of the refused operations; anything refused is recorded and fails the test.
"""
from __future__ import annotations

import json
import os
import sys

PROTOCOL = 1

# Names whose presence on a student class (or an object it returns) would let it decide how
# the test's comparisons come out.
CONTROL_DUNDERS = frozenset({
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__",
    "__float__", "__int__", "__index__", "__complex__", "__array__", "__array_ufunc__",
    "__array_function__", "__array_interface__", "__array_struct__", "__array_priority__",
    "__getattr__", "__getattribute__", "__instancecheck__", "__subclasscheck__", "__class__",
    "__contains__", "__abs__", "__round__", "__trunc__", "__floor__", "__ceil__", "__hash__",
    "__del__",
})
PROTECTED_PREFIXES = (
    "builtins", "numpy", "pytest", "_pytest", "pluggy", "math", "cmath", "operator", "functools",
    "importlib", "hmac", "hashlib", "json", "os", "posixpath", "io", "re", "signal", "threading",
    "inspect", "traceback", "types", "copy", "collections", "abc", "contextlib", "unittest",
    "random", "statistics", "decimal", "fractions", "numbers", "itertools", "difflib", "pprint",
    "tinytorch",
)
HOT_MODULES = ("builtins", "numpy", "numpy.testing", "pytest", "math", "operator")
# The modules behind the helpers tests compare with are hot too. They are found from these public
# names at run time: pytest and numpy move their private modules between releases (pytest 9.2
# moved approx out of _pytest.python_api), so no private module name is written down here.
HOT_HELPERS = {
    "pytest": ("approx", "raises", "warns", "deprecated_call", "fail", "skip", "xfail", "importorskip",
               "CallInfo", "Function"),
    "numpy.testing": ("assert_array_equal", "assert_allclose", "assert_equal", "assert_array_almost_equal",
                      "assert_array_less", "assert_raises"),
}


def hot_module_names() -> set:
    """HOT_MODULES plus the modules that define (or look names up for) the public helpers."""
    import inspect

    names = {name for name in HOT_MODULES if name in sys.modules}
    for owner, attrs in HOT_HELPERS.items():
        module = sys.modules.get(owner)
        for attr in attrs:
            helper = getattr(module, attr, None)
            if helper is None:
                continue
            try:
                unwrapped = inspect.unwrap(helper)
            except ValueError:
                unwrapped = helper
            for home in (getattr(helper, "__module__", None), getattr(unwrapped, "__module__", None),
                         (getattr(unwrapped, "__globals__", None) or {}).get("__name__")):
                if isinstance(home, str) and home in sys.modules:
                    names.add(home)
    return names


# ---------------------------------------------------------------------------------------------
# Process limits and Landlock (all before any student code)


def set_limits(memory_mb: int, cpu_seconds: int, file_mb: int = 64) -> None:
    import resource

    def cap(which, value):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    cap(resource.RLIMIT_AS, int(memory_mb) * 1024 * 1024)
    cap(resource.RLIMIT_CPU, int(cpu_seconds))
    cap(resource.RLIMIT_FSIZE, int(file_mb) * 1024 * 1024)
    cap(resource.RLIMIT_CORE, 0)


def landlock(write_dirs: list[str], read_paths: list[str], rw_files: list[str]) -> str:
    """Restrict this process (and its children) with Landlock; returns a description."""
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
    fs = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
    if abi >= 2:
        fs |= 1 << 13  # REFER
    if abi >= 3:
        fs |= 1 << 14  # TRUNCATE
    if abi >= 5:
        fs |= 1 << 15  # IOCTL_DEV
    net = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP: no rule, so none allowed
    scoped = 0b11 if abi >= 6 else 0  # no abstract unix sockets or signals out of the domain

    class Ruleset(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    attr = Ruleset(fs, net, scoped)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return f"unavailable ({os.strerror(ctypes.get_errno())})"
    read = (1 << 2) | (1 << 3)  # READ_FILE | READ_DIR
    file_rw = (1 << 1) | (1 << 2) | ((1 << 14) if abi >= 3 else 0)
    try:
        def allow(path, rights):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                rule = PathBeneath(rights, fd)
                if libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(fd)

        for path in read_paths:
            allow(path, read)
        for path in rw_files:
            allow(path, file_rw)
        for path in write_dirs:
            allow(path, fs)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return f"unavailable (no_new_privs: {os.strerror(ctypes.get_errno())})"
        if libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            return f"unavailable ({os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    return f"landlock abi {abi}"


def _read_roots(sandbox: str) -> list[str]:
    import site
    import sysconfig

    roots = {sandbox, sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib32",
             "/lib64", "/bin", "/etc"}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - virtualenv's old site.py
        pass
    return sorted(os.path.realpath(r) for r in roots if os.path.exists(r))


# ---------------------------------------------------------------------------------------------
# Messages to the parent


def sender(fd: int, key: bytes, allowed_callers: tuple, on_stack):
    """A generator that signs and writes messages; only the harness's own frames may use it.

    The key and the MAC state live only in this generator's frame, which student code cannot
    reach (frame and garbage-collector introspection are refused by the audit hook). A caller
    that is not one of `allowed_callers`, or that has student code below it, gets nothing sent.
    """
    import sys as _sys

    try:
        import _hashlib

        mac = _hashlib.hmac_new(key, digestmod="sha256")
    except (ImportError, AttributeError, ValueError):  # pragma: no cover - no OpenSSL
        import hmac

        mac = hmac.new(key, digestmod="sha256")
    key = None
    copy, write, getframe = mac.copy, os.write, _sys._getframe
    seq = 0
    sent = False
    while True:
        fields = yield sent
        sent = False
        caller = getframe(1)
        if caller.f_code not in allowed_callers or on_stack(caller):
            continue
        seq += 1
        body = " ".join([str(seq)] + [str(fields[0])] + [str(f).encode("utf-8", "replace").hex() for f in fields[1:]])
        signed = copy()
        signed.update(body.encode("ascii"))
        line = (signed.hexdigest() + " " + body + "\n").encode("ascii")
        view = memoryview(line)
        while view:
            view = view[write(fd, view):]
        sent = True


# ---------------------------------------------------------------------------------------------
# The sandbox inside the process

TRANSPARENT = (os.sep + "inspect.py", os.sep + "traceback.py", os.sep + "linecache.py",
               os.sep + "logging" + os.sep + "__init__.py", os.sep + "_pytest" + os.sep + "_code" + os.sep)
LEAK_EVENTS = {"sys._getframe", "sys._current_frames", "sys._current_exceptions", "gc.get_objects",
               "gc.get_referrers", "gc.get_referents", "object.__getattr__", "object.__setattr__",
               "object.__delattr__", "code.__new__", "function.__new__", "marshal.loads", "marshal.load"}
EFFECT_PREFIXES = ("ctypes.", "socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn",
                   "os.fork", "pty.", "mmap.", "_winapi.", "winreg.")
EFFECT_EVENTS = {"os.system", "os.kill", "os.killpg", "os.chdir", "os.fchdir", "os.chroot", "os.setuid",
                 "sys.settrace", "sys.setprofile", "threading.settrace", "threading.setprofile",
                 "sys.addaudithook", "resource.setrlimit", "resource.prlimit", "signal.pthread_kill",
                 "sys.set_asyncgen_hooks", "sys.setrecursionlimit"}
PATH_EVENTS = {  # event -> how many leading arguments are paths
    "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.truncate": 1,
    "os.utime": 1, "os.chflags": 1, "os.lchflags": 1, "os.link": 2, "os.symlink": 2, "os.rename": 2,
    "os.setxattr": 1, "os.removexattr": 1, "shutil.rmtree": 1, "shutil.copyfile": 2,
    "shutil.copytree": 2, "shutil.move": 2, "shutil.chown": 1, "shutil.copymode": 2,
    "shutil.copystat": 2, "shutil.make_archive": 1, "shutil.unpack_archive": 2,
}
FRAME_ATTRS = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "gi_yieldfrom", "cr_await",
               "ag_await", "f_locals", "f_globals"}
BLOCKED_IMPORTS = {"ctypes", "_ctypes", "cffi", "_posixsubprocess", "_xxsubinterpreters", "_testcapi",
                   "_testinternalcapi"}


class Guard:
    """Audit hook, integrity snapshots and value checks for one grading run."""

    def __init__(self, cfg: dict):
        self.work = os.path.realpath(cfg["work"]) + os.sep
        self.sandbox = os.path.realpath(cfg["sandbox"]) + os.sep
        self.tests = self.sandbox + "tests" + os.sep
        self.student_files = {os.path.realpath(p) for p in cfg["student_files"]}
        # the kit holds the reference solution's cells; the package files may hold some of them
        # (a task graded alone meets the reference for the others): graded code reads neither
        self.no_read = tuple(os.path.realpath(p).rstrip(os.sep) + os.sep for p in cfg.get("no_read", []))
        self.lib_dir = os.path.realpath(cfg.get("lib_dir", cfg["pkg"])) + os.sep
        self.student_modules = set(cfg["student_modules"])
        self.allowed_dunders = {k: set(v) for k, v in cfg.get("allowed_dunders", {}).items()}
        trusted = set(_read_roots(cfg["sandbox"])) - {"/etc"}
        self.trusted_roots = tuple(sorted(r.rstrip(os.sep) + os.sep for r in trusted))
        self._cache: dict[str, bool] = {}
        self.violations: list[str] = []  # operations refused since the last reset
        self.tampering: list[str] = []  # rebindings undone since the last reset
        self.snapshot: list[tuple[object, dict]] = []
        self.hot: list[tuple[object, dict]] = []
        self.seen: set[int] = set()
        self.closed: set[int] = set()
        self.depth = 0
        self.plugins: list = []
        self.pluginmanager = None

    # -- who is calling ------------------------------------------------------------------------
    def untrusted_file(self, filename: str) -> bool:
        cached = self._cache.get(filename)
        if cached is None:
            if filename.startswith("<frozen "):
                cached = False
            else:
                real = os.path.realpath(filename) if filename.startswith(os.sep) else filename
                cached = real in self.student_files or not real.startswith(self.trusted_roots) or real.startswith(self.work)
            self._cache[filename] = cached
        return cached

    def student_on_stack(self, frame) -> bool:
        while frame is not None:
            if self.untrusted_file(frame.f_code.co_filename):
                return True
            frame = frame.f_back
        return False

    def direct_caller_untrusted(self, frame) -> bool:
        while frame is not None and frame.f_code.co_filename.endswith(TRANSPARENT) or (
                frame is not None and TRANSPARENT[-1] in frame.f_code.co_filename):
            frame = frame.f_back
        return frame is not None and self.untrusted_file(frame.f_code.co_filename)

    # -- the audit hook --------------------------------------------------------------------------
    def install_audit_hook(self) -> None:
        import _thread

        get_ident, getframe, busy, work = _thread.get_ident, sys._getframe, set(), self.work
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        fsdecode, realpath, join = os.fsdecode, os.path.realpath, os.path.join

        def inside_work(path) -> bool:
            if isinstance(path, int):
                return True  # an fd the process already holds
            try:
                full = realpath(join(work, fsdecode(path)))
            except TypeError:
                return False
            return (full + os.sep).startswith(work)

        def refuse(event: str, detail: str = ""):
            self.violations.append(f"{event}{detail}")
            raise PermissionError(f"tito grader: {event}{detail} is not allowed in graded code")

        def hook(event, args):
            if not (event in LEAK_EVENTS or event in EFFECT_EVENTS or event in PATH_EVENTS
                    or event in ("open", "compile", "import") or event.startswith(EFFECT_PREFIXES)):
                return
            tid = get_ident()
            if tid in busy:
                return
            busy.add(tid)
            try:
                frame = getframe(1)
                if event in LEAK_EVENTS:
                    if event == "object.__getattr__" and (len(args) < 2 or args[1] not in FRAME_ATTRS):
                        return
                    if self.direct_caller_untrusted(frame):
                        refuse(event, f"({args[1]!r})" if event.startswith("object.") and len(args) > 1 else "")
                    return
                if event == "import":
                    name = args[0] if args else ""
                    filename = args[1] if len(args) > 1 else None
                    blocked = name in BLOCKED_IMPORTS or (isinstance(filename, str) and inside_work(filename) and filename)
                    if blocked and self.student_on_stack(frame):
                        refuse(event, f"({name!r})")
                    return
                if not self.student_on_stack(frame):
                    return
                if event == "open":
                    path, mode, flags = (list(args) + [None, None, None])[:3]
                    text = fsdecode(path) if isinstance(path, (str, bytes)) else ""
                    if text.startswith(("/proc", "/sys", "/dev/mem", "/dev/kmem", "/dev/port")):
                        refuse("open", f"({text!r})")
                    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                        isinstance(flags, int) and bool(flags & write_flags))
                    if writing and not inside_work(path):
                        refuse("open", f"({text!r}) for writing outside the work folder")
                    if text and not writing:
                        full = realpath(join(work, text))
                        if full in self.student_files or (full + os.sep).startswith(self.no_read):
                            refuse("open", f"({os.path.basename(text)!r}): graded code may not read the grader's sources")
                    return
                if event in PATH_EVENTS:
                    for path in args[: PATH_EVENTS[event]]:
                        if not inside_work(path):
                            refuse(event, f"({path!r}) outside the work folder")
                    return
                if event == "compile":
                    filename = args[1] if len(args) > 1 else ""
                    filename = fsdecode(filename) if isinstance(filename, (str, bytes)) else ""
                    if filename.startswith("<frozen") or not self.untrusted_file(filename):
                        refuse(event, f"(filename={filename!r})")
                    return
                refuse(event)
            finally:
                busy.discard(tid)

        sys.addaudithook(hook)

    # -- integrity -----------------------------------------------------------------------------
    @staticmethod
    def _watched(namespace) -> dict:
        return {name: value for name, value in list(namespace.items())
                if callable(value) or isinstance(value, (type(sys), staticmethod, classmethod, property))}

    def take_snapshot(self, extra_modules=(), hot_modules=()) -> None:
        import types as _types

        modules = [m for n, m in list(sys.modules.items())
                   if m is not None and (n.startswith(PROTECTED_PREFIXES) or n == "__main__")
                   and n not in self.student_modules]
        self.closed.add(id(sys.modules["builtins"]))
        self.closed.update(id(m) for m in extra_modules)
        for module in modules + list(extra_modules):
            if id(module) in self.seen or not isinstance(module, _types.ModuleType):
                continue
            self.seen.add(id(module))
            self.snapshot.append((module, self._watched(vars(module))))
            for value in list(vars(module).values()):
                if isinstance(value, type) and value.__flags__ & IMMUTABLE_TYPE:
                    continue  # built-in and extension types cannot be patched at all
                if isinstance(value, type) and getattr(value, "__module__", None) == module.__name__ and id(value) not in self.seen:
                    self.seen.add(id(value))
                    self.snapshot.append((value, self._watched(dict(vars(value)))))
        self.modules_table = {n: m for n, m in list(sys.modules.items())
                              if m is not None and n.startswith(PROTECTED_PREFIXES) and n not in self.student_modules}
        self.meta_path = list(sys.meta_path)
        self.path_hooks = list(sys.path_hooks)
        hot = hot_module_names() | {m.__name__ for m in hot_modules}
        self.hot = [(owner, table) for owner, table in self.snapshot
                    if (not isinstance(owner, type) and owner.__name__ in hot)
                    or (isinstance(owner, type) and (owner.__module__ in hot or owner.__module__.startswith("tinytorch")))]
        import signal as _signal

        self.signals = {}
        for sig in _signal.valid_signals():
            try:
                self.signals[sig] = _signal.getsignal(sig)
            except (ValueError, OSError):
                pass
        self.threads = set(sys._current_frames())
        if self.pluginmanager is not None:
            self.plugins = list(self.pluginmanager.get_plugins())

    def _restore(self, entries) -> None:
        for owner, table in entries:
            namespace = vars(owner)
            if id(owner) in self.closed:  # builtins and the test modules: no new names either
                for name in [n for n in list(namespace) if n not in table and (
                        callable(namespace[n]) or isinstance(namespace[n], type(sys)))]:
                    self.tampering.append(f"{owner.__name__}.{name} was added")
                    try:
                        delattr(owner, name)
                    except (AttributeError, TypeError):
                        pass
            for name, value in table.items():
                if namespace.get(name, _MISSING) is not value:
                    label = f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__
                    self.tampering.append(f"{label}.{name} was replaced")
                    try:
                        setattr(owner, name, value)
                    except (AttributeError, TypeError):
                        pass

    def capture(self) -> list:
        """The hot namespaces as they are now (what a test itself may have patched included)."""
        return [(owner, list(vars(owner).keys()), list(vars(owner).values())) for owner, _ in self.hot]

    def check_since(self, before: list) -> None:
        """Undo what changed in the hot namespaces since `before`, then the process-wide checks."""
        import operator

        same = operator.is_
        for owner, keys, values in before:
            namespace = vars(owner)
            # fast path, all in C: same names in the same order bound to the same objects
            if len(namespace) == len(keys) and all(map(same, namespace.keys(), keys)) and \
                    all(map(same, namespace.values(), values)):
                continue
            table = dict(zip(keys, values))
            for name in set(namespace) | set(table):
                old, new = table.get(name, _MISSING), namespace.get(name, _MISSING)
                if old is new or not (callable(old) or callable(new) or isinstance(old, type(sys))
                                      or isinstance(new, type(sys))):
                    continue
                if old is _MISSING and isinstance(new, type(sys)) and not isinstance(owner, type) and \
                        sys.modules.get(f"{owner.__name__}.{name}") is new:
                    continue  # a submodule imported for the first time (e.g. numpy.fft)
                label = f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__
                self.tampering.append(f"{label}.{name} was {'added' if old is _MISSING else 'replaced'}")
                try:
                    if old is _MISSING:
                        delattr(owner, name)
                    else:
                        setattr(owner, name, old)
                except (AttributeError, TypeError):
                    pass
        self.check_process()

    def check(self, full: bool) -> None:
        """Undo what student code changed; what it changed goes to self.tampering."""
        self._restore(self.snapshot if full else self.hot)
        self.check_process()

    def check_process(self) -> None:
        import signal as _signal

        for name, module in self.modules_table.items():
            if sys.modules.get(name) is not module:
                self.tampering.append(f"sys.modules[{name!r}] was replaced")
                sys.modules[name] = module
        if sys.meta_path != self.meta_path:
            self.tampering.append("sys.meta_path was changed")
            sys.meta_path[:] = self.meta_path
        if sys.path_hooks != self.path_hooks:
            self.tampering.append("sys.path_hooks was changed")
            sys.path_hooks[:] = self.path_hooks
        for sig, handler in self.signals.items():
            try:
                if _signal.getsignal(sig) is not handler:
                    self.tampering.append(f"a handler for {_signal.Signals(sig).name} was installed")
                    _signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):
                pass
        for timer in (_signal.ITIMER_REAL, _signal.ITIMER_VIRTUAL, _signal.ITIMER_PROF):
            if _signal.getitimer(timer) != (0.0, 0.0):
                self.tampering.append("an interval timer was started")
                _signal.setitimer(timer, 0)
        for ident, frame in sys._current_frames().items():
            if ident not in self.threads and self.student_on_stack(frame):
                self.tampering.append("student code started a thread")
                break
        if self.pluginmanager is not None:
            current = self.pluginmanager.get_plugins()
            extra = [p for p in current if not any(p is q for q in self.plugins)]
            for plugin in extra:
                self.tampering.append("a pytest plugin was registered")
                try:
                    self.pluginmanager.unregister(plugin)
                except Exception:
                    pass

    # -- values crossing from student code into a test ----------------------------------------
    def _student_class(self, klass) -> bool:
        """Defined by student code: in a student module, or not where its __module__ claims."""
        module = getattr(klass, "__module__", "") or ""
        if module in self.student_modules:
            return True
        owner = sys.modules.get(module)
        if owner is None:
            return True
        target = owner
        for part in klass.__qualname__.split("."):
            target = getattr(target, part, None)
            if target is None:
                break
        if target is klass:
            path = getattr(owner, "__file__", None) or ""
            return bool(path) and self.untrusted_file(path)
        # a class local to some function: trusted if its methods come from trusted files
        for member in vars(klass).values():
            code = getattr(getattr(member, "__func__", member), "__code__", None)
            if code is not None and self.untrusted_file(code.co_filename):
                return True
        return False

    def class_problem(self, cls) -> str | None:
        """Why instances of `cls` could decide a comparison on student code's behalf, or None."""
        for klass in getattr(cls, "__mro__", ()):
            present = CONTROL_DUNDERS & set(vars(klass))
            if not present:
                continue
            student = self._student_class(klass)
            allowed = self.allowed_dunders.get(f"{klass.__module__}:{klass.__qualname__}", set()) if student else set()
            bad = []
            for name in sorted(present - allowed):
                member = vars(klass)[name]
                function = getattr(member, "__func__", member)
                function = getattr(function, "fget", function)
                code = getattr(function, "__code__", None)
                if student or (code is not None and self.untrusted_file(code.co_filename)):
                    bad.append(name)
            if bad:
                return f"class {klass.__qualname__} defines {', '.join(bad)}"
        return None

    def value_problem(self, value, budget: list, depth: int = 0) -> str | None:
        import numpy as np

        budget[0] -= 1
        if budget[0] < 0 or depth > 8:
            return None
        kind = type(value)
        if value is None or kind in (bool, int, float, complex, str, bytes, range, slice) or value is Ellipsis:
            return None
        if kind in (list, tuple, set, frozenset, dict):
            return self._items_problem(value, budget, depth)
        if kind is np.ndarray:
            if value.dtype.hasobject:
                return "a numpy array of dtype object"
            return _weakref_problem(value, "a numpy array")
        if isinstance(value, (np.generic, np.dtype)) and kind.__module__ == "numpy":
            return "a numpy object scalar" if getattr(value, "dtype", None) is not None and value.dtype.hasobject else None
        module = getattr(kind, "__module__", "") or ""
        if module.startswith("unittest.mock"):
            return f"an object of type {module}.{kind.__qualname__}"
        if isinstance(value, type):
            return self.class_problem(value)
        problem = self.class_problem(kind)
        if problem:
            return f"an object whose {problem}"
        if self._student_class(kind):
            problem = _weakref_problem(value, "an object")
            if problem:
                return problem
        if isinstance(value, np.ndarray):
            return "a numpy array of dtype object" if value.dtype.hasobject else None
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict) and not isinstance(value, type(sys)):
            problem = self._items_problem(list(state.values()), budget, depth)
            if problem:
                return problem
        if isinstance(value, (list, tuple, set, frozenset, dict)):
            return self._items_problem(value, budget, depth)
        return None

    def _items_problem(self, value, budget, depth):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        for item in items[:4096]:
            pair = item if isinstance(value, dict) else (item,)
            for part in pair:
                problem = self.value_problem(part, budget, depth + 1)
                if problem:
                    return problem
        return None


_MISSING = object()


def _weakref_problem(value, what: str) -> str | None:
    """Whether collecting `value` would run code: a weak reference to it with a callback (which is
    how weakref.finalize works too), or a proxy, whose callback cannot be read. Plain references
    are harmless, and hypothesis (6.16x) keeps one to each value it draws, so they are allowed."""
    getweakrefs, reference_type, callback_slot = _WEAKREF_TOOLS
    try:
        refs = getweakrefs(value)
    except TypeError:
        return None
    for ref in refs:
        if not issubclass(type(ref), reference_type):
            return f"{what} with a weak-reference proxy attached"
        # read through the C slot: a subclass can shadow __callback__ with a class attribute
        if callback_slot.__get__(ref) is not None:
            return f"{what} with a weak-reference callback attached"
    return None


def _weakref_tools() -> tuple:
    import _weakref  # bound now, before student code runs: the weakref module is not protected

    return _weakref.getweakrefs, _weakref.ReferenceType, _weakref.ReferenceType.__dict__["__callback__"]


_WEAKREF_TOOLS = _weakref_tools()
IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE


def _defined_in(function, folder: str) -> bool:
    """Whether `function` (or what it wraps, e.g. a hypothesis test) was written in `folder`."""
    for _ in range(10):
        code = getattr(function, "__code__", None)
        if code is not None and code.co_filename.startswith(folder):
            return True
        function = getattr(function, "__wrapped__", None) or getattr(
            getattr(function, "hypothesis", None), "inner_test", None)
        if function is None:
            return False
    return False


def _where(exc: BaseException, guard) -> str:
    """A tag naming where `exc` came from: the package lines of the student's module on its
    traceback (deepest last) and the test's line; the grading process maps them to the
    student's own file."""
    import traceback as _tb

    student, test = [], ""
    try:
        for frame, line in _tb.walk_tb(exc.__traceback__):
            filename = os.path.realpath(frame.f_code.co_filename)
            if filename in guard.student_files and filename.startswith(guard.lib_dir):
                student.append(f"{filename[len(guard.lib_dir):]}:{line}")
            elif filename.startswith(guard.tests):
                test = f"{os.path.basename(filename)}:{line}"
    except Exception:
        return ""
    parts = ([f"student={','.join(student[-5:])}"] if student else []) + ([f"test={test}"] if test else [])
    return "\n@where " + " ".join(parts) if parts else ""


def _describe(exc: BaseException, limit: int = 1500) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}".strip()
    except Exception:  # a student exception whose __str__ fails
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 12] + " ... (cut)"


# ---------------------------------------------------------------------------------------------
# Wrapping the student's module


def wrap_module(module, guard: Guard) -> None:
    import functools
    import types as _types

    def guarded_generator(gen, label):
        while True:
            before = guard.capture()
            try:
                item = next(gen)
            except StopIteration:
                return
            finish(item, (), {}, label, before)
            yield item

    def finish(result, args, kwargs, label, before):
        guard.check_since(before)
        problem = guard.value_problem(result, [20000])
        for arg in list(args) + list(kwargs.values()):
            problem = problem or guard.value_problem(arg, [20000])
        if problem:
            guard.violations.append(f"{label} gave the test {problem}")
            raise TypeError(f"tito grader: {label} gave the test {problem}; graded code must "
                            "return plain values (numbers, strings, numpy arrays, Tensors)")

    def wrap(fn, label):
        if getattr(fn, "__tito_wrapped__", False):
            return fn

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            before = guard.capture() if guard.depth == 0 else None
            guard.depth += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                guard.depth -= 1
            if before is not None:
                finish(result, args, kwargs, label, before)
                if isinstance(result, _types.GeneratorType):
                    return guarded_generator(result, label)
                if isinstance(result, _types.FunctionType) and guard.untrusted_file(result.__code__.co_filename):
                    return wrap(result, f"the function {label} returned")
            return result

        wrapper.__tito_wrapped__ = True
        return wrapper

    for name, value in list(vars(module).items()):
        if name.startswith("__"):
            continue
        if isinstance(value, _types.FunctionType) and value.__module__ == module.__name__:
            setattr(module, name, wrap(value, f"{name}()"))
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for attr, member in list(vars(value).items()):
                if attr in ("__new__", "__init_subclass__", "__class_getitem__", "__set_name__") or attr in CONTROL_DUNDERS:
                    continue
                label = f"{value.__name__}.{attr}()"
                try:
                    if isinstance(member, _types.FunctionType):
                        setattr(value, attr, wrap(member, label))
                    elif isinstance(member, staticmethod):
                        setattr(value, attr, staticmethod(wrap(member.__func__, label)))
                    elif isinstance(member, classmethod):
                        setattr(value, attr, classmethod(wrap(member.__func__, label)))
                    elif isinstance(member, property) and member.fget is not None:
                        setattr(value, attr, property(wrap(member.fget, label), member.fset, member.fdel, member.__doc__))
                except (AttributeError, TypeError):
                    pass


def placeholder_module(name: str, names: list, reason: str):
    import types as _types

    module = _types.ModuleType(name)
    module.__file__ = "<submission failed to import>"
    for attr in names:
        def unavailable(*args, _attr=attr, **kwargs):
            raise RuntimeError(f"the submission could not be imported, so {_attr} is unavailable: {reason}")
        unavailable.__name__ = attr
        setattr(module, attr, unavailable)
    return module


def fill_missing(module, names: list) -> list:
    missing = []
    for attr in names:
        if not hasattr(module, attr):
            def absent(*args, _attr=attr, **kwargs):
                raise NotImplementedError(f"the submission does not define {_attr}")
            absent.__name__ = attr
            setattr(module, attr, absent)
            missing.append(attr)
    return missing


# ---------------------------------------------------------------------------------------------
# pytest


def pytest_args(cfg: dict) -> list:
    return ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "--import-mode=importlib",
            "--strict-markers", "-c", cfg["ini"], "--rootdir", cfg["sandbox"], "--tb=short",
            "--no-header", "-o", "console_output_style=classic",
            *[arg for name in cfg.get("plugins", []) for arg in ("-p", name)], *cfg["test_paths"]]


class Collector:
    """Trusted collection against the reference: which tests exist and which task each grades."""

    def __init__(self):
        self.tests: list = []
        self.errors: list = []

    def pytest_collection_modifyitems(self, items):
        for item in items:
            self.tests.append({"nodeid": item.nodeid, "file": str(item.path),
                               "tasks": [str(m.args[0]) if m.args else "" for m in item.iter_markers("task")]})

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append({"nodeid": report.nodeid, "message": str(report.longrepr)[-2000:]})


def call_and_report(item, when: str, **kwargs):
    """pytest's setup or teardown phase of `item`, reported as pytest itself would (public API only)."""
    import pytest

    hook = item.ihook.pytest_runtest_setup if when == "setup" else item.ihook.pytest_runtest_teardown
    call = pytest.CallInfo.from_call(lambda: hook(item=item, **kwargs), when=when,
                                     reraise=(pytest.exit.Exception, KeyboardInterrupt))
    report = item.ihook.pytest_runtest_makereport(item=item, call=call)
    item.ihook.pytest_runtest_logreport(report=report)
    return report


def _argnames(item, function) -> list:
    """The fixtures the test function itself asks for (not the autouse ones)."""
    info = getattr(item, "_fixtureinfo", None)  # what pytest's own pytest_pyfunc_call uses
    names = getattr(info, "argnames", None)
    if names is None:
        import inspect

        names = [name for name, parameter in inspect.signature(function).parameters.items()
                 if parameter.default is parameter.empty and name in (item.funcargs or {})]
    return list(names)


def run(cfg: dict) -> None:
    """Untrusted: import the student's module in the sandbox, run the chosen tests, report."""
    import importlib

    set_limits(cfg["memory_mb"], cfg["cpu_seconds"])
    os.chdir(cfg["work"])
    _clean_sys_path(cfg["pkg"])
    import numpy  # noqa: F401  (trusted code first: loaded and snapshotted before the student's)
    import numpy.testing  # noqa: F401
    import pytest

    warnings_out: list = []
    for name in cfg["trusted_modules"]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            warnings_out.append(f"trusted module {name} does not import: {_describe(exc)}")
    spawner = sys.modules.get("_posixsubprocess")
    if spawner is not None and hasattr(spawner, "fork_exec"):
        del spawner.fork_exec  # no process creation behind the audit hook's back
    try:
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # its monitor thread would look like a student's thread
    except Exception:
        pass
    level = "off"
    if cfg.get("landlock", True):
        level = landlock([cfg["work"]], _read_roots(cfg["sandbox"]), ["/dev/null"])
    sandbox_level = (f"{level} + audit hook" if level.startswith("landlock")
                     else f"audit hook only (landlock {level})")
    guard = Guard(cfg)
    wanted = list(cfg["nodeids"])
    key = bytes.fromhex(cfg.pop("key"))

    class Plugin:
        @pytest.hookimpl(trylast=True)
        def pytest_sessionstart(self, session):
            guard.pluginmanager = session.config.pluginmanager
            guard.take_snapshot()
            guard.install_audit_hook()
            channel.send(("phase", "import", sandbox_level))
            flags = list(warnings_out)
            for name in cfg["student_modules"]:
                names = cfg["api"].get(name, [])
                try:
                    module = importlib.import_module(name)
                except BaseException as exc:  # SystemExit at import must not end the run
                    reason = _describe(exc, 600)
                    sys.modules[name] = placeholder_module(name, names, reason)
                    flags.append(f"the submission failed to import: {reason}")
                    continue
                missing = fill_missing(module, names)
                if missing:
                    flags.append(f"the submission does not define: {', '.join(missing)}")
                for value in list(vars(module).values()):
                    if isinstance(value, type) and value.__module__ == name:
                        problem = guard.class_problem(value)
                        if problem:
                            flags.append(problem)
                wrap_module(module, guard)
            guard.check(full=True)
            if guard.violations:
                flags.append("refused at import: " + "; ".join(dict.fromkeys(guard.violations)))
            if guard.tampering:
                flags.append("changed at import (undone): " + "; ".join(dict.fromkeys(guard.tampering)))
            guard.violations.clear()
            guard.tampering.clear()
            channel.send(("ready", json.dumps(flags)))

        @pytest.hookimpl(tryfirst=True)
        def pytest_collection_modifyitems(self, session, config, items):
            order = {nodeid: i for i, nodeid in enumerate(wanted)}
            keep = sorted((it for it in items if it.nodeid in order), key=lambda it: order[it.nodeid])
            dropped = [it for it in items if it.nodeid not in order]
            items[:] = keep
            if dropped:
                config.hook.pytest_deselected(items=dropped)
            test_modules = [m for n, m in list(sys.modules.items())
                            if (getattr(m, "__file__", None) or "").startswith(guard.tests)]
            # afresh: what the test modules set up at import is the state every test starts from
            guard.snapshot, guard.seen = [], set()
            guard.take_snapshot(extra_modules=test_modules, hot_modules=test_modules)

        def pytest_collectreport(self, report):
            if report.failed:
                channel.send(("collect_error", report.nodeid, str(report.longrepr)[-1500:]))

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_protocol(self, item, nextitem):
            return protocol(item, nextitem)

    def protocol(item, nextitem):
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        guard.check(full=True)  # undo anything left behind by earlier tests
        guard.violations.clear()
        guard.tampering.clear()
        channel.send(("start", item.nodeid))
        ok, skipped, message = False, False, ""
        if hasattr(item, "_request") and not item._request:
            item._initrequest()
        try:
            setup = call_and_report(item, "setup")
        except BaseException as exc:  # e.g. KeyboardInterrupt raised by student code in a fixture
            setup, message = None, f"setup raised {_describe(exc)}"
        if setup is not None and setup.passed:
            function = item.obj
            if not _defined_in(function, guard.tests):
                message = "the test function was replaced"
            else:
                try:
                    result = function(**{name: item.funcargs[name] for name in _argnames(item, function)})
                    ok = result is None
                    message = "" if ok else "the test returned a value instead of None"
                except pytest.skip.Exception as exc:  # earns nothing, but is no failure of the code
                    skipped, message = True, _describe(exc)  # "Skipped: why"
                except BaseException as exc:  # a test's failure, whatever student code raised
                    message = _describe(exc) + _where(exc, guard)
        elif setup is not None and setup.skipped:  # a skipif mark, or a fixture that skipped
            longrepr = setup.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
            skipped, message = True, (reason if reason.startswith("Skipped") else f"Skipped: {reason}")[:1500]
        elif setup is not None:
            lines = [line for line in (setup.longreprtext or "").splitlines() if line.strip()]
            message = f"setup failed: {lines[-1] if lines else 'error'}"[:1500]
        try:
            teardown_failed = call_and_report(item, "teardown", nextitem=nextitem).failed
        except BaseException:
            teardown_failed = True
        if hasattr(item, "_request"):
            item._request = False
            item.funcargs = None
        guard.check(full=True)
        problems = []
        if guard.violations:
            problems.append("refused: " + "; ".join(dict.fromkeys(guard.violations)))
        if guard.tampering:
            problems.append("tampering: " + "; ".join(dict.fromkeys(guard.tampering)))
        if teardown_failed:
            problems.append("teardown failed")
        passed = ok and not problems
        text = " | ".join(problems + ([message] if message else [])) or ("passed" if passed else "failed")
        verdict = "1" if passed else ("s" if skipped and not problems else "0")  # "s" earns nothing either
        channel.send(("end", item.nodeid, verdict, text[:2000]))
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def finish_run(note: str = ""):
        channel.send(("done", note))

    plugin = Plugin()
    allowed = (Plugin.pytest_sessionstart.__code__, Plugin.pytest_collectreport.__code__,
               protocol.__code__, finish_run.__code__)
    channel = sender(cfg["result_fd"], key, allowed, guard.student_on_stack)
    key = None
    next(channel)

    try:
        pytest.main(pytest_args(cfg), plugins=[plugin])
        finish_run()
    except BaseException as exc:
        finish_run(f"pytest stopped: {_describe(exc)}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip atexit handlers and finalizers that student code may have registered


def _clean_sys_path(pkg: str) -> None:
    script_dir = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != script_dir and "__editable__" not in p]
    sys.path.insert(0, pkg)
    # an editable install of the course must not shadow the sandbox's package
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in (
        getattr(f, "__module__", "") or "") and "__editable__" not in type(f).__module__]
    sys.path_importer_cache.clear()


def collect(cfg: dict) -> int:
    """Trusted: collect the graded tests against the reference solution and describe its API."""
    import importlib

    import pytest

    _clean_sys_path(cfg["pkg"])
    os.chdir(cfg["work"])
    collector = Collector()
    code = pytest.main(["--collect-only", *pytest_args(cfg)], plugins=[collector])
    api, dunders = {}, {}
    for name in cfg["student_modules"]:
        try:
            module = importlib.import_module(name)
        except BaseException as exc:
            collector.errors.append({"nodeid": name, "message": f"the reference does not import: {_describe(exc)}"})
            continue
        public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        api[name] = [n for n in public if hasattr(module, n)]
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                for klass in value.__mro__:
                    if klass.__module__ == name:
                        dunders[f"{name}:{klass.__qualname__}"] = sorted(CONTROL_DUNDERS & set(vars(klass)))
    with os.fdopen(cfg["result_fd"], "w") as out:
        out.write(json.dumps({"tests": collector.tests, "errors": collector.errors, "api": api,
                              "allowed_dunders": dunders, "exit": int(code)}) + "\n")
    return 0


def main(argv: list) -> int:
    mode = argv[0] if argv else ""
    cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if mode == "collect":
        return collect(cfg)
    if mode == "run":
        run(cfg)
        return 0
    print("usage: grade_child.py run|collect < config.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
