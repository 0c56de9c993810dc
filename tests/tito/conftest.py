"""Shared fixtures for tito's own tests: the fixture course under fixtures/, copied and exported once."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tito_testlib import FIXTURES, run_tito  # noqa: E402

# The fixture course's own tests and the submissions are data for these tests, not tests to collect.
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="session")
def course(tmp_path_factory) -> Path:
    """A fresh, exported copy of the fixture course (modules 01_tensor and graded 02_prune)."""
    root = tmp_path_factory.mktemp("course") / "course"
    shutil.copytree(FIXTURES / "course", root, ignore=shutil.ignore_patterns("__pycache__"))
    proc = run_tito(root, "export", "--all")
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="session")
def kit(course, tmp_path_factory):
    from tito.grading.kit import build_kit
    from tito.modules import resolve

    cwd = os.getcwd()
    os.chdir(course)
    try:
        return build_kit(course, resolve(course, "02"), tmp_path_factory.mktemp("kit") / "kit")
    finally:
        os.chdir(cwd)
