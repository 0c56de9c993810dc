"""`tito autograder MODULE --out autograder.zip`: a Gradescope autograder bundle.

The zip holds what Gradescope's autograder format asks for at its top level:
- `setup.sh`: run once, as root, on Gradescope's Ubuntu image: gets the Python the bundle was
  built with (same major.minor; from apt if the image lacks it, or it stops with a clear message)
  and installs `requirements.txt` into a venv at /autograder/venv;
- `requirements.txt`: every requirement pinned (`name==version`) to the version installed where
  the bundle is built, read with importlib.metadata: the course's dependencies and [test] extras
  (not [instructor]: nbgrader is no grading need), what grading needs, and everything those depend on;
- `run_autograder`: grades /autograder/submission into /autograder/results/results.json, in
  Gradescope's format (keys it does not define go into `extra_data`);
- `README.md`: what the bundle is, which Python it was built with, how to check it;
- `kit/`: the grading kit (tito/grading/kit.py): the package with the reference solution, which
  only the trusted test runner imports, the package without the graded module, which the student's
  process gets, the visible and hidden tests and the manifest of graded tests and points;
- `tito/`: the grading code.
Gradescope runs the autograder as root: the kit is readable by root only and the student's code
runs as an unprivileged user, so it can read neither the reference nor the hidden tests
(tito/grading/DESIGN.md).
`AUTOGRADER_ROOT` (default /autograder) and `TITO_PYTHON` let tito's own tests run the bundle
in a temporary folder laid out like /autograder; tests/tito/test_gradescope_sim.py runs it as
Gradescope does, as root, in a private mount namespace over an overlay of the root file system.
"""
from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import TitoError
from .grading.kit import build_kit
from .modules import resolve

# What grading itself imports, whatever pyproject.toml lists.
GRADING_NEEDS = ("numpy", "pytest", "nbdev", "jupytext")

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu base image when it builds the autograder.
# requirements.txt pins the versions installed where the bundle was built, with Python
# @FULL@: this script uses Python @WANT@ (the python3 of the image if it is @WANT@, else
# apt's python@WANT@) and stops with a message saying what to do if the image has neither.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
WANT="@WANT@"
SOURCE=/autograder/source
VENV=/autograder/venv

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
find_python() {
  local c
  for c in "python$WANT" python3; do
    if command -v "$c" >/dev/null 2>&1 && [ "$(version_of "$c")" = "$WANT" ]; then command -v "$c"; return 0; fi
  done
  return 1
}

apt-get update
# venv + ensurepip for python$WANT (Debian/Ubuntu ship them in python$WANT-venv); on Ubuntu 22.04
# python3 is 3.10 and python3.11 comes from universe; Ubuntu 24.04 has no python3.11 package.
if apt-cache show "python$WANT-venv" >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends "python$WANT" "python$WANT-venv"
fi
if ! PY="$(find_python)"; then
  {
    echo "setup.sh: this autograder needs Python $WANT: its requirements.txt pins the versions tested"
    echo "  with Python @FULL@, and some of them (e.g. numpy==@NUMPY@) need it."
    echo "  This image has python3 $(version_of python3 || true) ($(command -v python3 || echo 'none')) and apt offers no python$WANT."
    echo "  Fix: pick a Gradescope base image that has Python $WANT (Ubuntu 22.04: python3 is 3.10, apt has"
    echo "  python3.11; Ubuntu 24.04: python3 is 3.12), or rebuild the bundle with 'tito autograder' in an"
    echo "  environment whose Python is the one this image has."
  } >&2
  exit 1
fi
echo "setup.sh: using $PY (Python $("$PY" -c 'import platform; print(platform.python_version())'))"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "pip==@PIP@"
"$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
  -r "$SOURCE/requirements.txt"
"$VENV/bin/python" -m pip check
# fail here, at build time, rather than on the first student's submission
"$VENV/bin/python" -c "import numpy, pytest, nbdev, jupytext"
echo "setup.sh: done"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
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
# the kit holds the reference and the hidden tests: root only (the student's code runs as nobody)
[ "$(id -u)" = 0 ] && chmod -R go-rwx "$SOURCE/kit"
PYTHONPATH="$SOURCE" "$PY" -m tito.cli grade run "$ROOT/submission" --kit "$SOURCE/kit" --json "$RESULTS"
# Gradescope's format: keys it does not define go into extra_data, test numbers are strings;
# if grading itself could not run, say so on Gradescope rather than failing silently.
"$PY" - "$RESULTS" <<'PY'
import json, os, sys

path = sys.argv[1]
TOP = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
       "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
        "visibility", "extra_data"}
try:
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    assert isinstance(results, dict) and isinstance(results.get("score"), (int, float))
except Exception:
    results = {"score": 0, "output": "The autograder could not grade this submission; please contact the course staff.",
               "tests": []}


def fit(row, keys):
    extra = dict(row.get("extra_data") or {})
    extra.update({k: v for k, v in row.items() if k not in keys})
    row = {k: v for k, v in row.items() if k in keys}
    if extra:
        row["extra_data"] = extra
    return row


results = fit(results, TOP)
results["tests"] = [fit(t, TEST) for t in results.get("tests", [])]
for test in results["tests"]:
    if "number" in test:
        test["number"] = str(test["number"])
with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
os.replace(path + ".tmp", path)
PY
[ -s "$RESULTS" ] || echo '{"score": 0, "output": "The autograder could not run; please contact the course staff.", "tests": []}' > "$RESULTS"
"""

README = """# Gradescope autograder: @MODULE@

Built by `tito autograder @MODULE@` with Python @FULL@ (@IMPL@, @PLATFORM@).
Upload this zip as the assignment's autograder (Configure Autograder -> Zip file upload) and
pick a base image with Python @WANT@: `setup.sh` uses the image's python3 if it is @WANT@, else
apt's python@WANT@ (Ubuntu 22.04: python3 is 3.10, apt has python3.11; Ubuntu 24.04: python3
is 3.12). In the course repository, `python -m pytest tests/tito/test_gradescope_sim.py -s`
(as root) runs a bundle like this one as Gradescope does.

- `setup.sh` (run once by Gradescope, as root): Python @WANT@, a venv at /autograder/venv, and
  `requirements.txt` in it. It stops with a message if the image has no Python @WANT@.
- `requirements.txt`: every package pinned to the version installed where the bundle was built
  (where the course's tests ran), top-level requirements first, then what they depend on.
- `run_autograder` (run for each submission): grades /autograder/submission (a `.py` or `.ipynb`
  of the module, or a folder holding one) into /autograder/results/results.json.
- `kit/`: the grading kit. It includes the reference solution (`kit/reference/`) and the hidden
  tests: the test runner needs the reference to grade each exercise alone (the other exercises are
  the reference's). Only root can read `kit/`; the student's code runs as an unprivileged user in a
  separate process that reaches the tests only through a data-only pipe, so neither the reference
  nor the hidden tests can reach a student (tito/grading/DESIGN.md). `tito/`: the grading code.
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _course_requirements(root: Path) -> tuple[str, list[str]]:
    """The course's name and its runtime and test requirements (pyproject.toml), plus what grading needs."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        deps = re.findall(r'^\s*"([A-Za-z0-9_.\-\[\]]+[^"]*)",?\s*$', text, re.M)
        name = (re.findall(r'^name\s*=\s*"([^"]+)"', text, re.M) or [""])[0]
    else:
        project = tomllib.loads(text).get("project", {})
        deps = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("test", []))
        name = project.get("name", "")
    names = [_canonical(re.match(r"\s*([A-Za-z0-9_.\-]+)", d).group(1)) for d in deps]
    for needed in GRADING_NEEDS:
        if needed not in names:
            deps.append(needed)
    return _canonical(name), deps


def pinned_requirements(root: Path) -> tuple[list[str], list[str]]:
    """(top-level, transitive) `name==version` lines: the versions installed in this environment.

    Top level: pyproject.toml's dependencies and [test] extras, and GRADING_NEEDS.
    Transitive: everything those require here (markers evaluated for this Python and platform), so the
    bundle installs exactly the set the course was tested with.
    """
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
    except ModuleNotFoundError:  # pragma: no cover - pytest depends on packaging
        raise TitoError("building the autograder needs 'packaging': pip install -e '.[test]'") from None

    environment = default_environment()

    def applies(requirement, extra: str) -> bool:
        return requirement.marker is None or requirement.marker.evaluate({**environment, "extra": extra})

    versions: dict[str, tuple[str, str]] = {}  # canonical name -> (name as published, version)
    walked: set[tuple[str, str]] = set()  # (canonical name, extra) whose requirements are queued
    course, lines = _course_requirements(root)
    top = [Requirement(line) for line in lines]
    top = [r for r in top if applies(r, "")]
    queue = [(r, "pyproject.toml") for r in top]
    missing = []
    while queue:
        requirement, wanted_by = queue.pop(0)
        name = _canonical(requirement.name)
        try:
            dist = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{requirement.name} (needed by {wanted_by})")
            continue
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise TitoError(f"{requirement.name} {dist.version} is installed but {wanted_by} needs "
                            f"'{requirement}': fix the environment before building the autograder")
        versions.setdefault(name, (dist.metadata["Name"], dist.version))
        for extra in ["", *sorted(requirement.extras)]:
            if (name, extra) in walked:
                continue
            walked.add((name, extra))
            for text in dist.requires or []:
                child = Requirement(text)
                # with an extra, only what that extra adds: the rest was queued with extra ""
                if (extra == "" or child.marker is not None) and applies(child, extra):
                    queue.append((child, f"{dist.metadata['Name']} {dist.version}"))
    if missing:
        raise TitoError("cannot pin the autograder's requirements, not installed here: " + ", ".join(missing)
                        + ". Install the course with pip install -e '.[test]' and build again.")
    versions.pop(course, None)  # the course itself ships in the kit
    top_names = list(dict.fromkeys(_canonical(r.name) for r in top))
    first = [f"{versions[n][0]}=={versions[n][1]}" for n in top_names if n in versions]
    rest = sorted((f"{published}=={version}" for n, (published, version) in versions.items() if n not in top_names),
                  key=str.lower)
    return first, rest


def _requirements(root: Path) -> str:
    top, rest = pinned_requirements(root)
    return (
        "# Installed by setup.sh into /autograder/venv, with Python "
        f"{sys.version_info.major}.{sys.version_info.minor}.\n"
        "# Pinned by `tito autograder` to the versions installed where the bundle was built: Python "
        f"{platform.python_version()} ({platform.python_implementation()}, {sys.platform} {platform.machine()}).\n"
        "# The course's requirements (pyproject.toml: dependencies, [test]) and what grading needs:\n"
        + "\n".join(top) + "\n"
        "# What those depend on, as installed there:\n"
        + "\n".join(rest) + "\n"
    )


def _fill(template: str, module_id: str) -> str:
    try:
        numpy = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - pinned_requirements fails first
        numpy = "?"
    values = {
        "WANT": f"{sys.version_info.major}.{sys.version_info.minor}",
        "FULL": platform.python_version(),
        "IMPL": platform.python_implementation(),
        "PLATFORM": f"{sys.platform} {platform.machine()}",
        "PIP": importlib.metadata.version("pip"),
        "NUMPY": numpy,
        "MODULE": module_id,
    }
    return re.sub(r"@([A-Z]+)@", lambda m: values[m.group(1)], template)


def build_bundle(root: Path, wanted: str, out: Path, force: bool = False) -> Path:
    module = resolve(root, wanted)
    out = out.resolve()
    if out.suffix != ".zip":
        raise TitoError(f"--out must name a .zip file, got {out.name}")
    if out.exists() and not force:
        raise TitoError(f"{out} already exists; pass --force to replace it")
    requirements = _requirements(root)  # before the kit: fails fast if the environment cannot be pinned
    with tempfile.TemporaryDirectory(prefix="tito-autograder-") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        build_kit(root, module, stage / "kit")
        shutil.copytree(Path(__file__).resolve().parent, stage / "tito",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (stage / "setup.sh").write_text(_fill(SETUP_SH, module.id), encoding="utf-8")
        (stage / "run_autograder").write_text(RUN_AUTOGRADER, encoding="utf-8")
        (stage / "requirements.txt").write_text(requirements, encoding="utf-8")
        (stage / "README.md").write_text(_fill(README, module.id), encoding="utf-8")
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
