"""`tito status`: one row per module: exported, in sync with its source, last test result."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import TitoError
from .export import LIB, export_notebook
from .modules import all_modules
from .testing import remembered


def _sync_state(module, root: Path) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="tito-status-") as tmp:
        staged = Path(tmp) / LIB
        staged.mkdir()
        try:
            for source in module.sources:
                export_notebook(source, staged, root / LIB)
        except (TitoError, Exception):
            return "no", "export fails"
        files = [p for p in staged.rglob("*.py")]
        if not files:
            return "no", "-"
        targets = [root / LIB / p.relative_to(staged) for p in files]
        if not all(t.exists() for t in targets):
            return "no", "no"
        same = all(t.read_bytes() == p.read_bytes() for t, p in zip(targets, files))
        return "yes", "yes" if same else "NO (run tito export)"


def _tests_cell(last: dict | None) -> str:
    "The last full run's result; a later partial run (--task or -k) is named, never taken for it."
    if not last:
        return "not run"
    text = "no full run yet"
    if "ok" in last and "passed" in last:
        total = last["passed"] + last["failed"]
        text = f"{'pass' if last['ok'] else 'FAIL'} {last['passed']}/{total} ({last['when']})"
    partial = last.get("last_partial")
    if isinstance(partial, dict):
        tasks = partial.get("tasks_run") or []
        states = partial.get("tasks") or {}
        covered = ", ".join(f"{t} {states[t]['state']}" if t in states else t for t in tasks) or "no task"
        text += f"; then a partial run ({partial.get('when', '?')}): {covered}"
    return text


def print_status(root: Path) -> int:
    results = remembered(root)
    rows = [("module", "exported", "in sync", "tests (last full run)")]
    for module in all_modules(root):
        exported, in_sync = _sync_state(module, root)
        rows.append((module.id, exported, in_sync, _tests_cell(results.get(module.id))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0
