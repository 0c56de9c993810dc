"""The given notebooks beside the lesson (storage, pipeline, sparse, entropy, N:M, QAT) run top to
bottom as scripts, so their inline checks pass and their measured numbers print (ungraded)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "modules" / "18_compression"
GIVEN = sorted(p for p in FOLDER.glob("*_dev.py") if p.name != "compression_dev.py")


@pytest.mark.parametrize("notebook", GIVEN, ids=lambda p: p.stem)
def test_given_notebook_runs_as_a_script(notebook, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(notebook)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    stub = re.search(r"NotImplementedError: (Task [\w-]+): ", result.stderr)
    if result.returncode and stub:
        # the notebook uses a lesson function not written yet: tito test shows it waiting for that task
        raise NotImplementedError(f"{stub.group(1)}: {notebook.name} uses it")
    assert result.returncode == 0, f"{notebook.name} stopped:\n{result.stderr[-3000:]}"
