"""Grading as root (as on Gradescope): the student's process runs as `nobody` (uid 65534).

The runner takes that path only if `nobody` can run its interpreter and read NumPy and the
sandbox (`others_can_run`); otherwise the student's process stays root, under Landlock alone.
pyenv keeps its Python under /root (mode 0700), so a developer's or CI's tito never took it.

The end-to-end tests need root on Linux and an interpreter that `nobody` can run with NumPy: this
one if it qualifies (e.g. a venv made from /usr/bin/python3.X in /opt), else one made here in a
second or two, so that CI (root, pyenv under /root, /usr/bin/python3.11 from Debian) runs them: a
venv of /usr/bin/python3.X (the same X) in a folder under /tmp, holding a hard-linked copy of this
interpreter's NumPy (its compiled modules fit any 3.X) and a .pth line to this interpreter's
site-packages, which only the runner (root) can read: pytest, jupytext, nbdev. Without such a
/usr/bin/python3.X they skip and say why. About 20 s on a busy 2-core machine: three gradings of
the fixture course (each ~6 s), the venv ~1 s; plus the fixture course and kit other tests share.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tito.grading.runner import others_can_run
from tito_testlib import REPO

NOBODY = 65534


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


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def nobody_python():
    """An interpreter that `nobody` can run and import NumPy with (see the module's docstring)."""
    import numpy

    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the nobody path is taken only by a grader running as root on Linux")
    if others_can_run(sys.executable, numpy.__file__):
        yield sys.executable
        return
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists() or not others_can_run(str(system)):
        pytest.skip(f"nobody cannot run {sys.executable} or read its NumPy, and there is no {system} to make a venv of")
    folder = Path(tempfile.mkdtemp(prefix="tito-nobody-python-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        venv = folder / "venv"
        proc = subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"{system} -m venv failed: {proc.stderr.strip()[-200:]}")
        python = venv / "bin" / "python"
        purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                      capture_output=True, text=True, check=True).stdout.strip())
        numpy_dir = Path(numpy.__file__).parent
        for name in (numpy_dir.name, numpy_dir.name + ".libs"):  # numpy.libs: the wheel's OpenBLAS
            if (numpy_dir.parent / name).is_dir():
                shutil.copytree(numpy_dir.parent / name, purelib / name, copy_function=_link_or_copy)
        (purelib / "tito-test-runner.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        if not others_can_run(str(python), str(purelib / "numpy" / "__init__.py")):
            pytest.skip(f"nobody cannot run {python} or read its NumPy (umask {oct(os.umask(0o022))}?)")
        yield str(python)
    finally:
        shutil.rmtree(folder)


PROBE = '''
import json as _json, os as _os, signal as _signal, socket as _socket

def _attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return type(exc).__name__

_probes = {
    "kit": lambda: open(@KIT@ + "/manifest.json").read(),
    "reference": lambda: open(@REFERENCE@).read(),
    "root": lambda: _os.listdir("/root"),
    "environ": lambda: open(f"/proc/{_os.getppid()}/environ", "rb").read(),
    "mem": lambda: open(f"/proc/{_os.getppid()}/mem", "rb").read(1),
    "signal": lambda: _os.kill(_os.getppid(), _signal.SIGCONT),
    "write": lambda: open(@OUTSIDE@, "w").write("x"),
    "tcp": lambda: _socket.create_connection(("127.0.0.1", @PORT@), timeout=5).close(),
}
_outcomes = {name: _attempt(action) for name, action in _probes.items()}
print("PROBE", _os.getuid(), _json.dumps({k: v for k, v in sorted(_outcomes.items()) if v != "PermissionError"}))
'''


def _grade(python: str, kit: Path, submission: Path, tmpdir: Path, *args: str) -> dict:
    out = tmpdir.parent / "results.json"
    proc = subprocess.run([python, "-m", "tito.cli", "grade", "run", str(submission), "--kit", str(kit), "--json",
                           str(out), *args], env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmpdir)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


@pytest.fixture
def setting(course, kit, public_dir):
    """The kit (mode 0700) in a folder everyone can traverse, a probing submission and a TCP listener."""
    public_kit = public_dir / "kit"
    shutil.copytree(kit.folder, public_kit)
    public_kit.chmod(0o700)
    outside = public_dir / "outside"  # root's: only the runner may write there
    outside.mkdir()
    (public_dir / "tmp").mkdir()
    (public_dir / "tmp").chmod(0o755)
    listener = socket.create_server(("127.0.0.1", 0))
    source = (course / "modules" / "02_prune" / "prune_dev.py").read_text()
    cell = source.index("def sparsity")
    probe = (PROBE.replace("@KIT@", repr(str(public_kit)))
             .replace("@REFERENCE@", repr(str(public_kit / "reference" / "tinytorch" / kit.manifest["export_targets"][0])))
             .replace("@OUTSIDE@", repr(str(outside / "new.txt"))).replace("@PORT@", str(listener.getsockname()[1])))
    submission = public_dir / "prune_dev.py"
    submission.write_text(source[:cell] + probe.lstrip() + "\n" + source[cell:])
    yield {"kit": public_kit, "submission": submission, "tmp": public_dir / "tmp", "outside": outside}
    listener.close()


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "uid-alone"])
def test_the_student_runs_as_nobody_and_cannot_reach_the_kit_the_runner_or_the_network(nobody_python, setting, landlock):
    results = _grade(nobody_python, setting["kit"], setting["submission"], setting["tmp"],
                     *([] if landlock else ["--no-landlock"]))
    sandbox = results["extra_data"]["sandbox"]
    assert sandbox.endswith(f"user: {NOBODY}"), sandbox
    abi = int(sandbox.split("landlock abi ")[1].split(";")[0]) if "landlock abi " in sandbox else 0
    # the uid alone keeps the kit (0700), /root, the runner's /proc files and signals, root's folders
    # out of reach; TCP is Landlock's (ABI 4)
    expected = {} if abi >= 4 else {"tcp": "done"}
    assert f"PROBE {NOBODY} {json.dumps(expected)}" in results["output"], results["output"]
    assert results["score"] == 5, results["output"]  # the probe costs nothing: each task graded in full
    assert not (setting["outside"] / "new.txt").exists()
    assert list(setting["tmp"].iterdir()) == []  # the sandbox, with its files owned by nobody, is gone


def test_a_sandbox_nobody_cannot_reach_keeps_the_student_as_root(nobody_python, setting, tmp_path):
    """A TMPDIR in a private folder: the student's process stays root (under Landlock) and grades
    the same, instead of failing to open its own program."""
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    results = _grade(nobody_python, setting["kit"], setting["submission"], private)
    assert results["extra_data"]["sandbox"].endswith("user: 0"), results["extra_data"]["sandbox"]
    assert results["score"] == 5, results["output"]
