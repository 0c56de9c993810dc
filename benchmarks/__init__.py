"""Benchmark suites behind `tito bench`: measured evidence for the course's claims.

Layout: `timing.py` (interleaved, warmed-up median timing and paired ratios, the machine
description), `compression.py` (the suite of module 18: one function per table), `report.py`
(markdown report, PNG plots, the targets summary). `python -m benchmarks 18_compression` runs a
suite directly; `tito bench` runs it in a subprocess with one BLAS thread.
"""
