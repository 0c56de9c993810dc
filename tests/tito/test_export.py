"""`tito export`, `tito test`, `tito status`, `tito notebook` on a tiny throwaway course."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

GOOD = textwrap.dedent('''\
    # %% [markdown]
    # # Module 01: Demo
    #
    # > A demo module for testing tito.

    # %%
    #| default_exp core.demo

    # %% nbgrader={"grade": false, "grade_id": "double", "locked": false, "solution": true, "schema_version": 3}
    #| export
    def double(x):
        "Twice x."
        ### BEGIN SOLUTION
        return 2 * x
        ### END SOLUTION

    # %%
    assert double(2) == 4
    print("ok")
    ''')


def _course(tmp_path: Path, source: str = GOOD) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.nbdev]\nnbs_path = "modules"\nlib_path = "tinytorch"\n')
    folder = tmp_path / "modules" / "01_demo"
    folder.mkdir(parents=True)
    (folder / "demo_dev.py").write_text(source)
    return tmp_path


def tito(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "tito.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_package_without_solution_markers(tmp_path):
    root = _course(tmp_path)
    proc = tito(root, "export", "01_demo")
    assert proc.returncode == 0, proc.stderr
    code = (root / "tinytorch" / "core" / "demo.py").read_text()
    assert "def double(x):" in code and "return 2 * x" in code
    assert "BEGIN SOLUTION" not in code
    assert code.startswith('"""A demo module for testing tito."""')
    assert "../../modules/01_demo/demo_dev.py" in code  # headers point back to the source
    assert (root / "tinytorch" / "__init__.py").exists()
    assert (root / "tinytorch" / "core" / "__init__.py").exists()
    assert not list((root / "modules").rglob("*.ipynb"))  # never writes into modules/


@pytest.mark.parametrize("name", ["01_demo", "01", "1", "demo"])
def test_export_accepts_number_or_name(tmp_path, name):
    assert tito(_course(tmp_path), "export", name).returncode == 0


def test_export_twice_is_byte_identical(tmp_path):
    root = _course(tmp_path)
    assert tito(root, "export", "--all").returncode == 0
    first = _snapshot(root / "tinytorch")
    assert tito(root, "export", "--all").returncode == 0
    assert _snapshot(root / "tinytorch") == first


def test_syntax_error_is_one_line_and_leaves_package_intact(tmp_path):
    root = _course(tmp_path)
    assert tito(root, "export", "01").returncode == 0
    before = _snapshot(root / "tinytorch")
    source = root / "modules" / "01_demo" / "demo_dev.py"
    source.write_text(GOOD.replace("return 2 * x", "return 2 * x)"))
    proc = tito(root, "export", "01")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    bad_line = next(i for i, l in enumerate(source.read_text().splitlines(), 1) if "2 * x)" in l)
    assert f"demo_dev.py:{bad_line}:" in lines[0] and "syntax error" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _snapshot(root / "tinytorch") == before


def test_missing_default_exp_is_a_clear_error(tmp_path):
    root = _course(tmp_path, GOOD.replace("#| default_exp core.demo", "# no default_exp"))
    proc = tito(root, "export", "01")
    assert proc.returncode != 0
    assert "default_exp" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (root / "tinytorch").exists()


@pytest.mark.parametrize("args", [["export", "99"], ["test", "nope"], ["export", "--bogus"], ["frobnicate"]])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args):
    proc = tito(_course(tmp_path), *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_module_lists_choices(tmp_path):
    proc = tito(_course(tmp_path), "export", "99")
    assert "01_demo" in proc.stderr


def test_test_command_reports_unfinished_exercise(tmp_path):
    stub = GOOD.replace("return 2 * x", 'raise NotImplementedError("Task double: return twice x")')
    root = _course(tmp_path, stub)
    proc = tito(root, "test", "01")
    assert proc.returncode == 1
    assert re.search(r"^  double\s+-\s+0/0\s+not started$", proc.stdout, re.M), proc.stdout
    assert "waits for task double" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_test_command_passes_and_status_shows_it(tmp_path):
    root = _course(tmp_path)
    proc = tito(root, "test", "01")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
    status = tito(root, "status")
    assert status.returncode == 0
    row = next(l for l in status.stdout.splitlines() if l.startswith("01_demo"))
    assert "yes" in row and "pass" in row


def test_status_notices_a_stale_export(tmp_path):
    root = _course(tmp_path)
    tito(root, "export", "01")
    source = root / "modules" / "01_demo" / "demo_dev.py"
    source.write_text(GOOD.replace("return 2 * x", "return x + x"))
    row = next(l for l in tito(root, "status").stdout.splitlines() if l.startswith("01_demo"))
    assert "NO" in row


def test_notebook_edits_are_synced_back_and_the_old_source_is_kept(tmp_path):
    import jupytext

    root = _course(tmp_path)
    assert tito(root, "notebook", "01").returncode == 0
    notebook = root / "modules" / "01_demo" / "demo_dev.ipynb"
    nb = jupytext.read(notebook)
    cell = next(c for c in nb.cells if "def double" in c.source)
    cell.source = cell.source.replace("return 2 * x", "return x * 2  # edited in Jupyter")
    time.sleep(0.05)
    jupytext.write(nb, notebook)
    future = time.time() + 5
    os.utime(notebook, (future, future))
    assert tito(root, "export", "01").returncode == 0
    source = (root / "modules" / "01_demo" / "demo_dev.py").read_text()
    assert "edited in Jupyter" in source
    assert "kernelspec" not in source
    backups = list((root / ".tito_backups").glob("*.py"))
    assert len(backups) == 1 and "return 2 * x" in backups[0].read_text()
    assert "edited in Jupyter" in (root / "tinytorch" / "core" / "demo.py").read_text()
    # a newer notebook is never overwritten by `tito notebook` without --force
    os.utime(notebook, (future + 10, future + 10))
    proc = tito(root, "notebook", "01")
    assert proc.returncode != 0 and "newer" in proc.stderr


def test_every_exported_module_has_a_docstring():
    "The notebook's summary heads every file it exports, `#| export other.module` targets included."
    import ast

    from tito_testlib import REPO

    missing = [str(p.relative_to(REPO)) for p in sorted((REPO / "tinytorch").rglob("*.py"))
               if p.name != "__init__.py" and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"no module docstring: {missing}"
