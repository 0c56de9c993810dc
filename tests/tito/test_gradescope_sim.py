"""The Gradescope bundle of 18_compression, run as Gradescope runs it, as root, without touching /.

Gradescope builds an image: it unzips the bundle to /autograder/source, runs setup.sh once as
root and copies run_autograder to /autograder/run_autograder; then, for every submission, a fresh
container from that image gets the student's files in /autograder/submission, runs
/autograder/run_autograder from /autograder and reads /autograder/results/results.json.

Here each "container" is an overlay of the root file system in a private mount namespace
(`unshare --mount --propagation private`): its upper layer is on a tmpfs mounted inside that
namespace, so whatever setup.sh and run_autograder write (apt into /usr, /etc and /var, pip into
/autograder/venv) lands there and vanishes with the namespace. The container sees an empty /root,
/tmp and apt cache (as an image has: not this machine's pip configuration, wheel mirrors or
downloaded packages), so apt and pip download what Gradescope would download. Only the exchange
folder io/ (in pytest's tmp dir) is bound in writable. The host is fingerprinted before and after.

Needs root, unshare and overlayfs, and the network (Debian/Ubuntu apt, PyPI). Without root or
unshare (or with TITO_SKIP_GRADESCOPE_SIM=1) it skips, except in CI (CI=true), where it fails.
About 2 minutes here: setup.sh 30-70 s (apt about 20 s, pip about 40 s), each submission under
11 s. `python tests/tito/test_gradescope_sim.py` runs it and prints
the timings and scores.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tito_testlib import REPO, run_tito  # noqa: E402

MODULE = "18_compression"
SOLUTION = REPO / "modules" / MODULE / "compression_dev.py"
POINTS = REPO / "tests" / MODULE / "points.toml"

VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
NUMBER = (int, float)

# Runs inside `unshare --mount --propagation private`: the mounts below exist in that namespace
# only. $1 is the host work folder; $1/io is the one host folder the containers can write.
DRIVER = r"""#!/usr/bin/env bash
set -euo pipefail
IO="$1/io"
L="$1/layers"
mkdir -p "$L"
mount -t tmpfs -o mode=0700 tito-gradescope-sim "$L"
now() { echo $(( $(date +%s%N) / 1000000 )); }
CLEAN_ENV=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
           LANG=C.UTF-8 TERM=dumb)

# a fresh container: an overlay with its own (tmpfs) upper layer over the lower layers in $2
container() {
  local name="$1" lower="$2"
  mkdir -p "$L/$name/upper" "$L/$name/work" "$L/$name/root"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$L/$name/upper,workdir=$L/$name/work" "$L/$name/root"
  R="$L/$name/root"
  mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"
  mount -o remount,bind,ro "$R/sys"
  mount -t tmpfs -o mode=0755 dev "$R/dev"
  for d in null zero full random urandom tty; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
  mkdir -p "$R/dev/pts" "$R/dev/shm"
  mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  ln -s /proc/self/fd/0 "$R/dev/stdin"
  ln -s /proc/self/fd/1 "$R/dev/stdout"
  ln -s /proc/self/fd/2 "$R/dev/stderr"
  mount -t tmpfs -o mode=1777 tmp "$R/tmp"
  mount -t tmpfs -o mode=0700 root "$R/root"
  mkdir -p "$R/gs-io"
  mount --bind "$IO" "$R/gs-io"
}

# 1. the image: /autograder/source, setup.sh once (with an image's empty apt lists and cache)
container image /
mount -t tmpfs -o mode=0755 apt-lists "$R/var/lib/apt/lists"
mount -t tmpfs -o mode=0755 apt-archives "$R/var/cache/apt/archives"
start=$(now)
status=0
chroot "$R" "${CLEAN_ENV[@]}" bash -c '
  set -eo pipefail
  mkdir -p /autograder/source
  cp -a /gs-io/source/. /autograder/source/
  cd /autograder/source
  bash ./setup.sh 2>&1 | while IFS= read -r line; do printf "[%4ds] %s\n" "$SECONDS" "$line"; done
  cp /autograder/source/run_autograder /autograder/run_autograder
' > "$IO/setup.log" 2>&1 || status=$?
echo "setup $status $(( $(now) - start ))" >> "$IO/timings"
ls -A "$L/image/upper" > "$IO/image_upper"
umount -R "$R"
[ "$status" = 0 ] || exit 3

# 2. every submission in its own fresh container over the image
for sub in "$IO"/submissions/*/; do
  name="$(basename "$sub")"
  container "run-$name" "$L/image/upper:/"
  start=$(now)
  status=0
  chroot "$R" "${CLEAN_ENV[@]}" bash -c '
    mkdir -p /autograder/submission /autograder/results
    cp -a "/gs-io/submissions/$0/." /autograder/submission/
    cd /autograder
    /autograder/run_autograder > /autograder/results/stdout 2>&1
    echo $? > /autograder/results/exit_status
    mkdir -p "/gs-io/out/$0"
    cp -a /autograder/results/. "/gs-io/out/$0/"
  ' "$name" || status=$?
  echo "$name $status $(( $(now) - start ))" >> "$IO/timings"
  umount -R "$R"
done
"""


def unavailable() -> str:
    """Why the simulation cannot run here ('' if it can)."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces and overlayfs)"
    if not shutil.which("unshare") or not shutil.which("chroot"):
        return "needs unshare and chroot (util-linux, coreutils)"
    with tempfile.TemporaryDirectory(prefix="tito-gs-probe-") as tmp:
        probe = (f"mount -t tmpfs t {tmp} && mkdir {tmp}/u {tmp}/w {tmp}/m && "
                 f"mount -t overlay o -o lowerdir=/,upperdir={tmp}/u,workdir={tmp}/w {tmp}/m && test -d {tmp}/m/usr")
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", probe],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return f"cannot mount an overlay of / in a private mount namespace: {proc.stderr.strip()}"
    return ""


def host_fingerprint() -> dict:
    """What setup.sh would change if it ran on the real root file system."""
    def listing(folder: str, stat: bool = False):
        path = Path(folder)
        if not path.is_dir():
            return None
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) if stat else p.name
                      for p in path.iterdir() if not p.is_symlink() or not stat)

    def digest(file: str):
        path = Path(file)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    return {
        "/autograder": os.path.lexists("/autograder"),
        "mounts": Path("/proc/self/mountinfo").read_text().splitlines(),
        "/": listing("/"),
        "/etc": listing("/etc"),
        "/usr/bin": listing("/usr/bin"),
        "/usr/local/bin": listing("/usr/local/bin"),
        "/usr/lib/python3/dist-packages": listing("/usr/lib/python3/dist-packages"),
        "/var/lib/apt/lists": listing("/var/lib/apt/lists", stat=True),
        "/var/cache/apt/archives": listing("/var/cache/apt/archives", stat=True),
        "dpkg status": digest("/var/lib/dpkg/status"),
    }


def extract(bundle: Path, dest: Path) -> None:
    """Unzip as Gradescope does, keeping the zip's file modes."""
    with zipfile.ZipFile(bundle) as z:
        for info in z.infolist():
            target = dest / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            if not info.is_dir():
                target.write_bytes(z.read(info))
                os.chmod(target, (info.external_attr >> 16) & 0o777 or 0o644)


def simulate(bundle: Path, submissions: dict[str, list[Path]], work: Path, timeout: float = 1800) -> dict:
    """Run `bundle` as Gradescope does, for each named submission (a list of files to upload)."""
    io = work / "io"
    extract(bundle, io / "source")
    for name, files in submissions.items():
        (io / "submissions" / name).mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, io / "submissions" / name / file.name)
    (work / "driver.sh").write_text(DRIVER, encoding="utf-8")
    before = host_fingerprint()
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", str(work / "driver.sh"), str(work)],
                          capture_output=True, text=True, timeout=timeout)
    after = host_fingerprint()
    timings = {}
    if (io / "timings").exists():
        for line in (io / "timings").read_text().splitlines():
            name, status, ms = line.split()
            timings[name] = (int(status), int(ms) / 1000)
    out = {}
    for name in submissions:
        folder = io / "out" / name
        out[name] = {
            "results": json.loads((folder / "results.json").read_text()) if (folder / "results.json").is_file() else None,
            "stdout": (folder / "stdout").read_text(errors="replace") if (folder / "stdout").is_file() else "",
        }
    return {
        "driver": proc, "timings": timings, "submissions": out,
        "setup_log": (io / "setup.log").read_text(errors="replace") if (io / "setup.log").exists() else "",
        "image_upper": (io / "image_upper").read_text().split() if (io / "image_upper").exists() else [],
        "host_changed": {k: (before[k], after[k]) for k in before if before[k] != after[k]},
    }


def schema_errors(results) -> list[str]:
    """Where `results` departs from Gradescope's results.json format (autograder specifications)."""
    errors = []

    def check(where, row, spec):
        if not isinstance(row, dict):
            return errors.append(f"{where}: not an object")
        for key, value in row.items():
            if key not in spec:
                errors.append(f"{where}: key {key!r} is not in Gradescope's format")
            elif not spec[key](value):
                errors.append(f"{where}: {key} = {value!r} has the wrong type or value")

    def number(v):
        return isinstance(v, NUMBER) and not isinstance(v, bool) and math.isfinite(v)

    def text(v):
        return isinstance(v, str)

    top = {"score": number, "execution_time": number, "output": text, "output_format": FORMATS.__contains__,
           "test_output_format": FORMATS.__contains__, "test_name_format": FORMATS.__contains__,
           "visibility": VISIBILITY.__contains__, "stdout_visibility": VISIBILITY.__contains__,
           "extra_data": lambda v: isinstance(v, dict), "tests": lambda v: isinstance(v, list),
           "leaderboard": lambda v: isinstance(v, list)}
    test = {"score": number, "max_score": number, "status": {"passed", "failed"}.__contains__, "name": text,
            "name_format": FORMATS.__contains__, "number": text, "output": text, "output_format": FORMATS.__contains__,
            "tags": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
            "visibility": VISIBILITY.__contains__, "extra_data": lambda v: isinstance(v, dict)}
    check("results", results, top)
    if not isinstance(results, dict):
        return errors
    if "score" not in results:
        errors.append("results: no top-level score")
    for i, row in enumerate(results.get("tests", [])):
        check(f"tests[{i}]", row, test)
        if isinstance(row, dict) and number(row.get("score")) and number(row.get("max_score")):
            if not 0 <= row["score"] <= row["max_score"] + 1e-9:
                errors.append(f"tests[{i}]: score {row['score']} outside [0, {row['max_score']}]")
    return errors


def total_points() -> float:
    from tito.graded import load_points  # the grader's own reading of points.toml

    return load_points(POINTS.parent).total


def build_submissions(work: Path) -> tuple[Path, dict[str, list[Path]]]:
    """The bundle of 18_compression and the three submissions: solution, released stub, solution as .ipynb."""
    bundle = work / "autograder.zip"
    proc = run_tito(REPO, "autograder", MODULE, "--out", str(bundle), tmpdir=work / "tmp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    release = work / "release"
    proc = run_tito(REPO, "release", MODULE, "--out", str(release), tmpdir=work / "tmp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (stub,) = release.rglob(SOLUTION.name)
    notebook = work / "notebook" / SOLUTION.with_suffix(".ipynb").name
    notebook.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "-o", str(notebook), str(SOLUTION)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return bundle, {"solution": [SOLUTION], "stub": [stub], "notebook": [notebook]}


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    reason = unavailable()
    if os.environ.get("CI") == "true":
        if reason:
            pytest.fail(f"the Gradescope simulation must run in CI, but it {reason}")
    elif os.environ.get("TITO_SKIP_GRADESCOPE_SIM") == "1":
        pytest.skip("TITO_SKIP_GRADESCOPE_SIM=1")
    elif reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("gradescope")
    bundle, submissions = build_submissions(work)
    run = simulate(bundle, submissions, work)
    run["total"] = total_points()
    print("\n" + report(run))
    return run


def report(run: dict) -> str:
    lines = [f"{name}: exit {status}, {seconds:.1f} s" for name, (status, seconds) in run["timings"].items()]
    for name, sub in run["submissions"].items():
        r = sub["results"]
        lines.append(f"{name}: score {r and r.get('score')} / {run.get('total')}")
    return "\n".join(lines)


def test_setup_runs_once_and_leaves_the_host_alone(simulation):
    driver = simulation["driver"]
    assert driver.returncode == 0, driver.stderr[-3000:] + simulation["setup_log"][-6000:]
    assert simulation["timings"]["setup"][0] == 0, simulation["setup_log"][-6000:]
    # setup.sh really wrote: into the overlay's upper layer, not into /
    assert {"autograder", "usr", "var"} <= set(simulation["image_upper"]), simulation["image_upper"]
    assert not simulation["host_changed"], simulation["host_changed"]


@pytest.mark.parametrize("name, full_marks", [("solution", True), ("stub", False), ("notebook", True)])
def test_submission_scores(simulation, name, full_marks):
    status, _ = simulation["timings"].get(name, (None, None))
    sub = simulation["submissions"][name]
    assert status == 0 and sub["results"] is not None, (simulation["setup_log"][-3000:], sub["stdout"][-3000:])
    results, total = sub["results"], simulation["total"]
    assert schema_errors(results) == []
    rows = results["tests"]
    assert rows, results
    assert math.isclose(sum(t["max_score"] for t in rows), total, abs_tol=0.01), [t["max_score"] for t in rows]
    expected = total if full_marks else 0
    assert math.isclose(results["score"], expected, abs_tol=1e-6), (results.get("output"), sub["stdout"][-3000:])
    assert math.isclose(sum(t["score"] for t in rows), expected, abs_tol=0.01)


def test_schema_check_catches_departures():
    good = {"score": 1.0, "output": "", "visibility": "visible", "tests": [
        {"name": "a", "number": "1", "score": 1.0, "max_score": 1.0, "status": "passed", "visibility": "after_published"}]}
    assert schema_errors(good) == []
    assert schema_errors({**good, "visibility": "later"})
    assert schema_errors({**good, "max_score": 1})  # not a key of Gradescope's format
    assert schema_errors({**good, "tests": [{**good["tests"][0], "number": 1}]})
    assert schema_errors({**good, "tests": [{**good["tests"][0], "score": 2.0}]})
    assert schema_errors({"tests": []})


if __name__ == "__main__":
    reason = unavailable()
    if reason:
        sys.exit(f"cannot simulate Gradescope here: {reason}")
    with tempfile.TemporaryDirectory(prefix="tito-gradescope-") as tmp:
        bundle, submissions = build_submissions(Path(tmp))
        run = simulate(bundle, submissions, Path(tmp))
        run["total"] = total_points()
        print(run["setup_log"][-2000:])
        print(report(run))
        print("host changed:", run["host_changed"] or "nothing")
