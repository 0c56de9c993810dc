"""A batch: grade a folder of submissions in parallel and write the gradebook.

gradebook.csv has one row per student: a submission's row, repeated for each member of a
Gradescope group submission, and a row for each roster student without a submission. Roster
rows that are not students (Canvas's "Points Possible", "Student, Test") are left out. The score
column is named `score`, or the assignment's name with `--score-column assignment`, which is
what Canvas and most LMS gradebook imports match on.
"""
from __future__ import annotations

import csv
import json
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..errors import TitoError
from .feedback import results_json
from .kit import Kit
from .submission import grade_submission

NOT_STUDENTS = re.compile(r"^\s*(points possible|student,\s*test|test student)\s*$", re.I)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name).strip("._") or "submission"


def submissions_in(folder: Path) -> list[tuple[str, Path]]:
    entries = [(safe_name(p.stem if p.is_file() else p.name), p) for p in sorted(folder.iterdir())
               if not p.name.startswith((".", "__")) and (p.is_dir() or p.suffix in (".py", ".ipynb"))]
    names = [name for name, _ in entries]
    return [(f"{name}-{path.suffix.lstrip('.')}" if names.count(name) > 1 else name, path) for name, path in entries]


def is_single_submission(folder: Path, module_name: str) -> bool:
    return any((folder / f"{module_name}_dev{suffix}").is_file() for suffix in (".py", ".ipynb"))


def gradescope_submitters(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Gradescope's "Export Submissions": submission folder -> its submitters (Name, SID, Email),
    several for a group submission."""
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
        people = (entry or {}).get(":submitters") or (entry or {}).get("submitters") or [] if isinstance(entry, dict) else []
        found[safe_name(str(name)).lower()] = [
            {key: str(p.get(f":{key.lower()}", p.get(key.lower(), "")) or "") for key in ("Name", "SID", "Email")}
            for p in (people if isinstance(people, list) else []) if isinstance(p, dict)]
    return found


def load_roster(path: Path, names: list[str], key: str | None = None) -> tuple[list[str], dict[str, dict]]:
    """An LMS roster export (CSV with a header): its columns and the student row of each
    submission name, matched on `key` (or on the column matching most names)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in (reader.fieldnames or []) if c]
            rows = [r for r in reader if not any(NOT_STUDENTS.match(str(v or "")) for v in r.values())]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TitoError(f"{path}: cannot read the roster ({exc})") from None
    if not columns:
        raise TitoError(f"{path}: the roster needs a header row naming its columns (e.g. SID, Email, Name)")
    if key is not None and key not in columns:
        raise TitoError(f"{path}: no column {key!r}; columns: {', '.join(columns)}")
    wanted = {n.lower() for n in names}

    def matches(column):
        return sum(safe_name(str(r.get(column) or "")).lower() in wanted for r in rows)

    key = key or max(columns, key=matches)
    if not matches(key):
        raise TitoError(f"{path}: no column of the roster holds the submissions' names (e.g. {names[0]}); name the "
                        "folders after a roster column, or pass --roster-key")
    return columns, {safe_name(str(r.get(key) or "")).lower(): {c: r.get(c) or "" for c in columns} for r in rows}


def _grade_one(kit_folder: str, name: str, path: str, limits: dict | None, landlock: bool) -> dict:
    kit = Kit.load(Path(kit_folder))
    try:
        return grade_submission(kit, Path(path), student=name, limits=limits, landlock=landlock)
    except Exception as exc:  # noqa: BLE001 - one broken submission never stops the batch
        results = results_json(kit.manifest, {}, [], f"grading failed: {type(exc).__name__}: {exc}", {}, {}, None)
        results["extra_data"].update(student=name, submission=Path(path).name)
        return results


def grade_batch(kit: Kit, folder: Path, out: Path, jobs: int, limits: dict | None = None, landlock: bool = True,
                assignment: str | None = None, roster: Path | None = None, roster_key: str | None = None,
                score_column: str = "score") -> list[dict]:
    entries = submissions_in(folder)
    if not entries:
        raise TitoError(f"{folder} holds no submissions (.py or .ipynb files, or one folder per student)")
    columns, people, roster_rows = [], {}, {}
    submitters = gradescope_submitters(folder)
    if submitters:
        columns, people = ["Name", "SID", "Email"], submitters
    if roster is not None:  # read before grading: a bad roster fails in a second, not after an hour
        columns, roster_rows = load_roster(roster, [n for n, _ in entries], roster_key)
        people = {name: [row] for name, row in roster_rows.items()}
    (out / "results").mkdir(parents=True, exist_ok=True)
    started, found = time.monotonic(), {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_grade_one, str(kit.folder), name, str(path), limits, landlock): name
                   for name, path in entries}
        for future in as_completed(futures):
            name = futures[future]
            results = found[name] = future.result()
            (out / "results" / f"{name}.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
            problem = results["extra_data"].get("problem")
            print(f"  {name:<28} {results['score']:>7g} / {results['max_score']:g}  ({results['execution_time']:.1f}s)"
                  f"{'  ' + problem[:80] if problem else ''}", flush=True)
    assignment = assignment or kit.module
    score = assignment if score_column == "assignment" else "score"
    tasks = list(kit.manifest["tasks"])
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["assignment", "student", *columns, "submission", score, "max_score", *tasks, "problem", "notes"])
        for name, _ in entries:
            r, extra = found[name], found[name]["extra_data"]
            for who in people.get(name.lower()) or [{}]:
                writer.writerow([assignment, name, *[who.get(c, "") for c in columns], extra.get("submission", ""),
                                 r["score"], r["max_score"], *[extra["tasks"].get(t, 0) for t in tasks],
                                 extra.get("problem", ""), " | ".join(extra.get("flags", []))[:500]])
        for name, who in roster_rows.items():
            if name not in {n.lower() for n, _ in entries}:
                writer.writerow([assignment, "", *[who.get(c, "") for c in columns], "", 0, kit.manifest["total"],
                                 *[0 for _ in tasks], "no submission", ""])
    unmatched = [n for n, _ in entries if people and n.lower() not in people]
    if unmatched:
        print(f"note: {len(unmatched)} submission(s) match no roster row: {', '.join(unmatched[:10])}")
    print(f"graded {len(entries)} submissions in {time.monotonic() - started:.1f}s with {jobs} job(s): "
          f"{out / 'gradebook.csv'}, {out / 'results'}/<student>.json")
    return [found[name] for name, _ in entries]
