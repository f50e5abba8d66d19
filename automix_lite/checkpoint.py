"""Crash-safe checkpoints: atomic writes, the last K kept, truncated files detected on resume.

A checkpoint is written to a temporary file in the run folder, flushed and fsync'ed, then renamed over its
final name (``os.replace`` is atomic on POSIX), so a crash mid-write never leaves a torn ``checkpoint.pt``.
Each save writes ``checkpoint-<tag>.pt`` and refreshes ``checkpoint.pt`` (the latest, the name the CLI and
the README use); only the newest ``keep`` tagged files are kept. On resume a file that fails to load
(truncated, corrupted) is reported and the previous one is used instead.
"""
from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "find_resume_checkpoint", "list_checkpoints",
           "CheckpointError"]

LATEST = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """No loadable checkpoint where one was expected."""


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Tagged checkpoints in ``folder``, oldest first (by modification time, then name)."""
    folder = Path(folder)
    files = [p for p in folder.glob("checkpoint-*.pt") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def save_checkpoint(obj: dict, folder: str | Path, *, tag: str, keep: int = 3) -> Path:
    """Atomically write ``folder/checkpoint-<tag>.pt`` and refresh ``folder/checkpoint.pt``; prune to ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{tag}.pt"
    _atomic_torch_save(obj, path)
    latest_tmp = folder / f".{LATEST}.tmp-{os.getpid()}"
    try:  # a copy, not a link: hard links fail on some mounts (e.g. Google Drive on Colab)
        shutil.copyfile(path, latest_tmp)
        with open(latest_tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(latest_tmp, folder / LATEST)
    finally:
        latest_tmp.unlink(missing_ok=True)
    for old in list_checkpoints(folder)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def _try_load(path: Path) -> dict | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure means "not loadable"
        print(f"[automix_lite] checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
              "trying the previous one", file=sys.stderr)
        return None
    if not isinstance(obj, dict) or "model" not in obj:
        print(f"[automix_lite] {path} is not an automix_lite checkpoint; skipping", file=sys.stderr)
        return None
    return obj


def find_resume_checkpoint(resume: str | Path) -> Path:
    """The checkpoint to resume from: ``resume`` itself if it is a file, else the newest loadable one in the
    folder (``checkpoint.pt`` first, then tagged files newest first)."""
    resume = Path(resume)
    if resume.is_file():
        return resume
    if not resume.is_dir():
        raise FileNotFoundError(f"resume={str(resume)!r} does not exist; pass a run folder (the --out of an earlier "
                                "run) or a checkpoint file")
    candidates = [resume / LATEST] if (resume / LATEST).is_file() else []
    candidates += list(reversed(list_checkpoints(resume)))
    if not candidates:
        raise CheckpointError(f"no checkpoint in {str(resume)!r}: expected {LATEST} or checkpoint-*.pt")
    return candidates[0]


def load_checkpoint(path: str | Path, resume: str | Path | None = None) -> dict:
    """Load ``path``; if it is truncated or corrupted, fall back to older checkpoints in its folder."""
    path = Path(path)
    obj = _try_load(path)
    if obj is not None:
        return obj
    folder = Path(resume) if resume is not None and Path(resume).is_dir() else path.parent
    for older in reversed(list_checkpoints(folder)):
        if older.resolve() == path.resolve():
            continue
        obj = _try_load(older)
        if obj is not None:
            warnings.warn(f"checkpoint {path} was unreadable; resumed from the older {older}", stacklevel=2)
            return obj
    raise CheckpointError(f"no loadable checkpoint: {path} is truncated or corrupted and {folder} holds no older "
                          "valid one; start a new run")
