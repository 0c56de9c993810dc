"""tito: the course command line (export, test, status, notebook)."""

# One BLAS thread for every process that runs course code (tito's own, its tests, notebooks,
# benchmarks, grading) and, through the `tinytorch/__init__.py` that `tito export` writes from
# it, every process that imports tinytorch before NumPy (pytest through tests/conftest.py, the
# notebooks in Jupyter): the course's models are small, so one thread is as fast, and on shared
# cores multi-threaded BLAS can run 10x slower when another process competes for them. NumPy
# reads these once, when it loads. The one place the setting is written.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
