"""What each task needs first, derived from the code: the rules on a small synthetic module, and
the README's task tables, which must be exactly what `tito tasks --readme` renders."""
from __future__ import annotations

from pathlib import Path

from tito_testlib import REPO, run_tito

from tito.graded import release_source
from tito.modules import Module, all_modules
from tito.prerequisites import (README_BEGIN, README_END, direct_prerequisites, prerequisites, readme_block,
                                task_table, unfinished_tasks)


def _task(task: str, code: str) -> str:
    header = f'# %% nbgrader={{"grade": false, "grade_id": "{task}", "locked": false, "solution": true, "schema_version": 3}}'
    return f"{header}\n#| export\n{code}\n"


LESSON = "\n".join([
    "# %%\n#| default_exp demo\n",
    "# %%\n#| export\nimport numpy as np\nfrom tinytorch.demo_given import given_helper\n",
    _task("base", "def base(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
    _task("other", "def other(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    # an exported helper that is no exercise: calling it calls base
    "# %%\n#| export\ndef _helper(x):\n    return base(x) * 3\n",
    _task("via-helper", "def via_helper(x):\n    ### BEGIN SOLUTION\n    return _helper(x)\n    ### END SOLUTION"),
    # `base` here is a parameter: no call of the exercise
    _task("shadow", "def shadow(base, x):\n    ### BEGIN SOLUTION\n    return base * x\n    ### END SOLUTION"),
    # calls given code that calls the exercise `other`
    _task("via-given", "def via_given(x):\n    ### BEGIN SOLUTION\n    return given_helper(x)\n    ### END SOLUTION"),
    _task("chain", "def chain(x):\n    ### BEGIN SOLUTION\n    return via_helper(x) + shadow(1, x)\n    ### END SOLUTION"),
    # a demo cell (not exported) that calls everything is no dependency of anything
    "# %%\nprint(base(1), other(1), chain(1))\n",
])

GIVEN = "# %%\n#| default_exp demo_given\n\n# %%\n#| export\nfrom tinytorch.demo import other\n\n\ndef given_helper(x):\n    return other(x)\n"


def _module(tmp_path: Path) -> Module:
    folder = tmp_path / "modules" / "05_demo"
    folder.mkdir(parents=True)
    (folder / "demo_dev.py").write_text(LESSON, encoding="utf-8")
    (folder / "given_dev.py").write_text(GIVEN, encoding="utf-8")
    return Module("05", "demo", folder)


def test_direct_prerequisites_follow_calls_through_helpers_and_given_code(tmp_path):
    assert direct_prerequisites(_module(tmp_path)) == {
        "base": [], "other": [], "via-helper": ["base"], "shadow": [], "via-given": ["other"],
        "chain": ["via-helper", "shadow"],
    }


def test_prerequisites_are_transitive_and_in_exercise_order(tmp_path):
    assert prerequisites(_module(tmp_path))["chain"] == ["base", "via-helper", "shadow"]


def test_unfinished_tasks_are_those_still_the_released_stub(tmp_path):
    module = _module(tmp_path)
    assert unfinished_tasks(module) == []
    module.source.write_text(release_source(module.source, stub=True), encoding="utf-8")
    assert unfinished_tasks(module) == ["base", "other", "via-helper", "shadow", "via-given", "chain"]


def test_task_table_marks_what_comes_in_through_another_task(tmp_path):
    table = task_table(_module(tmp_path), tmp_path)
    assert "| `chain` | - | `base` (via `via-helper`), `via-helper`, `shadow` |" in table
    assert "| `base` | - | - |" in table


def test_readme_task_tables_are_rendered_from_the_code():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(README_BEGIN), readme.index(README_END) + len(README_END)
    graded = [m for m in all_modules(REPO) if (m.tests_folder(REPO) / "points.toml").exists()]
    assert readme[start:end] == readme_block(REPO, graded), \
        "README's task tables drifted from the code: run `tito tasks --readme README.md`"


def test_tito_tasks_prints_a_table_and_refuses_a_readme_without_markers(tmp_path):
    proc = run_tito(REPO, "tasks", "20")
    assert proc.returncode == 0 and "| `distill` |" in proc.stdout
    plain = tmp_path / "README.md"
    plain.write_text("# no markers\n", encoding="utf-8")
    proc = run_tito(REPO, "tasks", "--readme", str(plain))
    assert proc.returncode == 1 and "tito: " in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
