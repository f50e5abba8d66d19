"""Run diagnostics: does a run *show* AutoMix? Mask structure, mask diversity and curve stability.

AutoMix (Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027) learns a Mix Block whose masks follow the images' content (paper Fig. 1 and Fig. 5): a
mask that is one flat value is plain MixUp with an odd λ. These pure functions turn "the masks have
structure" and "the curves do not collapse" into numbers that a run records in ``metrics.json``
(``metrics["diagnostics"]``), that the CLI prints, and that tests pin:

* ``mask_structure``: the mean over pairs of the per-mask standard deviation of the own-weight mask
  (0 = every mask flat; a binary half/half mask gives 0.5).
* ``mask_diversity``: how much the masks' *shapes* differ between pairs (each mask minus its own mean,
  then the standard deviation across pairs, averaged over pixels; 0 = every pair got the same pattern).
* ``max_top1_drop``: the largest epoch-to-epoch drop of the validation top-1 of any head (a collapse).

``figure_masks`` computes the masks that ``masks.png`` draws (the trained Mix Block at λ = 0.5, partner of
image i = image i-1 of the first validation batch), so the numbers describe the figure a user looks at.
Thresholds used by the tests and the README: ``STRUCTURE_MIN`` and ``COLLAPSE_DROP``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

__all__ = ["mask_structure", "mask_diversity", "max_top1_drop", "figure_pairs", "figure_masks",
           "run_diagnostics", "diagnose", "format_diagnostics", "FIGURE_IMAGES", "FIGURE_ROWS", "STRUCTURE_MIN",
           "COLLAPSE_DROP"]

FIGURE_IMAGES = 8  # images of the first validation batch that masks.png mixes (partner = the previous one)
FIGURE_ROWS = 6  # pairs drawn in masks.png (viz.plot_automix_masks default n=6)
STRUCTURE_MIN = 0.05  # mean per-mask std above which the masks have visible structure (flat masks: ~0.01)
COLLAPSE_DROP = 5.0  # a drop of the val top-1 of any head larger than this (percentage points) is a collapse


def _own(masks: torch.Tensor) -> torch.Tensor:
    """Own-weight masks as [N, H*W] float64 from [N, 1, H, W], [N, 2, H, W] (channel 0) or [N, H, W]."""
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[0] < 1:
        raise ValueError(f"masks must be [N, 1 or 2, H, W] or [N, H, W] with N >= 1, got {tuple(masks.shape)}")
    return masks.detach().to("cpu", torch.float64).flatten(1)  # [N, H*W]


def mask_structure(masks: torch.Tensor) -> float:
    """Mean over pairs of the per-mask (population) standard deviation of the own-weight mask.

    Args:
        masks: [N, 1, H, W] own weights, [N, 2, H, W] Mix Block output (channel 0 = own) or [N, H, W].

    Returns:
        ``mean_i std_{h,w} m_i(h, w)`` in [0, 0.5]: 0 for flat masks (MixUp), 0.5 for binary half/half masks.
    """
    return float(_own(masks).std(dim=1, unbiased=False).mean())


def mask_diversity(masks: torch.Tensor) -> float:
    """How much the spatial patterns differ between pairs: mean over pixels of the std across pairs of the
    mean-centred masks ``m_i - mean(m_i)``. 0 if every pair got the same pattern (a fixed blob), whatever
    each mask's area; needs at least two masks."""
    own = _own(masks)  # [N, P]
    if own.shape[0] < 2:
        raise ValueError("mask_diversity compares pairs: it needs at least two masks")
    centred = own - own.mean(dim=1, keepdim=True)  # [N, P]
    return float(centred.std(dim=0, unbiased=False).mean())


def max_top1_drop(history: Sequence[dict[str, Any]], heads: Iterable[str] | None = None) -> dict[str, Any]:
    """Largest epoch-to-epoch drop of the validation top-1 of any head (percentage points).

    Compares consecutive evaluated epochs (records with a ``"val"`` dict) head by head.

    Args:
        history: per-epoch records ``{"epoch": e, "val": {head: top1, ...}, ...}`` (``metrics["history"]``).
        heads: heads to check (default: every head that appears in ``val``).

    Returns:
        ``{"max_drop": d, "head": h, "epoch": e}``: ``d >= 0`` (0 if every curve only rises), ``h`` the head
        and ``e`` the epoch at which it fell (None when no two evaluations exist or nothing dropped).
    """
    evaluated = [h for h in history if h.get("val")]
    names = list(heads) if heads is not None else list(dict.fromkeys(k for h in evaluated for k in h["val"]))
    worst: dict[str, Any] = {"max_drop": 0.0, "head": None, "epoch": None}
    for prev, cur in zip(evaluated, evaluated[1:]):
        for name in names:
            if name in prev["val"] and name in cur["val"]:
                drop = float(prev["val"][name]) - float(cur["val"][name])
                if drop > worst["max_drop"]:
                    worst = {"max_drop": drop, "head": name, "epoch": cur.get("epoch")}
    return worst


def figure_pairs(n: int) -> torch.Tensor:
    """Partners of the figure: image i is mixed with image i-1 (a cyclic shift, no image with itself)."""
    return torch.roll(torch.arange(n), 1)  # [n]


def figure_masks(model, images: torch.Tensor, lam: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The own-weight masks ``masks.png`` draws: ``model.generate_mask`` (eval mode, no gradient) at ``lam``.

    Args:
        model: an ``AutoMix``.
        images: a batch [N, C, H, W] (the figure: the first ``FIGURE_IMAGES`` validation images).
        lam: mixing ratio given to the Mix Block (0.5 in the figure).

    Returns:
        (own masks [N, 1, H, W], partner indices [N]).
    """
    perm = figure_pairs(images.shape[0]).to(images.device)
    return model.generate_mask(images, lam, perm)[:, :1], perm


def run_diagnostics(history: Sequence[dict[str, Any]], masks: torch.Tensor | None = None,
                    rows: int = FIGURE_ROWS) -> dict[str, Any]:
    """Everything recorded as ``metrics["diagnostics"]``: the stability measure and, given the figure's masks
    (``figure_masks``), the structure and diversity of the first ``rows`` of them (the pairs drawn)."""
    drop = max_top1_drop(history)
    out: dict[str, Any] = {"max_top1_drop": drop["max_drop"], "max_drop_head": drop["head"],
                           "max_drop_epoch": drop["epoch"], "collapse": drop["max_drop"] > COLLAPSE_DROP}
    if masks is not None:
        shown = masks[:rows]  # [rows, 1, H, W]
        std = mask_structure(shown)
        out.update(mask_std=std, mask_diversity=mask_diversity(shown) if len(shown) > 1 else 0.0,
                   mask_area=[round(float(a), 4) for a in _own(shown).mean(1)], structured=std >= STRUCTURE_MIN)
    return out


def diagnose(model, history: Sequence[dict[str, Any]], val_loader, device) -> dict[str, Any]:
    """``run_diagnostics`` of a finished run (the hook that fills ``metrics["diagnostics"]``): stability from
    ``history``; for an ``AutoMix`` model also the masks of ``masks.png`` (the first ``FIGURE_IMAGES`` images
    of the first validation batch, ``figure_masks``). Draws nothing and changes no state."""
    from ..core.automix import AutoMix

    masks = None
    if isinstance(model, AutoMix):
        x = next(iter(val_loader))[0][:FIGURE_IMAGES].to(device)  # [n, C, H, W]
        if x.shape[0] >= 2:
            masks = figure_masks(model, x)[0]
    return run_diagnostics(history, masks)


def format_diagnostics(d: dict[str, Any]) -> str:
    """One summary line for the CLI, e.g. ``mask std 0.182 (structured), max top-1 drop 1.4 pts (no collapse)``."""
    parts = []
    if "mask_std" in d:
        parts.append(f"mask std {d['mask_std']:.3f} ({'structured' if d['structured'] else 'flat'}; "
                     f"threshold {STRUCTURE_MIN}), mask diversity {d['mask_diversity']:.3f}")
    drop = d.get("max_top1_drop", math.nan)
    where = f" ({d['max_drop_head']} at epoch {d['max_drop_epoch']})" if d.get("max_drop_head") else ""
    parts.append(f"max top-1 drop {drop:.1f} pts{where}: {'COLLAPSE' if d.get('collapse') else 'no collapse'} "
                 f"(threshold {COLLAPSE_DROP})")
    return "; ".join(parts)
