"""Grading as root (as on Gradescope): the student's process runs as `nobody` (uid 65534).

The runner takes that path only if `nobody` can run its interpreter and read NumPy and the
sandbox (`others_can_run`); otherwise the student's process stays root, under Landlock alone.
pyenv keeps its Python under /root (mode 0700), so a developer's or CI's tito never took it.
"""
from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from tito.grading.runner import others_can_run


@pytest.fixture
def public_dir():
    """A folder under /tmp that every user can traverse (pytest's tmp_path is private)."""
    folder = Path(tempfile.mkdtemp(prefix="tito-nobody-", dir="/tmp"))
    folder.chmod(0o755)
    if not all(p.stat().st_mode & stat.S_IXOTH for p in folder.parents):
        pytest.skip("/tmp is not traversable by other users")
    yield folder
    shutil.rmtree(folder)


def test_others_can_run_checks_the_path_run_and_the_files_the_student_reads(public_dir):
    python = public_dir / "python"
    python.write_text("")
    python.chmod(0o755)
    numpy = public_dir / "numpy.py"
    numpy.write_text("")
    numpy.chmod(0o644)
    private = public_dir / "private"  # a venv in a private folder, or a sandbox under a private TMPDIR
    private.mkdir()
    private.chmod(0o700)
    (private / "python").symlink_to(python)
    (private / "numpy.py").write_text("")
    assert others_can_run(str(python), str(numpy))
    assert not others_can_run(str(private / "python"), str(numpy))  # its target is public, its folder is not
    assert not others_can_run(str(python), str(private / "numpy.py"))
    numpy.chmod(0o600)
    assert not others_can_run(str(python), str(numpy))
