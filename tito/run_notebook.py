"""Run a module source top to bottom as a script, summarising failures in one or two lines.

Used by `tito test` in a subprocess: a student with unfinished exercises sees which task is
not implemented yet, not a wall of tracebacks.
"""
from __future__ import annotations

import os
import runpy
import sys
import traceback
from pathlib import Path


def _location_in(path: Path, exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path]
    if not frames:
        return str(path)
    frame = frames[-1]
    return f"{path.name}:{frame.lineno} ({frame.line})" if frame.line else f"{path.name}:{frame.lineno}"


def main(argv: list[str]) -> int:
    path = Path(argv[0]).resolve()
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots are drawn, never shown, when run as a script
    sys.argv = [str(path)]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except NotImplementedError as exc:
        print(f"  not implemented yet: {exc}  [{_location_in(path, exc)}]")
        return 3
    except AssertionError as exc:
        message = str(exc) or "assertion failed"
        print(f"  inline test failed: {message}  [{_location_in(path, exc)}]")
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # show the student the real error, compactly
        print(f"  error: {type(exc).__name__}: {exc}  [{_location_in(path, exc)}]")
        if os.environ.get("TITO_TRACEBACK"):
            traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
