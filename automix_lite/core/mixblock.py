"""The Mix Block: AutoMix's attention-based mask generator, and its mask losses.

Paper: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. Reference implementation: OpenMixup ``PixelMixBlock`` (docs/algorithm.md#the-mix-block, #mask-loss).

Given the feature map ``z`` [N, C, h, w] of a batch and a pairing ``perm`` (partner of sample i is
``perm[i]``), the block computes for every position of sample i an attention-weighted average of the
partner's 1-channel *value* map, upsamples it to the image size and squashes it with a sigmoid. The result
is the per-pixel weight of the **partner**; the sample's own weight is one minus it, so the two channels of
the output ``[N, 2, H, W]`` always sum to one (channel 0 = own weight, channel 1 = partner weight).

Faithful details (docs/algorithm.md#the-mix-block): ONE 1x1 conv ``query.conv`` (C -> C/r) computes both the
query (from z) and the key (from the partner z[perm]); the value conv (C -> 1) sees the partner only; the
softmax runs over the partner's positions and is scaled by 1/sqrt(C/r); the attention, upsampling and sigmoid
run in float32 (also under autocast). Without ``lam_concat`` the block never sees λ: its output does not depend
on λ and only the batch-level mask loss ties the mask area to λ (the CIFAR/Tiny recipes). With ``lam_concat`` a
constant λ channel is appended to z and 1-λ to the partner (ImageNet recipes).

Deviations from OpenMixup, on purpose:
* the upsampling factor is ``out_size / feature size`` (OpenMixup keys it on "image width > 64 px"); the
  size ratio is the general rule; both agree for every published recipe.
* OpenMixup clamps attention logits at ±1e25 and counts overflows for fp16; here the attention always runs
  in float32, which makes that guard unnecessary. SAMix options (``lam_mul``, value necks, x-concat) and the
  randomly drawn upsampling mode list are not implemented (AutoMix uses a single mode).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MixBlock", "mask_loss", "MASK_LOSS_MODES", "UPSAMPLE_MODES", "attention_mask_logits"]

MASK_LOSS_MODES = ("L1", "L1+Variance", "L2+Variance", "Sparsity")
UPSAMPLE_MODES = ("nearest", "bilinear")  # how the 1-channel mask logits reach the image size


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of a [N, C, h, w] map (OpenMixup's ``LN2d`` for ViT features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _QueryKey(nn.Module):
    """The shared 1x1 conv of query and key, optionally followed by a norm (``att_norm``)."""

    def __init__(self, cin: int, cout: int, att_norm: str | None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        norms = {None: nn.Identity, "none": nn.Identity, "bn": nn.BatchNorm2d, "ln": _LayerNorm2d}
        if att_norm not in norms:
            raise ValueError(f"att_norm must be one of None, 'bn', 'ln'; got {att_norm!r}")
        self.norm = norms[att_norm](cout) if att_norm not in (None, "none") else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def attention_mask_logits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          use_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure maths of the Mix Block: scaled softmax attention over the partner's positions.

    Args:
        q: queries of the samples, [N, d, h, w].
        k: keys of the partners, [N, d, h, w].
        v: values of the partners, [N, 1, h, w].
        use_scale: divide the logits by sqrt(d).

    Returns:
        (u, P): mask logits u [N, 1, h, w] (u = P v) and the attention P [N, h*w, h*w]
        (rows: positions of the sample, columns: positions of its partner; rows sum to 1).
    """
    n, d, h, w = q.shape
    qf = q.float().flatten(2).transpose(1, 2)  # [N, h*w, d]
    kf = k.float().flatten(2)  # [N, d, h*w]
    vf = v.float().flatten(2).transpose(1, 2)  # [N, h*w, 1]
    logits = torch.bmm(qf, kf)  # [N, h*w, h*w]
    if use_scale:
        logits = logits / math.sqrt(d)
    attn = logits.softmax(dim=-1)  # [N, h*w, h*w], softmax over the partner's positions
    u = torch.bmm(attn, vf)  # [N, h*w, 1]
    return u.transpose(1, 2).reshape(n, 1, h, w), attn  # [N, 1, h, w], [N, h*w, h*w]


class MixBlock(nn.Module):
    """Attention mask generator of AutoMix (OpenMixup ``PixelMixBlock``, AutoMix settings).

    Args:
        in_channels: channels C of the feature map fed to the block (256 for ResNet-18 layer3).
        reduction: query/key width is C // reduction (2 in every recipe).
        lam_concat: append a constant λ channel to z and 1-λ to the partner (ImageNet recipes).
        use_scale: scale attention logits by 1/sqrt(C/r).
        upsample: "nearest" (every AutoMix recipe) or "bilinear".
        att_norm: None, "bn" or "ln" after the query/key conv (OpenMixup ``att_norm_cfg``; LN for ViTs).
        frozen: freeze the block (a pre-trained mask generator).
        init_std: convs are initialised N(0, init_std), biases 0 (OpenMixup: 0.01).
    """

    def __init__(self, in_channels: int, reduction: int = 2, lam_concat: bool = False, use_scale: bool = True,
                 upsample: str = "nearest", att_norm: str | None = None, frozen: bool = False,
                 init_std: float = 0.01):
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(reduction, int) or reduction < 1 or in_channels // reduction < 1:
            raise ValueError(f"reduction must be an int in [1, in_channels], got {reduction!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.in_channels, self.reduction = in_channels, reduction
        self.lam_concat, self.use_scale, self.upsample = lam_concat, use_scale, upsample
        cin = in_channels + int(lam_concat)
        self.inter_channels = in_channels // reduction
        self.query = _QueryKey(cin, self.inter_channels, att_norm)  # shared by query and key
        self.value = nn.Conv2d(cin, 1, 1)
        for conv in (self.query.conv, self.value):
            nn.init.normal_(conv.weight, 0.0, init_std)
            nn.init.zeros_(conv.bias)
        if frozen:
            self.requires_grad_(False)

    def _inputs(self, z: torch.Tensor, lam, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, partner z) with the λ channels appended when ``lam_concat``."""
        if z.ndim != 4 or z.shape[1] != self.in_channels:
            raise ValueError(f"MixBlock expects a feature map [N, {self.in_channels}, h, w], got "
                             f"{tuple(z.shape)}; check the feature stage (its channels must match in_channels)")
        if perm.shape != (z.shape[0],):
            raise ValueError(f"perm must have shape [{z.shape[0]}], got {tuple(perm.shape)}")
        z = z.float()  # [N, C, h, w], the block runs in fp32
        zp = z[perm]  # [N, C, h, w] partner features
        if self.lam_concat:
            if torch.is_tensor(lam):  # a scalar or [N] tensor
                lam_t = lam.to(device=z.device, dtype=z.dtype).reshape(-1, 1, 1, 1)
                lam_map = lam_t.expand(z.shape[0], 1, *z.shape[2:])  # [N, 1, h, w]
            else:  # a Python float: filled on the device, no host->device copy
                lam_map = z.new_full((z.shape[0], 1, *z.shape[2:]), float(lam))  # [N, 1, h, w]
            z = torch.cat([z, lam_map], dim=1)  # [N, C+1, h, w]
            zp = torch.cat([zp, 1 - lam_map], dim=1)  # [N, C+1, h, w]
        return z, zp

    def attention(self, z: torch.Tensor, lam, perm: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate of the block at feature resolution (for notebooks and figures).

        Returns a dict with q [N, C/r, h, w], k [N, C/r, h, w], v [N, 1, h, w] (from the partner),
        attn [N, h*w, h*w] and logits u [N, 1, h, w].
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            zs, zp = self._inputs(z, lam, perm)
            q = self.query(zs)  # [N, C/r, h, w]
            k = self.query(zp)  # [N, C/r, h, w], same conv: shared weights
            v = self.value(zp)  # [N, 1, h, w], value from the partner
            u, attn = attention_mask_logits(q, k, v, self.use_scale)
        return {"q": q, "k": k, "v": v, "attn": attn, "logits": u}

    def forward(self, z: torch.Tensor, lam, perm: torch.Tensor, out_size) -> torch.Tensor:
        """Mask ``[N, 2, H, W]``: channel 0 = the sample's own weight, channel 1 = its partner's.

        Args:
            z: feature map [N, C, h, w] (from the momentum encoder in AutoMix).
            lam: mixing ratio, a float or a scalar/[N] tensor (used only with ``lam_concat``).
            perm: partner indices [N].
            out_size: (H, W) of the images to mix; must be >= the feature size.
        """
        out_size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
        if out_size[0] < z.shape[-2] or out_size[1] < z.shape[-1]:
            raise ValueError(f"out_size {out_size} is smaller than the feature map {tuple(z.shape[-2:])}; "
                             "the mask is upsampled from the feature map to the image size")
        u = self.attention(z, lam, perm)["logits"]  # [N, 1, h, w]
        with torch.autocast(device_type=z.device.type, enabled=False):
            kw = {} if self.upsample == "nearest" else {"align_corners": False}
            u = F.interpolate(u, size=out_size, mode=self.upsample, **kw)  # [N, 1, H, W]
            partner = torch.sigmoid(u)  # [N, 1, H, W], weight of x[perm]
            return torch.cat([1 - partner, partner], dim=1)  # [N, 2, H, W]


def mask_loss(mask: torch.Tensor, lam, mode: str = "L1", margin: float = 0.1) -> torch.Tensor:
    """Mask regulariser of AutoMix (OpenMixup ``PixelMixBlock.mask_loss``, docs/algorithm.md#mask-loss).

    ``mean(m1)`` is the mean of the partner channel over **all pixels and all samples** (one scalar):
    * "L1": max(0, |1 - mean(m1) - λ| - margin) — the batch-average own area stays within margin of λ.
    * "L1+Variance": the L1 term minus 2·Var(m1) (population variance over batch and pixels; rewards
      non-flat masks).
    * "L2+Variance": max(0, (1 - mean(m1) - λ)² - margin²) minus 2·Var(m1).
    * "Sparsity": max(0, mean(|m1 (m1 - 1)|) - margin) (rewards near-binary masks).

    Args:
        mask: Mix Block output [N, 2, H, W] (channel 1 = partner weight).
        lam: the λ used for this mask (a float or a scalar tensor).
        mode: one of ``MASK_LOSS_MODES``.
        margin: tolerance ε.
    """
    if mode not in MASK_LOSS_MODES:
        raise ValueError(f"mask loss mode must be one of {MASK_LOSS_MODES}, got {mode!r}")
    if mask.ndim != 4 or mask.shape[1] != 2:
        raise ValueError(f"mask must be a Mix Block output [N, 2, H, W], got {tuple(mask.shape)}")
    m1 = mask[:, 1].float()  # [N, H, W]
    if torch.is_tensor(lam):  # a scalar (or [N]) tensor; a Python float stays a scalar argument (no copy)
        lam = lam.to(device=m1.device, dtype=m1.dtype).mean()
    dev = 1 - m1.mean() - lam  # scalar: own area minus λ
    if mode == "Sparsity":
        return (m1 * (m1 - 1)).abs().mean().sub(margin).clamp(min=0)
    if mode.startswith("L1"):
        loss = (dev.abs() - margin).clamp(min=0)
    else:
        loss = (dev.pow(2) - margin ** 2).clamp(min=0)
    if mode.endswith("Variance"):  # population variance, as OpenMixup (torch.var(..., unbiased=False))
        loss = loss - 2 * m1.var(unbiased=False)
    return loss


def adjust_mask(mask: torch.Tensor, lam, lam_c=None) -> torch.Tensor:
    """Rescale each mask [N, 2, H, W] so its own-sample area equals λ exactly (the over-sized side shrinks).
    ``lam_c`` = 1 - λ (defaults to ``1 - lam``)."""
    lam_c = 1 - lam if lam_c is None else lam_c
    own = mask[:, 0:1]  # [N, 1, H, W]
    area = own.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)  # [N, 1, 1, 1]
    shrink_own = own * (lam / area)  # own area too large -> scale own down
    shrink_partner = 1 - (1 - own) * (lam_c / (1 - area).clamp_min(1e-8))
    own = torch.where(area > lam, shrink_own, shrink_partner).clamp(0, 1)
    return torch.cat([own, 1 - own], dim=1)  # [N, 2, H, W]
