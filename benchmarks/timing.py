"""Timing that survives a noisy shared machine, and a description of the machine that was timed.

Rules every suite follows: warm up first; time every contender once per round and rotate the
order each round (so a slow moment of the machine hits all contenders alike and none always
runs first); report medians; compare contenders by the median of their per-round ratios.
"""
from __future__ import annotations

import gc
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

Measure = Callable[[], float]  # one timed run; returns seconds per call


def timed(fn: Callable[[], object], setup: Callable[[], object] | None = None, number: int = 1,
          timer: Callable[[], float] = time.perf_counter) -> Measure:
    "A measure: run `setup()` (untimed), then `fn()` `number` times; seconds per call."
    if number < 1:
        raise ValueError(f"number must be >= 1, got {number}")

    def measure() -> float:
        if setup is not None:
            setup()
        start = timer()
        for _ in range(number):
            fn()
        return (timer() - start) / number

    return measure


def interleaved(measures: dict[str, Measure], rounds: int, warmup: int = 1) -> dict[str, np.ndarray]:
    """Seconds per call of each contender, one sample per round, contenders interleaved.

    `warmup` untimed rounds run first (caches, page faults, lazy imports). Round `r` starts with
    contender `r mod n`, so every contender runs in every position equally often. The garbage
    collector is off during each timed run, as in `timeit`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not measures:
        raise ValueError("no contenders to time")
    names = list(measures)
    for _ in range(warmup):
        for name in names:
            measures[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            # Like timeit: no garbage collection while timing. A collection pass would be charged
            # to whichever contender happened to trigger it.
            enabled = gc.isenabled()
            gc.disable()
            try:
                samples[name].append(float(measures[name]()))
            finally:
                if enabled:
                    gc.enable()
    return {name: np.array(values) for name, values in samples.items()}


def summary(samples: np.ndarray) -> dict:
    "Median, quartiles and minimum of timing samples (seconds)."
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": float(np.min(samples)),
            "rounds": int(len(samples))}


def paired_ratio(numerator: np.ndarray, denominator: np.ndarray) -> dict:
    """Median and quartiles of the per-round ratio `numerator[r] / denominator[r]`.

    Both were timed in the same round, moments apart, so the machine's drift cancels out.
    As a speedup: `paired_ratio(baseline_times, candidate_times)`.
    """
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    if numerator.shape != denominator.shape:
        raise ValueError(f"paired samples must have the same length, got {numerator.shape} and {denominator.shape}")
    q1, median, q3 = np.percentile(numerator / denominator, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3)}


def format_seconds(seconds: float) -> str:
    "A duration with a unit a reader can compare at a glance: 42 µs, 3.1 ms, 1.25 s, 2 min 05 s."
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs" if seconds >= 1e-5 else f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    name, version = blas.get("name", "unknown"), blas.get("version", "")
    return f"{name} {version}".strip()


def machine() -> dict:
    "What a reader needs to compare their numbers with ours."
    info = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    }
    try:  # optional: only its version (importing torch would cost a second)
        info["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        info["torch"] = None
    return info


def commit(root: Path) -> dict:
    "The commit the code came from and whether the working tree differed from it (read-only git)."
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    head = git("rev-parse", "HEAD").strip()
    # Porcelain lines are "XY path": two status columns (often a space first), a space, the path.
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": head[:12] or "unknown", "dirty": bool(changed), "changed": changed[:20]}
