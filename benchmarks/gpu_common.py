"""What the GPU benchmark's sections share: the time budget, "not available" results, git provenance, syncs."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class NotAvailable(RuntimeError):
    """A path the checked-out library does not provide (reported as n/a, not as a failure)."""


class Budget:
    """Seconds left of ``--budget-s`` since the start of the script."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.time(), seconds

    def left(self) -> float:
        return self.seconds - (time.time() - self.start)


def git_info() -> dict:
    """The repository's commit and whether the working tree differs from it."""
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _free(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
