"""`tito bench`: run a module's benchmark suite (benchmarks/ at the repository root) and write its
report: report.md, PNG plots and results.json.

The suite runs in a fresh Python process so that one BLAS thread is set before NumPy loads:
on a shared machine multi-threaded BLAS makes timings erratic, and no table is about threading.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import ONE_BLAS_THREAD
from .errors import TitoError
from .modules import repo_root, resolve

SUITES = ("18_compression",)  # modules with a suite in benchmarks/
SCRATCH = Path("bench_results") / "scratch"  # git-ignored default output


def bench_env(root: Path) -> dict[str, str]:
    env = {**os.environ, **ONE_BLAS_THREAD}  # forced, not defaulted: no table is about threading
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    return env


def run_bench(args) -> int:
    root = repo_root()
    module = resolve(root, args.module)
    if module.id not in SUITES:
        raise TitoError(f"no benchmark suite for {module.id}; suites: {', '.join(SUITES)}", exit_code=2)
    if not (root / "benchmarks" / "__main__.py").exists():
        raise TitoError(f"benchmarks/ is missing from {root}: the suites live there")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    out = Path(args.out).resolve() if args.out else root / SCRATCH / f"{module.id}-{mode}"
    if out.exists() and not out.is_dir():
        raise TitoError(f"--out must be a folder, but {out} is a file", exit_code=2)
    shown = {"full": "", "quick": " --quick", "tiny": " --tiny"}[mode]
    tables = getattr(args, "tables", None)
    if tables is not None:
        tables = ",".join(name.strip() for name in tables.split(",") if name.strip())
        if not tables:
            raise TitoError("--tables needs table names, e.g. --tables deep_compression_lenet300", exit_code=2)
        shown += f" --tables {tables}"
    command = f"tito bench {module.id}{shown}" + (f" --out {args.out}" if args.out else "")
    cmd = [sys.executable, "-m", "benchmarks", module.id, "--mode", mode, "--out", str(out), "--command", command]
    if tables is not None:
        cmd += ["--tables", tables]
    if args.no_torch:
        cmd.append("--no-torch")
    return subprocess.run(cmd, cwd=root, env=bench_env(root)).returncode
