"""tito: the course command line (export, test, status, notebook)."""
