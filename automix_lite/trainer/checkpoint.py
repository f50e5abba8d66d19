"""Crash-safe checkpoints: atomic writes, the last K kept, truncated files detected on resume; plus the run-folder
bookkeeping the trainer needs (RNG states, versions, a fresh folder for a new run, atomic JSON).

A checkpoint is written to a temporary file in the run folder, flushed and fsync'ed, then renamed over its
final name (``os.replace`` is atomic on POSIX), so a crash mid-write never leaves a torn ``checkpoint.pt``.
Each save writes ``checkpoint-<tag>.pt`` and refreshes ``checkpoint.pt`` (the latest, the name the CLI and
the README use); only the newest ``keep`` tagged files are kept. On resume a file that fails to load
(truncated, corrupted) is reported and the previous one is used instead.
"""
from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _omp

__all__ = ["save_checkpoint", "load_checkpoint", "find_resume_checkpoint", "list_checkpoints",
           "CheckpointError", "rng_state", "set_rng_state", "environment_info", "versions_info", "check_out_dir",
           "set_aside_previous_run", "atomic_json"]

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
        obj = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only: no code runs
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


# ----------------------------------------------------------------------------- run-folder bookkeeping
def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state as tensors and plain Python values, so a checkpoint loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "generator": generator.get_state()}


def _numpy_state(state: Any) -> tuple:
    if isinstance(state, dict):  # format written by rng_state
        keys = state["keys"].numpy().astype(np.uint32)
        return (state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    return state  # a checkpoint from before RNG states were stored as tensors


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        # a run saved on more GPUs than this machine has (an 8-GPU run resumed on one): restore the states of
        # the devices that exist; under torchrun every rank restores its own device's state the same way
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    generator.set_state(state["generator"])


def environment_info(device: torch.device, world_size: int) -> dict[str, Any]:
    import timm

    env = {"python": platform.python_version(), "torch": str(torch.__version__), "timm": str(timm.__version__),
           "platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device": str(device),
           "world_size": world_size, "omp_wait_policy": _omp.WAIT_POLICY}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the output folder {str(out)!r} ({e.strerror}); pass a writable "
                              "folder with out=... / --out DIR") from e


_RUN_FILES = ("metrics.jsonl", "metrics.json", "checkpoint.pt", "curves.png", "masks.png")


def set_aside_previous_run(out: Path) -> None:
    """A NEW run (no resume) in a folder that holds an earlier run: move that run's files to
    ``out/previous_run/`` (replacing an older one there), so the new history never mixes with the old."""
    old = [out / n for n in _RUN_FILES if (out / n).exists()] + sorted(out.glob("checkpoint-*.pt"))
    if not old:
        return
    backup = out / "previous_run"
    if backup.exists():
        shutil.rmtree(backup)
    backup.mkdir()
    for p in old:
        os.replace(p, backup / p.name)
    print(f"[automix_lite] {out} held an earlier run; this new run starts fresh and the old files were moved to "
          f"{backup}. To continue a run instead, pass resume={str(out)!r} (CLI: --resume DIR).", file=sys.stderr)


def versions_info() -> dict[str, str]:
    import timm

    from .._version import __version__

    return {"automix_lite": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "numpy": np.__version__, "python": platform.python_version()}


def atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
