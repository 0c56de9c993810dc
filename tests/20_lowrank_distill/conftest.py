"""Module 20 tests: the trained models and loaders come from tests/conftest.py."""
from hypothesis import settings

settings.load_profile("tinytorch-compression")  # tests/conftest.py
