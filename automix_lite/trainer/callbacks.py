"""What ``train`` tells the outside world while it runs: ``TrainState``, the ``Callback`` hooks, and the default
callback that shows progress (``ProgressBar``; ``views.figures.FiguresCallback`` draws the figures), so the
training loop itself never draws or prints a bar.

Hooks, in order: ``on_epoch_start``, ``on_step_end`` (every step), ``on_epoch_end`` (after evaluation and the
epoch checkpoint), ``on_train_end`` (after ``metrics.json``, only when the run completes). Any object with some
of these methods works; ``Callback`` is an optional base class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from .config import TrainConfig

__all__ = ["TrainState", "Callback", "CallbackList", "ProgressBar", "HOOKS"]

HOOKS = ("on_epoch_start", "on_step_end", "on_epoch_end", "on_train_end")


@dataclass
class TrainState:
    """What callbacks see. ``losses`` maps names to floats, copied from the device only when read (a callback
    that reads them every step makes every step wait for the GPU). ``mask`` / ``images`` / ``perm`` hold the
    latest training batch's mask and inputs. ``out``, ``device``, ``info`` and ``val_loader`` describe the run;
    ``summary`` is the final ``metrics.json`` content, set before ``on_train_end``."""

    cfg: TrainConfig
    model: nn.Module
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    batch_in_epoch: int = 0
    losses: Mapping[str, float] = field(default_factory=dict)
    images: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    perm: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None
    device: torch.device | None = None
    info: Any = None
    val_loader: Any = None
    summary: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class: override any of ``on_epoch_start``, ``on_step_end``, ``on_epoch_end``, ``on_train_end`` (each
    receives the ``TrainState``). Plain objects with some of these methods also work."""

    def on_epoch_start(self, state: TrainState) -> None:  # pragma: no cover - interface
        pass

    def on_step_end(self, state: TrainState) -> None:  # pragma: no cover - interface
        pass

    def on_epoch_end(self, state: TrainState) -> None:  # pragma: no cover - interface
        pass

    def on_train_end(self, state: TrainState) -> None:  # pragma: no cover - interface
        pass


class CallbackList:
    """Calls one hook on every callback that defines it, in order."""

    def __init__(self, callbacks: Iterable[Any]):
        self.callbacks = list(callbacks)

    def __call__(self, hook: str, state: TrainState) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(state)


class ProgressBar(Callback):
    """A tqdm bar per epoch: ``mode='notebook'`` (the Jupyter / Colab widget), ``'text'`` (a terminal) or
    ``'off'``; the loss in the postfix every ``log_every`` steps (the only host read it adds)."""

    def __init__(self, mode: str):
        if mode not in ("notebook", "text", "off"):
            raise ValueError(f"mode={mode!r} should be 'notebook', 'text' or 'off'")
        self.mode, self.bar = mode, None

    def _tqdm(self):
        if self.mode == "notebook":
            from tqdm.notebook import tqdm
        else:
            from tqdm import tqdm
        return tqdm

    def on_epoch_start(self, state: TrainState) -> None:
        if self.mode == "off":
            return
        self.close()
        self.bar = self._tqdm()(total=state.steps_per_epoch, initial=state.batch_in_epoch, leave=False,
                                desc=f"epoch {state.epoch + 1}/{state.cfg.epochs}", dynamic_ncols=True)

    def on_step_end(self, state: TrainState) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if state.step % state.cfg.log_every == 0:
            self.bar.set_postfix(loss=f"{state.losses.get('loss', float('nan')):.3f}")
        if state.batch_in_epoch >= state.steps_per_epoch:
            self.close()  # before the epoch's evaluation line is printed

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, state: TrainState) -> None:
        self.close()

    def on_train_end(self, state: TrainState) -> None:
        self.close()
