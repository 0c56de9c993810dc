"""The given notebooks beside module 09's lesson (blocks, channels, ...) run top to bottom as scripts,
so their inline checks pass and their measured numbers print (ungraded). `tito test 09` runs only
the lesson notebook itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "modules" / "09_spatial"
GIVEN = sorted(p for p in FOLDER.glob("*_dev.py") if p.name != "spatial_dev.py")


@pytest.mark.parametrize("notebook", GIVEN, ids=lambda p: p.stem)
def test_given_notebook_runs_as_a_script(notebook, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(notebook)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"{notebook.name} stopped:\n{result.stderr[-3000:]}"
