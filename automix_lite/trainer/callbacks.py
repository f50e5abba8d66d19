"""What ``train`` tells the outside world while it runs: ``TrainState``, the ``Callback`` hooks, and the default
callbacks that show progress (``ProgressBar``) and draw ``curves.png`` / ``masks.png`` (``FiguresCallback``), so
the training loop itself never draws or prints a bar.

Hooks, in order: ``on_epoch_start``, ``on_step_end`` (every step), ``on_epoch_end`` (after evaluation and the
epoch checkpoint), ``on_train_end`` (after ``metrics.json``, only when the run completes). Any object with some
of these methods works; ``Callback`` is an optional base class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from .config import TrainConfig

__all__ = ["TrainState", "Callback", "CallbackList", "ProgressBar", "FiguresCallback", "draw_figures",
           "draw_state_figures", "HOOKS"]

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


class FiguresCallback(Callback):
    """Writes ``curves.png`` (losses and top-1 per epoch) and, for every method with a pixel mask, ``masks.png``
    (real validation images, their partners, the masks, the mixes; AutoMix: the trained Mix Block at λ = 0.5, image
    i mixed with image i-1, as ``diagnostics.figure_masks`` pairs them) into the run folder when training ends.
    ``train`` adds it on rank 0.

    Args:
        draw: ``draw(state)`` replaces the drawing (default: ``draw_state_figures``).
    """

    def __init__(self, draw: Callable[[TrainState], None] | None = None):
        self.draw = draw or draw_state_figures

    def on_train_end(self, state: TrainState) -> None:
        self.draw(state)


def draw_state_figures(state: TrainState) -> None:
    """``draw_figures`` for the run a ``TrainState`` describes."""
    draw_figures(state.model, state.cfg, state.val_loader, state.info, state.history, Path(state.out), state.device)


def draw_figures(model, cfg: TrainConfig, val_loader, info, history, out: Path, device) -> None:
    """``curves.png`` always; ``masks.png`` when the method mixes in pixel space (see ``FiguresCallback``)."""
    import matplotlib.pyplot as plt

    from ..views import viz
    from .data import denormalize
    from ..core.mixing import mix_images

    plt.close(viz.plot_curves(history, path=out / "curves.png"))
    x, y = next(iter(val_loader))
    x, y = x[:8].to(device), y[:8].to(device)
    if x.shape[0] < 2 or cfg.method in ("vanilla", "manifoldmix"):  # nothing mixed in pixel space
        return
    own, perm, title = figure_mix(model, cfg, x, y)
    images = mix_images(x, own, perm)  # [n, C, H, W]
    plt.close(viz.plot_automix_masks(denormalize(x.cpu(), info), own.cpu(), denormalize(images.cpu(), info),
                                     perm=perm.cpu(), path=out / "masks.png", title=title))


def figure_mix(model, cfg, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The masks drawn in ``masks.png``: ``(own [n, 1, H, W], perm [n], title)``. AutoMix: the trained Mix Block
    at λ = 0.5 (what ``diagnostics`` measures); a hand-crafted mixer: its ``mix`` output for the first seed from
    ``cfg.seed`` on whose pairing no image is its own partner (a figure that teaches pairs shows distinct ones)."""
    from ..views import viz
    from ..core.automix import AutoMix

    if isinstance(model, AutoMix):
        from .diagnostics import figure_masks

        own, perm = figure_masks(model, x)  # [n, 1, H, W], partner = image i-1
        return own, perm, "AutoMix"
    mixed = viz.mix_distinct_pairs(x, y, cfg.method, seed=cfg.seed, alpha=cfg.alpha)
    return mixed.mask, mixed.perm, cfg.method  # [n, 1, H, W], [n]
