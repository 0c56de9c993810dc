"""`python -m benchmarks 18_compression --mode quick --out DIR`: run a suite, write its report.

`tito bench` calls this in a fresh process so that the thread settings take effect before NumPy
loads; run directly, set OPENBLAS_NUM_THREADS=1 yourself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tito.bench import SUITES

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--mode", choices=("full", "quick", "tiny"), default="full")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, the PNGs and results.json")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if it is installed")
    parser.add_argument("--tables", help="comma-separated table keys: run only these and replace their entries "
                                         "in --out's results.json (the other tables are kept as they were)")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # how the report says to reproduce the run
    args = parser.parse_args(argv)

    from . import compression, report
    from .timing import commit, format_seconds, machine

    def log(message: str) -> None:
        print(message, flush=True)

    only = None
    if args.tables is not None:
        only = [name.strip() for name in args.tables.split(",") if name.strip()]
        unknown = [name for name in only if name not in compression.TABLE_KEYS]
        if not only or unknown:
            parser.error(f"--tables: no table named {', '.join(unknown) or repr(args.tables)}; "
                         f"tables: {', '.join(compression.TABLE_KEYS)}")
        saved = Path(args.out) / "results.json"
        if saved.exists():   # refuse before the run, not after it
            saved_mode = json.loads(saved.read_text(encoding="utf-8"))["meta"]["mode"]
            if saved_mode != args.mode:
                parser.error(f"--tables: {saved} holds a {saved_mode} run; rerun its tables in {saved_mode} mode")
    cfg = compression.CONFIGS[args.mode]
    if args.no_torch:
        cfg = cfg.with_(torch=False)
    start = time.perf_counter()
    load_start = os.getloadavg()[0]  # other jobs on the machine: context for the timings
    # The code as it was when the suite started (the student-loop table re-exports the module).
    prune = ROOT / "tinytorch" / "compression" / "prune.py"
    command = args.command or f"python -m benchmarks {args.suite} --mode {args.mode} --out {args.out}"
    meta = {"module": args.suite, "mode": args.mode, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "commit": commit(ROOT), "command": command,
            "prune_sha": hashlib.sha256(prune.read_bytes()).hexdigest()[:12]}
    log(f"benchmarks {args.suite}: {args.mode} mode, writing to {args.out}")
    result = compression.run(cfg, ROOT, log, only=only)
    meta["seconds"] = time.perf_counter() - start
    meta["load"] = {"start": load_start, "end": os.getloadavg()[0]}
    if only is not None:
        result, meta = report.merge_rerun(Path(args.out) / "results.json", result, meta, compression.TABLE_KEYS)
    written = report.write(result, meta, args.out, root=ROOT)
    if Path(args.out).resolve() == (ROOT / "benchmarks" / "results").resolve():
        # The README shows this run: its numbers are rendered, never copied by hand.
        report.update_readme(ROOT / "README.md", written["summary.md"].read_text(encoding="utf-8"))
    log("")
    for title, target in report.all_targets(result["tables"]):
        log(f"  {target['status']:>12}  {target['target']}: {target['measured']}")
    log(f"\n{args.mode} run took {format_seconds(meta['seconds'])}; report: {written['report.md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
