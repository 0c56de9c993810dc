"""`tito autograder`: the Gradescope bundle runs end to end in a folder laid out like /autograder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tito_testlib import FIXTURES, run_tito


@pytest.fixture(scope="module")
def bundle(course, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    proc = run_tito(course, "autograder", "02_prune", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_bundle_layout(bundle):
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
    for required in ("setup.sh", "run_autograder", "requirements.txt", "kit/manifest.json", "kit/grade_child.py",
                     "kit/tests/02_prune/test_hidden_prune.py", "kit/pkg/tinytorch/core/tensor.py", "tito/grade.py"):
        assert required in names
    assert modes["run_autograder"] == 0o755 and modes["setup.sh"] == 0o755
    # the reference solution is not shipped: only the manifest collected against it
    assert not any(n.endswith("compression/prune.py") for n in names)


def test_setup_script_is_valid_bash(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as z:
        z.extract("setup.sh", tmp_path)
        requirements = z.read("requirements.txt").decode()
    assert subprocess.run(["bash", "-n", str(tmp_path / "setup.sh")]).returncode == 0
    assert "numpy" in requirements and "pytest" in requirements and "nbdev" in requirements


def test_shipped_grader_needs_no_private_pytest_module(bundle):
    # requirements.txt leaves pytest unpinned, and pytest moves its private modules between
    # releases (9.2 removed _pytest.python_api): the grader may only reach pytest by its public names
    import re

    with zipfile.ZipFile(bundle) as z:
        for name in ("kit/grade_child.py", "tito/grade.py", "tito/grade_child.py"):
            source = z.read(name).decode()
            assert not re.search(r"^\s*(from|import)\s+_pytest\b|import_module\(\s*['\"]_pytest", source, re.M), name


@pytest.mark.parametrize("submission, score", [("solution", 5), ("partial.py", 2), ("empty", 0)])
def test_run_autograder_locally(bundle, course, tmp_path, submission, score):
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as z:
        z.extractall(root / "source")
    os.chmod(root / "source" / "run_autograder", 0o755)
    (root / "submission").mkdir()
    if submission == "solution":
        shutil.copyfile(course / "modules" / "02_prune" / "prune_dev.py", root / "submission" / "prune_dev.py")
    elif submission != "empty":
        shutil.copyfile(FIXTURES / "submissions" / submission, root / "submission" / submission)
    env = {"PATH": os.environ["PATH"], "AUTOGRADER_ROOT": str(root), "TITO_PYTHON": sys.executable,
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=300)
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == score, proc.stdout + proc.stderr
    assert len(results["tests"]) == 7
    if submission == "empty":
        assert "no .py or .ipynb file" in results["output"]
