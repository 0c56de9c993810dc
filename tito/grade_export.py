"""Export one student submission into a grading sandbox's package (run as a subprocess).

`python -m tito.grade_export SOURCE LIB_DIR TARGETS_JSON` (or `--serve`, one job per line) reads the student's `.py` (jupytext
percent format) or `.ipynb`, exports it with nbdev exactly like `tito export`, checks that it
writes the same package files as the reference solution (no more, no fewer, nowhere else), and
copies them into LIB_DIR. It prints one JSON line: {"ok": true, "tasks": {...}} or
{"ok": false, "error": ...}. With a kit's reference cells (`reference`), a job may first swap the
reference solution into some tasks' cells (`keep`: "*" keeps every task as submitted, "attempted"
swaps the reference into the tasks left as the released stub, a list keeps only those tasks), so
that each task can be graded alone; "tasks" says what the submission did with each task.
Nothing in the submission is executed here; the process still caps its own memory and CPU
time, since the parsers read untrusted text.
"""
from __future__ import annotations

import copy
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


def _swap_in_reference(text_source: Path, reference: dict, keep) -> dict:
    """Classify the submission's tasks and, as `keep` asks, rewrite it with reference cells."""
    import jupytext

    from .graded import classify_tasks, make_hybrid

    nb = jupytext.read(text_source, fmt="py:percent")
    kinds = classify_tasks(nb, reference)
    if keep == "*":
        return kinds
    kept = {t for t, kind in kinds.items() if kind != "stub"} if keep == "attempted" else set(keep)
    if make_hybrid(nb, reference, kept):
        text_source.write_text(jupytext.writes(nb, fmt="py:percent"), encoding="utf-8")
    return kinds


def _their_line(message: str, copy: Path, original: str, name: str) -> str:
    """`copy:LINE: ...` (a converted or hybrid copy) as `name:LINE: ...` in the student's file."""
    prefix = f"{copy}:"
    if not message.startswith(prefix):
        return message.replace(str(copy), name)
    line, _, rest = message[len(prefix):].partition(":")
    if not line.isdigit():
        return name + ":" + message[len(prefix):]
    mine = copy.read_text(encoding="utf-8", errors="replace").split("\n")
    theirs = original.split("\n")
    at = int(line) - 1
    chunk = mine[max(0, at - 1):at + 2]  # the line with its neighbours, to find it in their file
    for i in range(len(theirs) - len(chunk) + 1):
        if theirs[i:i + len(chunk)] == chunk:
            return f"{name}:{i + (at - max(0, at - 1)) + 1}:{rest}"
    return f"{name}:{rest}"


def export_submission(source: Path, lib_dir: Path, targets: list[str], reference: dict | None = None,
                      keep="*", kinds: dict | None = None) -> dict:
    """Export `source` (as `keep` says) into `lib_dir`; `kinds` is filled with what the
    submission did with each task (even when the export then fails)."""
    kinds = {} if kinds is None else kinds
    from .errors import TitoError
    from .export import _check_exported_cells, export_or_explain, read_notebook

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
        original = text_source.read_text(encoding="utf-8", errors="replace")
        if reference:
            if text_source == source:
                text_source = Path(tmp) / source.name
                shutil.copyfile(source, text_source)
            try:
                kinds.update(_swap_in_reference(text_source, reference, keep))
            except Exception as exc:
                raise TitoError(f"{source.name} cannot be read as a jupytext percent notebook ({exc})") from None
        nb = read_notebook(text_source)
        pristine = copy.deepcopy(nb)  # the check marks up the cells; a copy is 100x cheaper than a re-parse
        try:
            _check_exported_cells(text_source, nb)
        except TitoError as err:  # name the student's file and line, not the grader's copy
            raise TitoError(_their_line(str(err), text_source, original, source.name)) from None
        staged = Path(tmp) / lib_dir.name
        staged.mkdir()
        export_or_explain(pristine, text_source, staged, lib_dir)
        produced = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.py"))
        if produced != sorted(targets):
            raise TitoError(f"it exports {', '.join(produced) or 'nothing'}; expected {', '.join(sorted(targets))}"
                            " (check its '#| default_exp' and '#| export' lines)")
        for relative in produced:
            target = lib_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staged / relative, target)
    return kinds


_REFERENCES: dict[str, dict] = {}


def _reference(path: str | None) -> dict | None:
    if not path:
        return None
    if path not in _REFERENCES:  # a batch reads the kit's reference cells once
        _REFERENCES[path] = json.loads(Path(path).read_text(encoding="utf-8"))
    return _REFERENCES[path]


def answer(source: Path, lib_dir: Path, targets: list[str], reference: str | None = None, keep="*") -> dict:
    from .errors import TitoError

    kinds: dict = {}
    try:
        export_submission(source, lib_dir, targets, _reference(reference), keep, kinds)
    except TitoError as err:
        return {"ok": False, "error": str(err).replace(str(source.parent) + "/", ""), "tasks": kinds}
    except MemoryError:
        return {"ok": False, "error": "exporting it ran out of memory", "tasks": kinds}
    except Exception as exc:  # any parser failure is the submission's problem, reported in one line
        return {"ok": False, "error": f"cannot be exported ({type(exc).__name__}: {exc})", "tasks": kinds}
    return {"ok": True, "tasks": kinds}


def main(argv: list[str]) -> int:
    """`SOURCE LIB_DIR TARGETS_JSON` for one export, or `--serve` for one JSON job per stdin line."""
    _limit()
    if argv[:1] == ["--serve"]:  # a batch reuses one process, so nbdev is imported once
        for line in sys.stdin:
            job = json.loads(line)
            reply = answer(Path(job["source"]), Path(job["lib_dir"]), job["targets"], job.get("reference"),
                           job.get("keep", "*"))
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
        return 0
    print(json.dumps(answer(Path(argv[0]), Path(argv[1]), json.loads(argv[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
