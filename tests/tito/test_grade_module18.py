"""Module 18 graded as an instructor grades it: a wrong earlier exercise costs its own points only.

The self-check (CI runs it) proves the per-task rule for stubs; this grades wrong answers, which
are not stubs, so every task that calls the wrong one is graded again alone against the reference.
"""
from __future__ import annotations

import json

import pytest

from tito_testlib import REPO, run_tito

MODULE = REPO / "modules" / "18_compression" / "compression_dev.py"


def _wrong(task: str) -> str:
    from tito.grading.selfcheck import mixed_source

    text = mixed_source(MODULE, {task}, answer="return None  # a wrong answer")
    assert "return None  # a wrong answer" in text
    return text


@pytest.fixture(scope="module")
def class_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("m18")
    folder = base / "class"
    folder.mkdir()
    for task in ("magnitude-mask", "delta-encode"):
        (folder / f"wrong-{task}.py").write_text(_wrong(task))
    proc = run_tito(REPO, "grade", "run", str(folder), "--module", "18", "--jobs", "2", "--out", str(base / "g"),
                    tmpdir=base / "tmp", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {p.stem: json.loads(p.read_text()) for p in (base / "g" / "results").glob("*.json")}


@pytest.mark.parametrize("task, points", [("magnitude-mask", 4), ("delta-encode", 3)])
def test_a_wrong_exercise_costs_its_own_points_only(class_results, task, points):
    results = class_results[f"wrong-{task}"]
    lost = {t: s for t, s in results["extra_data"]["tasks"].items() if s == 0}
    assert lost == {task: 0.0}, results["output"]
    assert results["score"] == results["max_score"] - points
    row = next(r for r in results["tests"] if r["name"] == task)
    assert row["status"] == "failed"
    assert "in your code at " in row["output"] or "checked at " in row["output"], row["output"]
