"""Shared test set-up. automix_lite is imported before any test module imports torch, so the test processes run
with OpenMP's passive wait like the CLI (automix_lite/_omp.py) and tests see no 'torch imported first' warning."""
import automix_lite  # noqa: F401  (first: chooses OpenMP's wait policy before torch loads)
