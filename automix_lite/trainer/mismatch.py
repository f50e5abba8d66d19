"""Label mismatch: how much of each image's class a mixed image carries, read by an independent judge.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027, Sec. 1 and 3) argues that hand-crafted mixes often do not
contain what their label says (a CutMix box on background, a MixUp blend) and that its Mix Block learns masks
whose mixed image carries the mixed label (λ, 1 − λ). This module measures that claim for any mixer.

For a pair (x_i, x_j) with labels (y_i, y_j), y_i ≠ y_j, a mixed image x̃ with label weight λ (the weight of
y_i) and own-pixel mask m (x̃ = m·x_i + (1 − m)·x_j for the mask mixers), a *judge* classifier gives

* the **share** s = p(y_i | x̃) / (p(y_i | x̃) + p(y_j | x̃)): how much of the two classes it reads is y_i's;
* the **label mismatch** |s − λ|: the content against the label weight the mixer trains with;
* the mask's own **area** a = mean(m) and the **area mismatch** |s − a|: the content against the pixels kept
  (a mixer whose area does not follow λ mislabels even if each pixel carries its class, and vice versa);
* optionally the **saliency share**: the judge's input-gradient magnitude of log p(y_i | x_i) on the clean
  image i kept by m, against that of j kept by 1 − m (pixel-aligned mixes only).

The judge should be trained without mixing and never be the model that made the masks; a mixed image is out of
its training distribution (docs/label_mismatch.md says how that biases each mixer). ``p_pair`` = p(y_i) + p(y_j)
reports how much of the judge's belief lands on either class at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["LabelShares", "label_shares", "binned_curve", "area_follow", "saliency_maps"]

Judge = Callable[[torch.Tensor], torch.Tensor]  # images [N, C, H, W] -> logits [N, K]


@dataclass
class LabelShares:
    """Per-pair results of :func:`label_shares` (all [N] float64 on the CPU).

    Args:
        share: s = p(y_i | x̃) / (p(y_i | x̃) + p(y_j | x̃)).
        lam: the label weight λ of y_i.
        area: the mask's own area mean(m).
        mismatch: |s − λ|.
        area_mismatch: |s − area|.
        p_pair: p(y_i | x̃) + p(y_j | x̃), the judge's belief on either class.
        valid: bool, y_i ≠ y_j (pairs of one class carry no share; summaries skip them).
        saliency_share: kept saliency of i / (kept of i + kept of j), or None when not asked for.
    """

    share: torch.Tensor
    lam: torch.Tensor
    area: torch.Tensor
    mismatch: torch.Tensor
    area_mismatch: torch.Tensor
    p_pair: torch.Tensor
    valid: torch.Tensor
    saliency_share: torch.Tensor | None = None

    def summary(self) -> dict[str, float]:
        """Means over the valid pairs: mismatch, area_mismatch, signed bias s − λ, p_pair, saliency mismatch."""
        v = self.valid
        if not bool(v.any()):
            raise ValueError("no valid pair (every pair has y_i == y_j): the share is undefined")
        out = {"n_pairs": int(v.sum()), "mismatch": float(self.mismatch[v].mean()),
               "area_mismatch": float(self.area_mismatch[v].mean()),
               "bias": float((self.share - self.lam)[v].mean()), "p_pair": float(self.p_pair[v].mean())}
        if self.saliency_share is not None:
            out["saliency_mismatch"] = float((self.saliency_share - self.lam)[v].abs().mean())
        return out


def _check(x, y, perm, mixed, lam, mask) -> torch.Tensor:
    """Shapes and ranges; returns the own mask as [N, 1, H, W] float."""
    if x.dim() != 4:
        raise ValueError(f"x must be images [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    if mixed.shape != x.shape:
        raise ValueError(f"mixed must have the shape of x {tuple(x.shape)}, got {tuple(mixed.shape)}")
    for name, t in (("y", y), ("perm", perm), ("lam", lam)):
        if t.shape != (n,):
            raise ValueError(f"{name} must have shape [{n}], got {tuple(t.shape)}")
    if y.dtype.is_floating_point or perm.dtype.is_floating_point:
        raise TypeError("y and perm must be integer tensors")
    if int(perm.min()) < 0 or int(perm.max()) >= n:
        raise ValueError(f"perm must index the batch: values in [0, {n}), got [{int(perm.min())}, {int(perm.max())}]")
    if not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError("lam must lie in [0, 1]")
    m = mask if mask.dim() == 4 else mask[:, None]
    if m.shape != (n, 1, h, w):
        raise ValueError(f"mask must be the own-pixel weight [N, 1, H, W] = {(n, 1, h, w)}, got {tuple(mask.shape)}")
    if not bool(((m >= 0) & (m <= 1)).all()):
        raise ValueError("mask values must lie in [0, 1] (the weight of image i)")
    return m.float()


def _probs(judge: Judge, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax of the judge's logits, [N, K] float64, in batches, no gradient."""
    if getattr(judge, "training", False):
        raise ValueError("the judge is in training mode (BatchNorm would use the mixed batch's statistics): "
                         "call judge.eval() first")
    with torch.no_grad():
        out = [F.softmax(judge(images[k:k + batch_size]).double(), dim=1) for k in range(0, len(images), batch_size)]
    return torch.cat(out)


def saliency_maps(judge: Judge, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|∂ log p(y | x) / ∂x| summed over channels and normalised to sum 1 per image: [N, H, W] float64.

    The vanilla-gradient saliency (Simonyan et al., 2014) SaliencyMix's idea rests on, read from the judge."""
    xg = x.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        logp = F.log_softmax(judge(xg).float(), dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(logp, xg)
    sal = grad.abs().sum(1).double()  # [N, H, W]
    return sal / sal.flatten(1).sum(1).clamp_min(1e-30)[:, None, None]


def label_shares(judge: Judge, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, mixed: torch.Tensor,
                 lam: torch.Tensor, mask: torch.Tensor, *, saliency: bool = False,
                 batch_size: int = 256) -> LabelShares:
    """Per pair, the class share a judge reads in a mixed image and its mismatch with λ and the mask area.

    Args:
        judge: a classifier in eval mode, images [N, C, H, W] -> logits [N, K]; trained without mixing and
            never the model that made the masks (see the module docstring).
        x: [N, C, H, W] the clean images, as the judge takes them (normalised).
        y: [N] their labels.
        perm: [N] partner index: x̃_i mixes x_i with x_{perm[i]}.
        mixed: [N, C, H, W] the mixed images x̃.
        lam: [N] label weight of y_i (``MixOutput.lam``).
        mask: [N, 1, H, W] (or [N, H, W]) own-pixel weight m of x_i (``MixOutput.mask``).
        saliency: also compute the saliency share; needs pixel-aligned mixes (x̃ = m·x_i + (1 − m)·x_j,
            checked), which ResizeMix's shrunk partner is not.
        batch_size: images per judge call.

    Returns:
        a :class:`LabelShares`.
    """
    m = _check(x, y, perm, mixed, lam, mask)
    yj = y[perm]
    probs = _probs(judge, mixed, batch_size)  # [N, K]
    if int(max(y.max(), yj.max())) >= probs.shape[1]:
        raise ValueError(f"labels exceed the judge's {probs.shape[1]} classes")
    pi, pj = probs.gather(1, y[:, None])[:, 0], probs.gather(1, yj[:, None])[:, 0]  # [N]
    p_pair = pi + pj
    share = pi / p_pair.clamp_min(1e-300)
    lam64, area = lam.double().cpu(), m.double().mean(dim=(1, 2, 3)).cpu()  # [N]
    share, p_pair = share.cpu(), p_pair.cpu()
    sal = None
    if saliency:
        aligned = x.float() * m + x.float()[perm] * (1 - m)
        if not torch.allclose(aligned, mixed.float(), atol=1e-4, rtol=1e-4):
            raise ValueError("saliency=True needs pixel-aligned mixes (mixed == mask·x + (1 − mask)·x[perm])")
        s_map = saliency_maps(judge, x, y)  # [N, H, W]
        m2 = m[:, 0].double()
        keep_i = (s_map * m2).flatten(1).sum(1)
        keep_j = (s_map[perm] * (1 - m2)).flatten(1).sum(1)
        sal = (keep_i / (keep_i + keep_j).clamp_min(1e-30)).cpu()
    return LabelShares(share=share, lam=lam64, area=area, mismatch=(share - lam64).abs(),
                       area_mismatch=(share - area).abs(), p_pair=p_pair, valid=(y != yj).cpu(),
                       saliency_share=sal)


def binned_curve(lam: torch.Tensor, share: torch.Tensor, bins: int = 10,
                 valid: torch.Tensor | None = None) -> dict[str, list]:
    """Mean share per λ bin: {"centre", "mean", "count"} over ``bins`` equal bins of [0, 1] (empty bins: nan).

    A mixer whose mixes carry their labels lies on the diagonal mean = centre."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if lam.shape != share.shape:
        raise ValueError(f"lam and share must have one shape, got {tuple(lam.shape)} and {tuple(share.shape)}")
    keep = torch.ones_like(lam, dtype=torch.bool) if valid is None else valid
    lam, share = lam[keep].double(), share[keep].double()
    idx = (lam * bins).long().clamp(0, bins - 1)  # [N]
    count = torch.bincount(idx, minlength=bins)
    total = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, share)
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
    centre = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    return {"centre": centre.tolist(), "mean": mean.tolist(), "count": count.tolist()}


def area_follow(lam: torch.Tensor, area: torch.Tensor) -> dict[str, float]:
    """How the mask area follows λ: least-squares slope of area on λ and the Pearson correlation.

    Slope 1 and correlation 1: the area is λ (CutMix, FMix, ...); slope 0: the area ignores λ."""
    lam, area = lam.double().flatten(), area.double().flatten()
    if lam.numel() != area.numel() or lam.numel() < 2:
        raise ValueError("lam and area need the same number (>= 2) of values")
    dl, da = lam - lam.mean(), area - area.mean()
    var_l, var_a = float((dl * dl).sum()), float((da * da).sum())
    if var_l == 0:
        raise ValueError("λ does not vary: the slope is undefined")
    slope = float((dl * da).sum()) / var_l
    corr = float((dl * da).sum()) / (var_l * var_a) ** 0.5 if var_a > 0 else 0.0
    return {"slope": slope, "corr": corr, "mean_abs_area_minus_lam": float((area - lam).abs().mean())}
