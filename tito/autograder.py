"""`tito autograder MODULE --out autograder.zip`: a Gradescope autograder bundle.

The zip holds what Gradescope's autograder format asks for at its top level:
- `setup.sh`: run once, as root, on Gradescope's Ubuntu image: installs Python and, in a venv
  at /autograder/venv, the course's requirements (`requirements.txt`);
- `run_autograder`: grades /autograder/submission into /autograder/results/results.json;
- `kit/`: the grading kit (the package without the graded module, its visible and hidden tests,
  the manifest of graded tests and points, and the sandboxed test runner);
- `tito/`: the grading code.
The reference solution is not in the bundle: the manifest was collected against it here.
`AUTOGRADER_ROOT` (default /autograder) and `TITO_PYTHON` let tito's own tests run the bundle
in a temporary folder laid out like /autograder.
"""
from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from .errors import TitoError
from .grade import build_kit
from .modules import resolve

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu base image when it builds the autograder.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip
python3 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --no-cache-dir --upgrade pip
/autograder/venv/bin/python -m pip install --no-cache-dir -r /autograder/source/requirements.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this (copied to /autograder/run_autograder) for every submission.
# The student's files are in $ROOT/submission; the score goes to $ROOT/results/results.json.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
PY="${TITO_PYTHON:-$ROOT/venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
mkdir -p "$ROOT/results"
RESULTS="$ROOT/results/results.json"
rm -f "$RESULTS"
cd "$SOURCE"
PYTHONPATH="$SOURCE" "$PY" -m tito.cli grade "$ROOT/submission" --kit "$SOURCE/kit" --json "$RESULTS"
if [ ! -s "$RESULTS" ]; then
  # grading itself could not run: say so on Gradescope rather than failing silently
  PYTHONPATH="$SOURCE" "$PY" - "$RESULTS" <<'PY'
import json, sys
json.dump({"score": 0, "output": "The autograder could not grade this submission; please contact the course staff.",
           "tests": []}, open(sys.argv[1], "w"))
PY
fi
"""


def _requirements(root: Path) -> str:
    """The course's runtime and test requirements, read from pyproject.toml."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib

        data = tomllib.loads(text)
        project = data.get("project", {})
        deps = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("test", []))
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        deps = re.findall(r'^\s*"([A-Za-z0-9_.\-\[\]]+[^"]*)",?\s*$', text, re.M)
    # what grading itself needs, whatever the course lists
    for needed in ("numpy>=1.24", "pytest>=7.4", "nbdev>=3.0,<4", "jupytext>=1.16"):
        name = re.match(r"[A-Za-z0-9_.\-]+", needed).group(0).lower()
        if not any(re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower() == name for d in deps):
            deps.append(needed)
    return "# installed by setup.sh into /autograder/venv\n" + "\n".join(deps) + "\n"


def build_bundle(root: Path, wanted: str, out: Path, force: bool = False) -> Path:
    module = resolve(root, wanted)
    out = out.resolve()
    if out.suffix != ".zip":
        raise TitoError(f"--out must name a .zip file, got {out.name}")
    if out.exists() and not force:
        raise TitoError(f"{out} already exists; pass --force to replace it")
    with tempfile.TemporaryDirectory(prefix="tito-autograder-") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        build_kit(root, module, stage / "kit")
        shutil.copytree(Path(__file__).resolve().parent, stage / "tito",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (stage / "setup.sh").write_text(SETUP_SH, encoding="utf-8")
        (stage / "run_autograder").write_text(RUN_AUTOGRADER, encoding="utf-8")
        (stage / "requirements.txt").write_text(_requirements(root), encoding="utf-8")
        partial = out.with_name(out.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(stage.rglob("*")):
                if path.is_dir():
                    continue
                relative = path.relative_to(stage).as_posix()
                info = zipfile.ZipInfo(relative, date_time=(2020, 1, 1, 0, 0, 0))
                executable = relative in ("setup.sh", "run_autograder")
                info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                bundle.writestr(info, path.read_bytes())
        partial.replace(out)
    return out
