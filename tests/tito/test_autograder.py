"""`tito autograder`: the Gradescope bundle runs end to end in a folder laid out like /autograder."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from test_gradescope_sim import schema_errors
from tito_testlib import FIXTURES, run_tito

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


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
    for required in ("setup.sh", "run_autograder", "requirements.txt", "README.md", "kit/manifest.json",
                     "kit/student.py", "kit/wire.py", "kit/tests/conftest.py", "kit/tests/_shared/course_oracles.py",
                     "kit/tests/02_prune/test_hidden_prune.py", "kit/public/tinytorch/core/tensor.py",
                     "tito/grading/runner.py"):
        assert required in names
    assert modes["run_autograder"] == 0o755 and modes["setup.sh"] == 0o755
    # the reference ships for the trusted runner only, and the README says so truthfully
    assert "kit/reference/tinytorch/compression/prune.py" in names
    assert not any(n.startswith("kit/public/") and n.endswith("compression/prune.py") for n in names)
    with zipfile.ZipFile(bundle) as z:
        readme = z.read("README.md").decode()
    assert "It includes the reference solution (`kit/reference/`)" in readme and "not included" not in readme


def test_setup_script_is_valid_bash(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as z:
        z.extract("setup.sh", tmp_path)
        setup = z.read("setup.sh").decode()
        readme = z.read("README.md").decode()
    assert subprocess.run(["bash", "-n", str(tmp_path / "setup.sh")]).returncode == 0
    assert f'WANT="{PYTHON}"' in setup and not re.search(r"@[A-Z]+@", setup)
    assert f"Python {sys.version.split()[0]}" in readme


def test_requirements_are_pinned_to_this_environment(bundle):
    with zipfile.ZipFile(bundle) as z:
        text = z.read("requirements.txt").decode()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+!\-]+", line) for line in lines), lines
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name
    # the fixture course lists nothing: what grading needs, and what that depends on (pytest: pluggy)
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in pins}
    for needed in ("numpy", "pytest", "nbdev", "jupytext", "pluggy", "fastcore"):
        assert needed in names, needed
    assert f"with Python {PYTHON}." in text and f"Python {sys.version.split()[0]} (" in text


def test_the_course_requirements_are_all_pinned():
    from tito.autograder import pinned_requirements
    from tito_testlib import REPO

    top, rest = pinned_requirements(REPO)
    names = [re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in top]
    for needed in ("numpy", "pytest", "hypothesis", "scipy", "nbdev", "jupytext", "matplotlib", "tqdm"):
        assert needed in names, needed
    assert not any(line.lower().startswith("tinytorch") for line in top + rest)
    assert not any(line.lower().startswith(("nbgrader==", "ipykernel==")) for line in top + rest)  # tooling only
    every = names + [re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in rest]
    assert len(set(every)) == len(every)  # each package once


def test_pinning_names_what_is_not_installed(tmp_path):
    from tito.autograder import pinned_requirements
    from tito.errors import TitoError

    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["numpy>=1.24", "surely-not-installed-tito-dep>=1"]\n')
    with pytest.raises(TitoError, match="surely-not-installed-tito-dep"):
        pinned_requirements(tmp_path)


def test_setup_stops_with_a_clear_message_without_its_python(bundle, tmp_path):
    # an image whose python3 is 3.10 and whose apt has no python3.X-venv (e.g. Ubuntu 20.04 for 3.11)
    with zipfile.ZipFile(bundle) as z:
        z.extract("setup.sh", tmp_path)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {"apt-get": "echo apt-get \"$@\" >> " + str(tmp_path / "apt.log"),
                       "apt-cache": "exit 100", "python3": "echo 3.10"}.items():
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    proc = subprocess.run(["/bin/bash", str(tmp_path / "setup.sh")], env={"PATH": str(stubs)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"needs Python {PYTHON}" in proc.stderr and f"apt offers no python{PYTHON}" in proc.stderr, proc.stderr
    assert "python3 3.10" in proc.stderr and "Ubuntu 22.04" in proc.stderr
    assert (tmp_path / "apt.log").read_text().split() == ["apt-get", "update"]  # nothing installed, no venv


def test_shipped_grader_needs_no_private_pytest_module(bundle):
    # requirements.txt pins pytest to the version installed where the bundle is built, which may be
    # newer than the one the grader was written against, and pytest moves its private modules between
    # releases (9.2 removed _pytest.python_api): the grader may only reach pytest by its public names
    import re

    with zipfile.ZipFile(bundle) as z:
        for name in [n for n in z.namelist() if n.startswith("tito/grading/") and n.endswith(".py")] + ["kit/student.py"]:
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
    assert schema_errors(results) == []
    # the fixture's points.toml totals 5, however the rows split them
    assert math.isclose(sum(t["max_score"] for t in results["tests"]), 5, abs_tol=0.01)
    if submission == "empty":
        assert "no .py or .ipynb file" in results["output"]
