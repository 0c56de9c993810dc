"""`tito test`: a module's inline notebook tests, then its pytest suite, in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .modules import Module

STATE = ".tito_state.json"  # git-ignored: last results, shown by `tito status`


@dataclass
class ModuleResult:
    module: str
    notebook_ok: bool = False
    notebook_message: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.notebook_ok and self.failed == 0


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    # Course models are small: one BLAS thread is as fast and far steadier on shared cores.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    return env


def run_notebook(module: Module, root: Path, verbose: bool = False) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tito.run_notebook", str(module.source)],
        cwd=root, env=_env(root), capture_output=True, text=True,
    )
    output = (proc.stdout + proc.stderr).strip()
    if verbose and output:
        print(output)
    if proc.returncode == 0:
        return True, ""
    lines = [l for l in output.splitlines() if l.strip()]
    summary = next((l.strip() for l in reversed(lines) if l.startswith("  ")), lines[-1] if lines else "")
    return False, summary


def _parse_junit(path: Path) -> tuple[int, int, int, list[str]]:
    tree = ET.parse(path)
    passed = failed = skipped = 0
    failures = []
    for case in tree.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failed += 1
            message = (problem.get("message") or "").splitlines()
            failures.append(f"{case.get('name')}: {message[0] if message else 'failed'}")
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    # collection errors show up as <error> elements on a testcase or as a suite-level count
    for suite in tree.iter("testsuite"):
        errors = int(suite.get("errors", 0))
        counted = sum(1 for c in suite.iter("testcase") if c.find("error") is not None)
        failed += max(0, errors - counted)
    return passed, failed, skipped, failures


def run_pytest(folder: Path, root: Path, extra: list[str], verbose: bool) -> tuple[int, int, int, list[str]]:
    if not folder.is_dir():
        return 0, 0, 0, []
    with tempfile.TemporaryDirectory(prefix="tito-test-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(folder), "-q", f"--junitxml={junit}",
               "--tb=line" if not verbose else "--tb=short", *extra]
        proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=not verbose, text=True)
        if not junit.exists():
            out = (proc.stdout or "") + (proc.stderr or "")
            last = [l for l in out.splitlines() if l.strip()][-1:] or ["pytest did not run"]
            return 0, 1, 0, [f"pytest could not run: {last[0]}"]
        return _parse_junit(junit)


def test_module(module: Module, root: Path, pytest_args: list[str] | None = None,
                verbose: bool = False) -> ModuleResult:
    start = time.perf_counter()
    result = ModuleResult(module.id)
    result.notebook_ok, result.notebook_message = run_notebook(module, root, verbose)
    result.passed, result.failed, result.skipped, result.failures = run_pytest(
        module.tests_folder(root), root, pytest_args or [], verbose)
    result.seconds = time.perf_counter() - start
    _remember(root, result)
    return result


def test_tooling(root: Path, pytest_args: list[str] | None = None, verbose: bool = False) -> ModuleResult | None:
    """The course tooling's own tests (tests/tito), run by `tito test --all`."""
    folder = root / "tests" / "tito"
    if not folder.is_dir():
        return None
    start = time.perf_counter()
    result = ModuleResult("tito (tooling)", notebook_ok=True)
    result.passed, result.failed, result.skipped, result.failures = run_pytest(
        folder, root, pytest_args or [], verbose)
    result.seconds = time.perf_counter() - start
    return result


def print_result(result: ModuleResult, has_tests: bool) -> None:
    mark = "PASS" if result.ok else "FAIL"
    notebook = "notebook ok" if result.notebook_ok else "notebook FAILED"
    if result.module.startswith("tito"):
        notebook = ""
    tests = (f"{result.passed} passed, {result.failed} failed" if has_tests else "no pytest suite")
    print(f"{mark}  {result.module:<18} {notebook:<16} {tests}  ({result.seconds:.1f}s)")
    if result.notebook_message:
        print(f"      {result.notebook_message.strip()}")
    for failure in result.failures[:10]:
        print(f"      x {failure[:200]}")
    if len(result.failures) > 10:
        print(f"      ... and {len(result.failures) - 10} more")


def _remember(root: Path, result: ModuleResult) -> None:
    path = root / STATE
    try:
        state = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        state = {}
    state[result.module] = {**asdict(result), "ok": result.ok, "when": time.strftime("%Y-%m-%d %H:%M")}
    path.write_text(json.dumps(state, indent=1, sort_keys=True))


def remembered(root: Path) -> dict:
    path = root / STATE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}
