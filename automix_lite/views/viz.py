"""Matplotlib figures: mix grids, AutoMix masks, training curves, the momentum schedule.

Every function returns the ``Figure`` (and saves it when ``path`` is given), so notebooks can show it and
tests can inspect it. Images are expected in [0, 1] (use ``automix_lite.trainer.data.denormalize`` first).
Figures for AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) follow the paper's layout: sample,
partner, mask, mixed result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

__all__ = ["to_image", "plot_mix_grid", "plot_automix_masks", "plot_curves", "split_curve_keys",
           "plot_momentum_schedule", "PHOTO_NAMES", "real_photos", "plot_panels", "MaskSnapshots",
           "plot_mask_evolution", "derangement", "mix_distinct_pairs"]


def to_image(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] or [H, W] tensor in [0, 1] -> an array matplotlib shows ([H, W, 3] or [H, W])."""
    x = x.detach().float().cpu().clamp(0, 1)
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    return x.numpy()


def _finish_image_grid(fig, axes, path, weights=None, label: str = "weight (0 = partner, 1 = sample)"):
    """Hide the axes of an image grid, tighten the layout, add one colour bar for the [0, 1] weight maps
    (``weights``: one of their images, if any), save when ``path`` is given; returns the figure."""
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    if weights is not None:
        bar = fig.colorbar(weights, ax=list(axes.flat), fraction=0.025, pad=0.02)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    _save(fig, path)
    return fig


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
    return _finish_image_grid(fig, axes, path)


def plot_automix_masks(images: torch.Tensor, masks: torch.Tensor, mixed: torch.Tensor, *, perm: torch.Tensor,
                       n: int = 6, path=None, title: str = "AutoMix"):
    """Columns: sample, partner, own-weight mask (1 = sample), mixed image — one row per pair.

    Args:
        images: [N, C, H, W] in [0, 1].
        masks: [N, 1, H, W] own-sample weight (channel 0 of the Mix Block output).
        mixed: [N, C, H, W] in [0, 1].
        perm: partner indices [N].
        title: name of the mixing method (title of the last column).
    """
    n, weights = min(n, images.shape[0]), None
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.9 * n), squeeze=False)
    for i in range(n):
        cells = [(images[i], "sample"), (images[int(perm[i])], "partner"), (masks[i, 0], None),
                 (mixed[i], title)]
        for j, (img, label) in enumerate(cells):
            ax = axes[i, j]
            if label is None:
                weights = ax.imshow(to_image(img), cmap="viridis", vmin=0, vmax=1)
                label = f"mask (own area {float(masks[i].mean()):.2f})"
            else:
                ax.imshow(to_image(img), cmap="gray")
            ax.set_title(label, fontsize=8)
    return _finish_image_grid(fig, axes, path, weights)


def split_curve_keys(keys) -> tuple[list[str], list[str]]:
    """Split per-epoch training terms into losses (``loss``, ``loss_*``) and the rest (λ draws, the fallback and
    Mix-Block-trained rates, the mask-loss weight, ...), both sorted. Losses share one axis; the rest live in
    [0, 1] and get their own."""
    keys = sorted(set(keys))
    losses = [k for k in keys if k == "loss" or k.startswith("loss_")]
    return losses, [k for k in keys if k not in losses]


def plot_curves(history: list[dict], *, path=None):
    """Per epoch: the training losses (left), the other logged terms — λ_mb, λ_bb, the fallback and
    Mix-Block-trained rates, the mask-loss weight — on their own axis (middle, only when logged), and the
    validation top-1 of every head (right). Axis titles: "training loss", "other terms", "val top-1 (%)"."""
    epochs = [h["epoch"] for h in history]
    losses, others = split_curve_keys(k for h in history for k in h.get("train", {}))
    ncols = 3 if others else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 3.6), squeeze=False)
    ax_l, ax_a = axes[0, 0], axes[0, -1]
    groups = [(ax_l, losses, "training loss")] + ([(axes[0, 1], others, "other terms")] if others else [])
    for ax, keys, ylabel in groups:
        for k in keys:
            ax.plot(epochs, [h["train"].get(k, np.nan) for h in history], marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, no 1.5
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel, fontsize=9)
        if keys:
            ax.legend(fontsize=7)
    heads = sorted({k for h in history for k in h.get("val", {})})
    for k in heads:
        pts = [(h["epoch"], h["val"][k]) for h in history if k in h.get("val", {})]
        ax_a.plot(*zip(*pts), marker=".", label=k)
    ax_a.set_xlabel("epoch")
    ax_a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_a.set_ylabel("val top-1 (%)")
    ax_a.set_title("val top-1 (%)", fontsize=9)
    if heads:
        ax_a.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_momentum_schedule(total_steps: int, base: float = 0.999, end: float = 0.999999, scope_start: float = 0.1,
                           *, path=None):
    """The EMA momentum of ``automix.momentum_at`` over training, shown as 1 - m on a log axis."""
    from ..core.automix import momentum_at

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


# ----------------------------------------------------------------------------- real photos and notebook helpers
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")  # skimage.data, public domain / CC0


def real_photos(size: int = 64, names: Sequence[str] = PHOTO_NAMES) -> torch.Tensor:
    """Real photos from ``skimage.data``, centre-cropped to a square and resized: ``[N, 3, size, size]`` in [0, 1].

    Args:
        size: output side in pixels.
        names: ``skimage.data`` functions returning RGB images (default: astronaut, chelsea, coffee, rocket).
    """
    import torch.nn.functional as F
    from skimage import data as skdata

    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    out = []
    for name in names:
        fn = getattr(skdata, name, None)
        if fn is None:
            raise ValueError(f"skimage.data has no image {name!r}; try one of {PHOTO_NAMES}")
        img = torch.as_tensor(np.ascontiguousarray(fn()))
        if img.ndim != 3 or img.shape[-1] < 3:
            raise ValueError(f"skimage.data.{name}() is not an RGB image (shape {tuple(img.shape)})")
        img = img[..., :3].permute(2, 0, 1).float() / 255.0  # [3, H, W]
        h, w = img.shape[-2:]
        s = min(h, w)
        img = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]  # [3, s, s] centre crop
        out.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True,
                                 align_corners=False)[0].clamp(0, 1))
    return torch.stack(out)  # [N, 3, size, size]


def plot_panels(panels: dict, *, cmaps: dict | None = None, ncols: int | None = None, size: float = 2.4,
                path=None):
    """A row (or grid) of images with titles: ``{title: array}``; 2-D arrays use ``cmaps[title]`` (viridis).

    Args:
        panels: title -> image ([H, W, 3] / [H, W] numpy array, or a tensor accepted by ``to_image``).
        cmaps: colormap per title for 2-D panels (values are shown on a fixed [0, 1] scale).
        ncols: panels per row (default: all in one row).
        size: inches per panel.
    """
    cmaps = cmaps or {}
    n = len(panels)
    ncols = ncols or max(n, 1)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    weights = None
    for ax, (title, img) in zip(axes.flat, panels.items()):
        arr = to_image(img) if isinstance(img, torch.Tensor) else np.asarray(img)
        if arr.ndim == 2:
            im = ax.imshow(arr, cmap=cmaps.get(title, "viridis"), vmin=0, vmax=1)
            weights = weights or (im if title not in cmaps else None)  # the bar reads the default (mask) colours
        else:
            ax.imshow(np.clip(arr, 0, 1))
        ax.set_title(title, fontsize=9)
    return _finish_image_grid(fig, axes, path, weights)


class MaskSnapshots:
    """Trainer callback: after every epoch, the AutoMix mask of fixed (real) image pairs at a fixed λ.

    ``train(cfg, callbacks=[snap])``; ``snap.masks`` maps epoch -> own-weight masks ``[N, 1, H, W]`` (CPU).
    The model's momentum encoder and Mix Block run in eval mode (``AutoMix.generate_mask``), so recording
    changes nothing in training. Non-AutoMix models are ignored.

    Args:
        images: ``[N, C, H, W]`` in [0, 1] (e.g. ``real_photos(32)``).
        mean, std: the dataset normalisation the model is trained with (``DatasetInfo.mean`` / ``.std``).
        lam: λ passed to the Mix Block (used only by ``lam_concat`` models).
        perm: partner of each image (default: the next one, cyclically).
        path: a file that keeps the masks across sessions: loaded when it exists, rewritten after every
            record (so a run resumed after a disconnect keeps the snapshots of its earlier epochs).
    """

    def __init__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float], lam: float = 0.5,
                 perm: torch.Tensor | None = None, path=None):
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"images must be [N>=2, C, H, W], got {tuple(images.shape)}")
        if len(mean) not in (1, images.shape[1]) or len(std) != len(mean):
            raise ValueError(f"mean/std must have 1 or {images.shape[1]} entries, got {len(mean)} / {len(std)}")
        self.images = images.detach().float().cpu()
        m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
        s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.normalized = (self.images - m) / s  # [N, C, H, W]
        self.lam = float(lam)
        self.perm = torch.roll(torch.arange(images.shape[0]), -1) if perm is None else perm.long().cpu()
        self.masks: dict[int, torch.Tensor] = {}
        self.path = None if path is None else Path(path)
        if self.path is not None and self.path.is_file():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if not torch.equal(saved["perm"], self.perm) or saved["masks"] and next(
                    iter(saved["masks"].values())).shape[-2:] != self.images.shape[-2:]:
                raise ValueError(f"{self.path} holds masks of other pairs or another image size; "
                                 "use a new path or delete the file")
            self.masks = dict(saved["masks"])

    def record(self, model, epoch: int) -> None:
        """Store ``model``'s own-weight mask of the pairs under key ``epoch`` (and in ``path``, if given)."""
        dev = next(model.parameters()).device
        mask = model.generate_mask(self.normalized.to(dev), self.lam, self.perm.to(dev))  # [N, 2, H, W]
        self.masks[int(epoch)] = mask[:, :1].float().cpu()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            torch.save({"perm": self.perm, "masks": self.masks}, tmp)
            tmp.replace(self.path)  # atomic: a disconnect never leaves a torn file

    def on_epoch_end(self, state) -> None:
        if hasattr(state.model, "generate_mask"):
            self.record(state.model, len(state.history))

    def mixed(self, epoch: int) -> torch.Tensor:
        """The pairs mixed with the mask recorded at ``epoch``: ``[N, C, H, W]`` in [0, 1]."""
        m = self.masks[epoch]
        return self.images * m + self.images[self.perm] * (1 - m)


def plot_mask_evolution(snapshots: MaskSnapshots, *, epochs: Sequence[int] | None = None, n: int = 4, path=None):
    """Rows: image pairs; columns: sample, partner, then the mixed image at each recorded epoch
    (title: epoch and own area). Shows how the Mix Block's masks change over training.

    Args:
        snapshots: a ``MaskSnapshots`` that recorded at least one epoch.
        epochs: which recorded epochs to show (default: all, at most 6 evenly spaced).
        n: number of pairs (rows).
    """
    keys = sorted(snapshots.masks)
    if not keys:
        raise ValueError("no masks recorded yet: pass the MaskSnapshots to train(cfg, callbacks=[...]) first")
    if epochs is None:
        idx = np.unique(np.linspace(0, len(keys) - 1, min(len(keys), 6)).round().astype(int))
        epochs = [keys[i] for i in idx]
    n = min(n, snapshots.images.shape[0])
    cols = 2 + len(epochs)
    fig, axes = plt.subplots(n, cols, figsize=(1.8 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_image(snapshots.images[i]))
        axes[i, 0].set_title("sample", fontsize=8)
        axes[i, 1].imshow(to_image(snapshots.images[int(snapshots.perm[i])]))
        axes[i, 1].set_title("partner", fontsize=8)
        for j, ep in enumerate(epochs, start=2):
            axes[i, j].imshow(to_image(snapshots.mixed(ep)[i]))
            axes[i, j].set_title(f"ep {ep}: own {float(snapshots.masks[ep][i].mean()):.2f}", fontsize=8)
    return _finish_image_grid(fig, axes, path)


# ----------------------------------------------------------------------------- distinct pairs for figures
def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random pairing with no fixed points (``perm[i] != i`` for every i): one random n-cycle.

    Figures that teach pairs use it so that no image is shown "mixed" with itself (``torch.randperm`` leaves
    about one fixed point per batch on average). Training never uses it: the mixers keep ``sample_perm``.

    Args:
        n: number of samples (>= 2).
        generator: optional ``torch.Generator`` for a reproducible draw.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"a pairing without fixed points needs n >= 2 samples, got {n!r}")
    order = torch.randperm(n, generator=generator)  # [n]: a random cycle order
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = torch.roll(order, -1)  # each sample's partner is the next one along the cycle
    return perm


def mix_distinct_pairs(x: torch.Tensor, y: torch.Tensor, method, *, seed: int = 0, tries: int = 100, **kwargs):
    """``mix(x, y, method, generator=Generator().manual_seed(s), **kwargs)`` for the first ``s`` in
    ``seed, seed + 1, ...`` whose pairing has no fixed points, for figures that teach pairs. The result is an
    unmodified ``mix`` output (the mixers are untouched); ``out.seed`` records the ``s`` used. ``vanilla`` pairs
    every sample with itself by definition and is returned from the first draw.
    """
    from ..core.mixing import mix

    if x.shape[0] < 2:
        raise ValueError(f"distinct pairs need at least 2 samples, got {x.shape[0]}")
    for s in range(seed, seed + tries):
        out = mix(x, y, method, generator=torch.Generator().manual_seed(s), **kwargs)
        if method == "vanilla" or bool((out.perm.cpu() != torch.arange(x.shape[0])).all()):
            out.seed = s
            return out
    raise RuntimeError(f"no pairing without fixed points in {tries} draws of {method!r}")
