"""Grading: a kit per module (kit.py), one submission at a time (submission.py) in two processes,
the trusted test runner (runner.py) and the student's (student.py), joined by wire.py; feedback
(feedback.py), batches and gradebooks (gradebook.py), the self-check (selfcheck.py). DESIGN.md
says why and what it defends against."""
