"""One ``train(cfg)`` for a notebook cell, the CLI and ``torchrun``.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) and every hand-crafted mixer share this loop:
SGD with the recipes' cosine schedules (per epoch, the Mix Block optionally on its own cosine:
docs/recipes.md#optimiser-and-learning-rates), AMP on GPUs (bf16 on compute capability >= 8, else fp16 with a
GradScaler; off on CPU), evaluation of every head each epoch (AutoMix has four, docs/evaluation.md),
``metrics.jsonl`` + ``metrics.json`` with the median top-1 of the last k epochs, atomic checkpoints every epoch
(last K kept) and on interruption, exact resume, and DDP under ``torchrun`` (gloo on CPU, nccl on GPU; detected
from ``RANK``/``WORLD_SIZE``).

Reliability: a non-finite loss skips the step entirely (no optimizer or EMA update, the BN statistics of that
forward pass restored) and is counted; ``max_nonfinite`` in a row stop the run with ``NonFiniteLossError`` while
the last good checkpoint stays intact. SIGTERM / a first Ctrl-C finish the current step, write a resumable
checkpoint (mid-epoch position, the epoch's running averages, every RNG state, the loader generator) and raise
``KeyboardInterrupt``; a second Ctrl-C stops at once without writing a possibly torn state. ``resume`` then
reproduces the uninterrupted run's per-step losses on CPU with ``workers=0`` (with workers > 0 the per-worker
augmentation RNG is not checkpointed, so a mid-epoch resume is statistically, not bitwise, the same). A new run
(no resume) in a folder holding an earlier run moves that run's files to ``previous_run/`` first.

Layout: this module is the entry point; ``runtime`` decides the device, precision and progress bar, ``engine``
holds the model / optimizer / evaluation pieces, ``loop`` the loop in named parts (setup, step, epoch, end of
epoch, checkpoint, summary), and ``callbacks`` the hooks plus the default progress bar and figures; the loop
itself draws nothing.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn

from . import _omp
from .fast.runtime import dist_env, init_distributed, progress_mode, resolve_amp, resolve_device
from .trainer.callbacks import Callback, CallbackList, ProgressBar, TrainState
from .trainer.checkpoint import check_out_dir
from .trainer.config import TrainConfig
from .trainer.engine import StepModule, build_model, cosine_lr, evaluate, head_names, summarize
from .trainer.loop import NonFiniteLossError, finish, fit, setup_run
from .views.figures import FiguresCallback, draw_state_figures

__all__ = ["train", "TrainResult", "TrainState", "Callback", "NonFiniteLossError", "build_model",
           "cosine_lr", "evaluate", "resolve_amp", "resolve_device", "summarize", "head_names"]

_StepModule = StepModule  # the name the reliability tests patch


@dataclass
class TrainResult:
    """Returned by ``train``: the trained model (unwrapped), the metrics dict and the run folder."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    out: Path
    info: Any = None


def train(cfg: TrainConfig, callbacks: Iterable[Any] = (), *, figures: bool = True,
          progress: str = "auto") -> TrainResult:
    """Train ``cfg.method`` on ``cfg.dataset``; returns a ``TrainResult``.

    Writes to ``cfg.out``: ``metrics.jsonl`` (one line per epoch), ``metrics.json`` (history, final top-1 of
    every head, medians of the last k epochs, best head, environment), ``checkpoint.pt`` (+ the last
    ``keep_checkpoints`` epoch files), and on rank 0 ``curves.png`` and, for pixel-mask methods, ``masks.png``
    (drawn by the default ``FiguresCallback``). A new run (``resume=None``) in a folder holding an earlier run
    moves that run's files to ``out/previous_run/`` first, so calling ``train`` twice (a re-run notebook cell)
    starts a clean history.

    Args:
        cfg: a ``TrainConfig`` (e.g. ``TrainConfig.preset("quick", epochs=2)``).
        callbacks: objects with some of ``on_epoch_start``, ``on_step_end``, ``on_epoch_end``, ``on_train_end``
            (each receives a ``TrainState``; see ``automix_lite.trainer.callbacks``).
        figures: draw ``curves.png`` / ``masks.png`` when training ends (rank 0).
        progress: ``'auto'`` (the widget bar in Jupyter / Colab, a text bar in a terminal, nothing in logs),
            ``'notebook'``, ``'text'`` or ``'off'``; see ``automix_lite.fast.runtime.progress_mode``.

    Raises:
        NonFiniteLossError: ``cfg.max_nonfinite`` non-finite losses in a row (checkpoints left as they were).
        KeyboardInterrupt: after SIGTERM / Ctrl-C, once a resumable ``checkpoint-interrupt-*.pt`` is written.
        RuntimeError: a CUDA / MPS ``cfg.device`` on a machine without one.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train() expects a TrainConfig, got {type(cfg).__name__}; use TrainConfig.preset(...)")
    cfg.validate()
    rank, world_size, local_rank = dist_env()
    device = resolve_device(cfg.device, local_rank=local_rank)
    mode = progress_mode(progress, rank=rank)
    if device.type == "cpu" and rank == 0:
        _warn_spin_wait()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # an indexed device: resolve_device never returns a bare 'cuda'
    own_group = init_distributed(device, world_size)
    out = Path(cfg.out)
    if rank == 0:
        check_out_dir(out)
    threads = torch.get_num_threads()
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    try:
        defaults = [ProgressBar(mode)] if mode != "off" else []
        extras = [FiguresCallback(lambda state: _figures(state))] if figures and rank == 0 else []
        return _run(cfg, CallbackList([*defaults, *callbacks, *extras]), device, rank, world_size, out)
    finally:
        torch.set_num_threads(threads)
        if own_group:
            dist.destroy_process_group()


_SPIN_WARNED = False


def _warn_spin_wait() -> None:
    """Warn once when OpenMP started with its spin-waiting default (torch imported before automix_lite)."""
    global _SPIN_WARNED
    if _SPIN_WARNED or not _omp.WAIT_POLICY.startswith("default"):
        return
    _SPIN_WARNED = True
    warnings.warn("torch was imported before automix_lite, so OpenMP runs with its spin-waiting default: on a "
                  "CPU shared with other processes a training step can be several times slower. Import "
                  "automix_lite before torch (or set OMP_WAIT_POLICY=PASSIVE before starting Python / the "
                  "kernel); results do not change either way.", RuntimeWarning, stacklevel=3)


def _figures(state: TrainState) -> None:
    """What the default ``FiguresCallback`` draws (looked up at call time: tests replace it to save time)."""
    draw_state_figures(state)


def _run(cfg: TrainConfig, callbacks: CallbackList, device, rank: int, world_size: int, out: Path) -> TrainResult:
    """Set up, fit, summarise; ``on_train_end`` once ``metrics.json`` is written."""
    run = setup_run(cfg, device, rank, world_size, out)
    t_start = time.time()
    state = TrainState(cfg=cfg, model=run.model, total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch,
                       history=run.history, out=out, device=device, info=run.info, val_loader=run.val_loader)
    fit(run, callbacks, state)
    state.summary = finish(run, time.time() - t_start)
    callbacks("on_train_end", state)
    return TrainResult(model=run.model, metrics=state.summary, history=run.history, out=out, info=run.info)
