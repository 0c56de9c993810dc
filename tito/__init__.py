"""tito: the course command line (export, test, status, notebook)."""

# One BLAS thread for every process that runs course code (tito's own, its tests, notebooks,
# benchmarks, grading, and pytest through tests/conftest.py): the course's models are small, so
# one thread is as fast, and on shared cores multi-threaded BLAS can run 10x slower when another
# process competes for them. NumPy reads these once, when it loads.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
