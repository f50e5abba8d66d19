"""The figures a run leaves in its folder: ``curves.png`` and ``masks.png``, drawn by ``FiguresCallback``.

``train`` adds the callback on rank 0; it draws when training ends, from what the run holds (model, history,
a validation batch), never from inside the training loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..core.automix import AutoMix
from ..core.mixing import mix_images
from ..trainer.callbacks import Callback, TrainState
from ..trainer.config import TrainConfig
from ..trainer.data import denormalize
from ..trainer.diagnostics import figure_masks

__all__ = ["FiguresCallback", "draw_figures", "draw_state_figures", "figure_mix"]


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

    from . import viz  # matplotlib: loaded when a figure is drawn, not at import

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
    from . import viz

    if isinstance(model, AutoMix):
        own, perm = figure_masks(model, x)  # [n, 1, H, W], partner = image i-1
        return own, perm, "AutoMix"
    mixed = viz.mix_distinct_pairs(x, y, cfg.method, seed=cfg.seed, alpha=cfg.alpha)
    return mixed.mask, mixed.perm, cfg.method  # [n, 1, H, W], [n]
