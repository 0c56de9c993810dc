"""Export one student submission into a grading sandbox's package (run as a subprocess).

`python -m tito.grade_export SOURCE LIB_DIR TARGETS_JSON` (or `--serve`, one job per line) reads the student's `.py` (jupytext
percent format) or `.ipynb`, exports it with nbdev exactly like `tito export`, checks that it
writes the same package files as the reference solution (no more, no fewer, nowhere else), and
copies them into LIB_DIR. It prints one JSON line: {"ok": true} or {"ok": false, "error": ...}.
Nothing in the submission is executed here; the process still caps its own memory and CPU
time, since the parsers read untrusted text.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

MAX_BYTES = 5 * 1024 * 1024


def _limit() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (3600, 3600))
    except (ImportError, ValueError, OSError):
        pass


def export_submission(source: Path, lib_dir: Path, targets: list[str]) -> None:
    from .errors import TitoError
    from .export import _check_exported_cells, _export_to, read_notebook

    if source.stat().st_size > MAX_BYTES:
        raise TitoError(f"{source.name} is larger than {MAX_BYTES // (1024 * 1024)} MB")
    with tempfile.TemporaryDirectory(prefix="tito-grade-export-") as tmp:
        text_source = source
        if source.suffix == ".ipynb":
            import jupytext

            try:
                nb = jupytext.read(source)
            except Exception as exc:
                raise TitoError(f"{source.name} cannot be read as a notebook ({exc})") from None
            text_source = Path(tmp) / (source.stem + ".py")
            text_source.write_text(jupytext.writes(nb, fmt="py:percent"), encoding="utf-8")
        nb = read_notebook(text_source)
        _check_exported_cells(text_source, nb)
        staged = Path(tmp) / lib_dir.name
        staged.mkdir()
        try:
            _export_to(read_notebook(text_source), text_source.resolve(), staged, lib_dir.resolve())
        except TitoError:
            raise
        except Exception as exc:
            raise TitoError(f"nbdev could not export it ({type(exc).__name__}: {exc})") from None
        produced = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.py"))
        if produced != sorted(targets):
            raise TitoError(f"it exports {', '.join(produced) or 'nothing'}; expected {', '.join(sorted(targets))}"
                            " (check its '#| default_exp' and '#| export' lines)")
        for relative in produced:
            target = lib_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staged / relative, target)


def answer(source: Path, lib_dir: Path, targets: list[str]) -> dict:
    from .errors import TitoError

    try:
        export_submission(source, lib_dir, targets)
    except TitoError as err:
        return {"ok": False, "error": str(err).replace(str(source.parent) + "/", "")}
    except MemoryError:
        return {"ok": False, "error": "exporting it ran out of memory"}
    except Exception as exc:  # any parser failure is the submission's problem, reported in one line
        return {"ok": False, "error": f"cannot be exported ({type(exc).__name__}: {exc})"}
    return {"ok": True}


def main(argv: list[str]) -> int:
    """`SOURCE LIB_DIR TARGETS_JSON` for one export, or `--serve` for one JSON job per stdin line."""
    _limit()
    if argv[:1] == ["--serve"]:  # a batch reuses one process, so nbdev is imported once
        for line in sys.stdin:
            job = json.loads(line)
            reply = answer(Path(job["source"]), Path(job["lib_dir"]), job["targets"])
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
        return 0
    print(json.dumps(answer(Path(argv[0]), Path(argv[1]), json.loads(argv[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
