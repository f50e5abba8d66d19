"""OpenMP's wait policy, chosen before torch starts its thread pool (imports nothing heavy).

On a CPU shared with other processes (a browser, a notebook kernel, Colab's own services, another run),
OpenMP's default wait spins: each torch thread keeps a core busy while it waits for the other, so a neighbour
process makes a 2-thread training step several times slower (measured in ``benchmarks/busy_neighbour.py``).
``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep. OpenMP reads the variable once, when its runtime is
loaded (with torch), so it must be in the environment before ``import torch``: ``automix_lite/__init__.py``
calls :func:`prefer_passive_wait` before it imports torch. A value the user set is never overridden, and the
numbers a run computes do not depend on the policy (same threads, same reductions).
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

VAR = "OMP_WAIT_POLICY"
_USER_CHOICES = (VAR, "GOMP_SPINCOUNT")  # either one set by the user decides how libgomp waits
_RUNTIMES = ("libgomp", "libiomp", "libomp")


def openmp_loaded(modules: dict | None = None, maps: str = "/proc/self/maps") -> bool:
    """Whether an OpenMP runtime (or torch, which loads one) is already in this process."""
    try:
        with open(maps) as f:
            if any(name in line for line in f for name in _RUNTIMES):
                return True
    except OSError:  # no /proc (macOS, Windows): torch being imported is the best sign
        pass
    return "torch" in (sys.modules if modules is None else modules)


def prefer_passive_wait(environ: MutableMapping[str, str] | None = None, loaded: bool | None = None) -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose how threads wait; returns what is in effect.

    Returns one of ``'PASSIVE (set by automix_lite)'``, ``'OMP_WAIT_POLICY=<value> (set by the user)'`` (or
    ``GOMP_SPINCOUNT=<n>``, libgomp's spin count, which the user may set instead) or
    ``'default (OpenMP started before automix_lite was imported)'``; the last one means the choice came too
    late to take effect in this process (import automix_lite before torch, or set the variable before Python).
    """
    env = os.environ if environ is None else environ
    chosen = [f"{k}={env[k]}" for k in _USER_CHOICES if k in env]
    if chosen:
        return f"{', '.join(chosen)} (set by the user)"
    if openmp_loaded() if loaded is None else loaded:
        return "default (OpenMP started before automix_lite was imported)"
    env[VAR] = "PASSIVE"
    return "PASSIVE (set by automix_lite)"


#: what ``prefer_passive_wait`` found when the package was imported (recorded in ``metrics.json``)
WAIT_POLICY: str = "unknown"
