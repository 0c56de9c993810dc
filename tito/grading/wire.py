"""The wire between the test runner (trusted) and the student's process: only data crosses.

Both ends import this file (the student's from a copy in its sandbox). A message is a marked,
length-prefixed pickle. Functions and objects of classes outside NumPy, the builtins and tinytorch
cross as handles: calling one calls the object on its own side, so no code object, closure or
source of one side ever exists on the other. The runner unpickles with `SafeUnpickler`: NumPy
values, plain containers and tinytorch objects (no constructor runs), never behaviour. Calls nest
(a callee may call back while its caller waits); arguments changed in place are copied back.
"""
from __future__ import annotations

import builtins
import io
import os
import pickle
import select
import struct
import time
import types

import numpy as np

MAX_MESSAGE = 256 << 20
DATA_MODULES = ("numpy", "tinytorch", "builtins", "collections")
_HEADER = struct.Struct("<Q")
MAGIC = b"\x00TITO-WIRE\x01"


# Global switches a call carries across, so the callee runs as the caller would (e.g. no_grad)
CONTEXT = [("tinytorch.core.tensor", "Tensor", "_grad_enabled")]


def _context(values: list | None = None) -> list:
    """The CONTEXT switches' values; with `values`, set them first and return the old ones."""
    import sys

    owners = [getattr(sys.modules.get(m), c, None) for m, c, _ in CONTEXT]
    before = [getattr(owner, a, None) for owner, (_, _, a) in zip(owners, CONTEXT)]
    for owner, (_, _, a), value in zip(owners, CONTEXT, values or []):
        if owner is not None and isinstance(value, bool):
            setattr(owner, a, value)
    return before


def route(tasks: dict, make) -> dict:
    """Replace each task's functions, and their imports into the tasks' other modules, with
    make(task, module, name, original); returns (module, name) -> original (None if missing)."""
    import importlib

    originals, swaps = {}, {}
    for task, names in tasks.items():
        for module, name in names:
            target = importlib.import_module(module)
            originals[module, name] = original = getattr(target, name, None)
            swaps[module, name] = make(task, module, name, original)
            setattr(target, name, swaps[module, name])
    for module in {module for module, _ in swaps}:  # `from .prune import magnitude_mask` elsewhere
        target = importlib.import_module(module)
        for key, value in list(vars(target).items()):
            for place, original in originals.items():
                if value is original and callable(original):
                    setattr(target, key, swaps[place])
    return originals


class WireError(Exception):
    """The other end broke the protocol, died or ran out of time."""


class TimedOut(WireError):
    pass


class BadValue(WireError):
    """A message that does not unpickle as data."""


def _is_data(obj) -> bool:
    if isinstance(obj, pickle.PickleBuffer):
        return True
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType,
                        types.GeneratorType, types.CodeType, types.FrameType, types.TracebackType, property,
                        staticmethod, classmethod, np.ufunc)):
        return False
    if isinstance(obj, type):
        return obj.__module__.split(".")[0] in DATA_MODULES
    return type(obj).__module__.split(".")[0] in DATA_MODULES


class Remote:
    """Stands for an object on the other side: calling it calls that object there."""

    def __init__(self, peer: "Peer", key: int, name: str):
        self._peer, self._key, self.__name__ = peer, key, name

    def __call__(self, *args, **kwargs):
        return self._peer.request(("callh", self._key, args, kwargs))

    def __getattr__(self, name):  # a method of a test's callback object, e.g. on_step_end
        if name.startswith("__") or self._peer.safe:  # the runner never asks a student's object
            raise AttributeError(name)
        return self._peer.request(("geth", self._key, name, (), {}))

    def __repr__(self):
        return f"<{self.__name__}>"

    def __bool__(self):  # in the runner: a student's function is no answer to a test
        if self._peer.safe:
            raise TypeError(f"{self.__name__} is a function, not a value")
        return True


class _Pickler(pickle.Pickler):
    def __init__(self, file, peer: "Peer"):
        super().__init__(file, protocol=5)
        self.peer, self.paths, self.sent = peer, None, set()

    def persistent_id(self, obj):
        if isinstance(obj, Remote) and obj._peer is self.peer:
            return ("theirs", obj._key)
        if hasattr(obj, "__dict__") and not isinstance(obj, type) and self.peer.serving:
            # an object the other side passed in, passed back during the call: theirs, with its state
            self.paths = self.paths if self.paths is not None else _paths(self.peer.serving)
            if id(obj) in self.paths:
                first = id(obj) not in self.sent
                self.sent.add(id(obj))
                return ("path", *self.paths[id(obj)], dict(vars(obj)) if first else None)
        if _is_data(obj) or (getattr(obj, "__module__", None), getattr(obj, "__name__", None)) in _NUMPY:
            return None
        return ("mine", self.peer.handle(obj))


_NUMPY = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
          ("numpy.core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
          ("numpy.core.numeric", "_frombuffer"), ("numpy.random._pickle", "__generator_ctor"),
          ("numpy.random._pickle", "__bit_generator_ctor"), ("numpy.random._pickle", "__randomstate_ctor"),
          ("numpy.random._pcg64", "PCG64"), ("numpy.random._mt19937", "MT19937"), ("numpy.random._philox", "Philox"),
          ("numpy.random._sfc64", "SFC64"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
          ("numpy.random.bit_generator", "SeedSequence"), ("collections", "OrderedDict")}
# what a value may be rebuilt by calling (a class of tinytorch is only created, never called)
_CALLABLE = _NUMPY | {("builtins", name) for name in ("set", "frozenset", "complex", "slice", "range", "bytearray")}
_BUILTINS = {"set", "frozenset", "complex", "slice", "range", "bytearray", "list", "dict", "tuple", "object"}


class SafeUnpickler(pickle._Unpickler):
    """Unpickles what the student's process sends: data only (see the module docstring)."""

    def __init__(self, file, peer: "Peer"):
        super().__init__(file)
        self.peer, self.callables = peer, []

    def find_class(self, module, name):
        if (module, name) in _NUMPY or (module == "builtins" and name in _BUILTINS):
            found = super().find_class(module, name)
            if (module, name) in _CALLABLE:
                self.callables.append(found)
            return found
        if module.split(".")[0] == "tinytorch":
            import importlib

            cls = getattr(importlib.import_module(module), name, None)
            if isinstance(cls, type) and cls.__module__ == module and not issubclass(cls, BaseException):
                return cls
        raise pickle.UnpicklingError(f"a value of type {module}.{name} cannot be checked: return NumPy "
                                     "arrays, numbers, lists, dicts or tinytorch objects")

    def persistent_load(self, pid):
        return self.peer.resolve(pid)

    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in self.callables):
            raise pickle.UnpicklingError(f"refused to call {func!r} while reading a value")
        self.stack[-1] = func(*args)

    def _refuse(self):
        raise pickle.UnpicklingError("old pickle opcodes are refused")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.INST[0]] = _refuse
    dispatch[pickle.OBJ[0]] = _refuse


class Peer:
    """One end of the wire: `request` sends a call and serves nested calls until its answer."""

    def __init__(self, read_fd: int, write_fd: int, serve, safe: bool, wait=None):
        self.rfd, self.wfd, self.serve, self.safe = read_fd, write_fd, serve, safe
        # wait(fd, seconds) -> whether fd is readable; the runner's also drains the student's output
        self.wait = wait or (lambda fd, seconds: bool(select.select([fd], [], [], seconds)[0]))
        self.deadline = None
        self.buffer = bytearray()
        self.handles: dict[int, object] = {}
        self.keys: dict[int, int] = {}
        self.remotes: dict[int, Remote] = {}
        self.calling: list = []  # (args, kwargs) of the calls this side is waiting on, outermost first
        self.serving: list = []  # (args, kwargs) of the calls this side is answering, outermost first

    def handle(self, obj) -> int:
        key = self.keys.get(id(obj))
        if key is None:
            key = self.keys[id(obj)] = len(self.handles) + 1
            self.handles[key] = obj
        return key

    def resolve(self, pid):
        if pid[0] == "path":
            try:
                _, depth, path, state = pid
                obj = self.calling[depth]
                for step in path:
                    obj = vars(obj)[step] if isinstance(step, str) and hasattr(obj, "__dict__") else obj[step]
            except (LookupError, TypeError, ValueError) as exc:
                raise pickle.UnpicklingError(f"a reference to no argument ({exc})") from None
            if state is not None and isinstance(state, dict):
                sync(vars(obj), state, {})
            return obj
        side, key = pid
        if side == "theirs":
            return self.handles[key]
        if key not in self.remotes:
            self.remotes[key] = Remote(self, key, f"callable #{key}")
        return self.remotes[key]

    def send(self, message) -> None:
        buffer = io.BytesIO()
        _Pickler(buffer, self).dump(message)
        data = buffer.getvalue()
        view = memoryview(MAGIC + _HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self.wfd, view):]

    def _fill(self, n: int) -> None:
        """Read until the buffer holds `n` bytes (or the deadline passes, or the other end closes)."""
        while len(self.buffer) < n:
            if self.deadline is not None:
                wait = self.deadline - time.monotonic()
                if wait <= 0:
                    raise TimedOut("timed out")
                if not self.wait(self.rfd, min(wait, 0.5)):
                    continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise WireError("the other process ended")
            self.buffer += chunk

    def receive(self):
        # Bytes before a frame's mark are skipped: the student's code may write to any descriptor
        # it has, but only its own answers can come from it, and those are just values.
        skipped = 0
        while True:
            self._fill(len(MAGIC))
            at = self.buffer.find(MAGIC)
            if at >= 0:
                del self.buffer[:at]
                break
            skipped += len(self.buffer) - len(MAGIC) + 1
            del self.buffer[:len(self.buffer) - len(MAGIC) + 1]
            if skipped > MAX_MESSAGE:
                raise WireError("no message, only noise, on the channel")
        self._fill(len(MAGIC) + _HEADER.size)
        size = _HEADER.unpack(self.buffer[len(MAGIC):len(MAGIC) + _HEADER.size])[0]
        if size > MAX_MESSAGE:
            raise WireError(f"a value of {size >> 20} MB is too large to check")
        end = len(MAGIC) + _HEADER.size + size
        self._fill(end)
        payload = bytes(self.buffer[len(MAGIC) + _HEADER.size:end])
        del self.buffer[:end]
        data = io.BytesIO(payload)
        unpickler = SafeUnpickler(data, self) if self.safe else _PlainUnpickler(data)
        unpickler.peer = self
        try:
            return unpickler.load()
        except (pickle.UnpicklingError, AttributeError, ImportError, TypeError, ValueError, EOFError,
                IndexError, KeyError, RecursionError, struct.error) as exc:
            raise BadValue(str(exc)) from None

    def request(self, message):
        """Send a call; serve the calls it causes back here; return its result or raise its error."""
        self.send(message + (_context(),))
        self.calling.append((message[-2], message[-1]))
        try:
            return self._wait(message)
        finally:
            self.calling.pop()

    def _wait(self, message):
        while True:
            answer = self.receive()
            kind = answer[0]
            if kind == "return":
                _, result, args, kwargs = answer
                memo: dict = {}
                sync(message[-2], args, memo)
                sync(message[-1], kwargs, memo)
                return relink(result, memo, set())
            if kind == "raise":
                raise make_error(*answer[1:])
            self.answer(answer)

    def answer(self, call) -> None:
        """Run one call from the other side and send back its result (and its arguments)."""
        *call, context = call
        before = _context(context)
        args, kwargs = call[-2], call[-1]
        self.serving.append((args, kwargs))
        try:
            if call[0] == "geth":
                result = getattr(self.handles[call[1]], call[2])
            else:
                result = self.handles[call[1]](*args, **kwargs) if call[0] == "callh" else self.serve(call)
        except WireError:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of the callee is the caller's error
            self.send(("raise",) + describe_error(exc))
            return
        finally:
            _context(before)
            self.serving.pop()
        try:
            self.send(("return", result, args, kwargs))
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            self.send(("raise", "TypeError", f"the result cannot be sent to the tests: {exc}", []))


def _paths(levels: list, limit: int = 20000) -> dict:
    """id -> (level, path) of each object with attributes reachable from calls' arguments."""
    found: dict = {}
    todo = [(level, (i,), arg) for level, (args, kwargs) in enumerate(levels) for i, arg in
            enumerate((tuple(args), dict(kwargs)))]
    while todo and len(found) < limit:
        level, path, obj = todo.pop()
        if isinstance(obj, (tuple, list)):
            todo += [(level, path + (i,), item) for i, item in enumerate(obj)]
        elif isinstance(obj, dict):
            todo += [(level, path + (k,), v) for k, v in obj.items() if isinstance(k, (str, int))]
        elif hasattr(obj, "__dict__") and not isinstance(obj, type) and _is_data(obj) and id(obj) not in found:
            found[id(obj)] = (level, path)
            todo += [(level, path + (k,), v) for k, v in vars(obj).items()]
    return found


class _PlainUnpickler(pickle.Unpickler):  # the student's side: what the runner sends is trusted
    def persistent_load(self, pid):
        return self.peer.resolve(pid)


STUDENT_FILES: list[str] = []  # the student's own files: their frames are named in errors


def describe_error(exc: BaseException) -> tuple:
    """(type name, message, frames in the student's files): what of an error crosses the wire."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in STUDENT_FILES:
            frames.append(f"{os.path.basename(name)}:{tb.tb_lineno}")
        tb = tb.tb_next
    kind = getattr(exc, "remote_type", None) or type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a student's __str__ may raise
        text = "(no message)"
    return kind, text[:2000], getattr(exc, "student_frames", []) + frames


class RemoteError(Exception):
    """An error of a type the tests do not know, raised by the code on the other side."""


def make_error(kind: str, message: str, frames: list) -> Exception:
    cls = getattr(builtins, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RemoteError
    try:
        exc = cls(message)
    except Exception:  # noqa: BLE001 - an exception type with required arguments
        exc = RemoteError(message)
    exc.remote_type, exc.student_frames = kind, list(frames)
    return exc


def sync(mine, theirs, memo: dict, depth: int = 0) -> None:
    """Make `mine` hold what `theirs` (its copy after a call on the other side) holds, in place,
    and remember id(theirs) -> mine so that the result refers to the caller's own objects."""
    if id(theirs) in memo or depth > 50 or type(mine) is not type(theirs):
        return
    if isinstance(mine, np.ndarray):
        if mine.shape == theirs.shape and mine.flags.writeable:
            memo[id(theirs)] = mine
            if not np.array_equal(mine, theirs, equal_nan=True):
                mine[...] = theirs
        return
    if not isinstance(mine, tuple):
        memo[id(theirs)] = mine
    if isinstance(mine, list):
        if len(mine) == len(theirs):
            for a, b in zip(mine, theirs):
                sync(a, b, memo, depth + 1)
        mine[:] = [relink(b, memo, set()) for b in theirs]
    elif isinstance(mine, tuple):
        for a, b in zip(mine, theirs):
            sync(a, b, memo, depth + 1)
    elif isinstance(mine, dict):
        for key in list(mine):
            if key not in theirs:
                del mine[key]
        for key, value in theirs.items():
            if key in mine:
                sync(mine[key], value, memo, depth + 1)
        for key, value in theirs.items():
            mine[key] = relink(value, memo, set())
    elif hasattr(mine, "__dict__") and not isinstance(mine, type) and _is_data(mine):
        sync(mine.__dict__, theirs.__dict__, memo, depth + 1)


def relink(value, memo: dict, seen: set):
    """`value` with each object that `sync` matched replaced by the caller's own."""
    if id(value) in memo:
        return memo[id(value)]
    if id(value) in seen or isinstance(value, (np.ndarray, str, bytes, int, float, type(None))):
        return value
    seen.add(id(value))
    if isinstance(value, list):
        value[:] = [relink(v, memo, seen) for v in value]
    elif isinstance(value, tuple):
        return type(value)(relink(v, memo, seen) for v in value) if type(value) is tuple else value
    elif isinstance(value, dict):
        for key in list(value):
            value[key] = relink(value[key], memo, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type) and _is_data(value):
        for key, item in list(vars(value).items()):
            vars(value)[key] = relink(item, memo, seen)
    return value
