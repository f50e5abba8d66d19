"""Matplotlib figures: mix grids, AutoMix masks, training curves, the momentum schedule.

Every function returns the ``Figure`` (and saves it when ``path`` is given), so notebooks can show it and
tests can inspect it. Images are expected in [0, 1] (use ``automix_lite.data.denormalize`` first).
Figures for AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) follow the paper's layout: sample,
partner, mask, mixed result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import torch

__all__ = ["to_image", "plot_mix_grid", "plot_automix_masks", "plot_curves", "plot_momentum_schedule"]


def to_image(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] or [H, W] tensor in [0, 1] -> an array matplotlib shows ([H, W, 3] or [H, W])."""
    x = x.detach().float().cpu().clamp(0, 1)
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    return x.numpy()


def _save(fig, path) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_mix_grid(images: torch.Tensor, outputs: dict, *, titles: Sequence[str] | None = None, n: int = 4,
                  path=None):
    """One row per method: the mixed images of ``outputs[name]`` (a ``MixOutput`` with images in [0, 1])
    with λ of each sample in the title; the first row shows the originals.

    Args:
        images: the originals [N, C, H, W] in [0, 1].
        outputs: ``{method name: MixOutput}``.
        n: samples per row.
    """
    n = min(n, images.shape[0])
    rows = 1 + len(outputs)
    fig, axes = plt.subplots(rows, n, figsize=(2.0 * n, 2.1 * rows), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(to_image(images[j]), cmap="gray")
        axes[0, j].set_title(f"sample {j}", fontsize=8)
    for i, (name, out) in enumerate(outputs.items(), start=1):
        for j in range(n):
            axes[i, j].imshow(to_image(out.images[j]), cmap="gray")
            axes[i, j].set_title(f"{name} λ={float(out.lam[j]):.2f} (+{int(out.perm[j])})", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_automix_masks(images: torch.Tensor, masks: torch.Tensor, mixed: torch.Tensor, *, perm: torch.Tensor,
                       n: int = 6, path=None):
    """Columns: sample, partner, own-weight mask (1 = sample), mixed image — one row per pair.

    Args:
        images: [N, C, H, W] in [0, 1].
        masks: [N, 1, H, W] own-sample weight (channel 0 of the Mix Block output).
        mixed: [N, C, H, W] in [0, 1].
        perm: partner indices [N].
    """
    n = min(n, images.shape[0])
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.9 * n), squeeze=False)
    for i in range(n):
        cells = [(images[i], "sample"), (images[int(perm[i])], "partner"), (masks[i, 0], None),
                 (mixed[i], "AutoMix")]
        for j, (img, title) in enumerate(cells):
            ax = axes[i, j]
            if title is None:
                ax.imshow(to_image(img), cmap="viridis", vmin=0, vmax=1)
                title = f"mask (own area {float(masks[i].mean()):.2f})"
            else:
                ax.imshow(to_image(img), cmap="gray")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_curves(history: list[dict], *, path=None):
    """Training loss terms and validation top-1 of every head per epoch."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [h["epoch"] for h in history]
    keys = sorted({k for h in history for k in h.get("train", {})})
    for k in keys:
        ax_l.plot(epochs, [h["train"].get(k, np.nan) for h in history], marker=".", label=k)
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss")
    if keys:
        ax_l.legend(fontsize=7)
    heads = sorted({k for h in history for k in h.get("val", {})})
    for k in heads:
        pts = [(h["epoch"], h["val"][k]) for h in history if k in h.get("val", {})]
        ax_a.plot(*zip(*pts), marker=".", label=k)
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("val top-1 (%)")
    if heads:
        ax_a.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_momentum_schedule(total_steps: int, base: float = 0.999, end: float = 0.999999, scope_start: float = 0.1,
                           *, path=None):
    """The EMA momentum of ``automix.momentum_at`` over training, shown as 1 - m on a log axis."""
    from .automix import momentum_at

    t = np.linspace(0, total_steps, 400).astype(int)
    m = np.array([momentum_at(int(s), total_steps, base, end, scope_start) for s in t])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.semilogy(t / total_steps, 1 - m)
    ax.axvline(scope_start, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("training progress t/T")
    ax.set_ylabel("1 - momentum")
    ax.set_title("momentum encoder schedule")
    fig.tight_layout()
    _save(fig, path)
    return fig
