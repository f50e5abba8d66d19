"""Root pytest set-up, for every path the suite collects (tests/, demo.ipynb, notebooks/).

Notebook exercises: the suite runs every notebook with the reference solutions filled in
(notebooks/solutions/), so a broken exercise or checking cell fails CI; nbval's kernels inherit the variable.
A learner running a notebook in Jupyter does not have it set, and writes the exercises instead.
"""
import os

os.environ.setdefault("AUTOMIX_SOLUTIONS", "1")
