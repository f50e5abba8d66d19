"""AutoMix's step made ready for an accelerator: the same numbers as ``AutoMix.training_step``, no host waits.

``AutoMix.losses`` (automix_lite/core/automix.py) is the step as the paper states it: Python floats for λ and
``if`` branches for the λ-margin fallback and ``mask_adjust``. That code makes the GPU wait for the host, and a
CUDA graph cannot record it. This module runs the same step as device work only:

* ``device_draws``: the host draws (λ_mb, 1-λ_mb, λ_bb, 1-λ_bb, the mask-loss weight, the two flags and the two
  pairings) as three device tensors, copied once and queued without waiting;
* ``step_losses``: the four losses from those tensors, with the fallback and ``mask_adjust`` chosen by
  ``torch.where`` (no branch on data, no host read), so ``automix_lite.fast.graphed`` can capture it;
* the fused online pass (``online_pass="fused"``, or "auto" on CUDA): the online encoder runs once over the
  2N batch [clean; backbone mix] with per-half BatchNorm (``fused.per_part_batchnorm``).

Equality with the readable step: bitwise for the separate pass on the CPU (tests/test_automix.py), within
float rounding for the fused pass (tests/test_fused.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..core.automix import AutoMix, StepDraws, mask_mix, mixed_ce
from ..core.checks import check_batch
from ..core.masks import _to_device
from ..core.mixblock import adjust_mask, mask_loss
from ..core.schedules import mask_loss_weight_at
from .fused import per_part_batchnorm

__all__ = ["DeviceDraws", "ONLINE_PASSES", "device_draws", "host_tensors", "step_losses", "training_step",
           "uses_fused"]

ONLINE_PASSES = ("auto", "fused", "separate")


class DeviceDraws(NamedTuple):
    """``StepDraws`` as three device tensors: what a captured step reads."""

    scalars: torch.Tensor  # [5] float32: λ_mb, 1-λ_mb, λ_bb, 1-λ_bb, mask-loss weight
    flags: torch.Tensor  # [2] bool: fallback, adjust
    perms: torch.Tensor  # [2, N] long: perm_mb, perm_bb


def host_tensors(d: StepDraws, w_mask: float) -> DeviceDraws:
    """The layout a device step reads, still on the host; each float32 scalar rounded once from float64."""
    scalars = torch.tensor([d.lam_mb, 1 - d.lam_mb, d.lam_bb, 1 - d.lam_bb, w_mask], dtype=torch.float32)
    return DeviceDraws(scalars, torch.tensor([d.fallback, d.adjust]), torch.stack([d.perm_mb, d.perm_bb]))


def device_draws(d: StepDraws, device, w_mask: float) -> DeviceDraws:
    """``host_tensors`` on ``device`` (one host->device copy each, queued without waiting)."""
    return DeviceDraws(*(_to_device(t, device) for t in host_tensors(d, w_mask)))


def uses_fused(online_pass: str, device: torch.device) -> bool:
    """Whether ``online_pass`` ("auto", "fused", "separate") runs the fused pass on ``device``."""
    if online_pass not in ONLINE_PASSES:
        raise ValueError(f"online_pass must be one of {ONLINE_PASSES}, got {online_pass!r}")
    return online_pass == "fused" or (online_pass == "auto" and torch.device(device).type == "cuda")


def online_features(model: AutoMix, x: torch.Tensor, x_bb: torch.Tensor, fused: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Online encoder features f_q(x), f_q(x_bb) ([N, D] each), in one fused pass or two."""
    if not fused:
        return model.backbone_q(x), model.backbone_q(x_bb)
    n = x.shape[0]
    with per_part_batchnorm(model.backbone_q, (n, n)):
        f = model.backbone_q(torch.cat([x, x_bb]))  # [2N, D]
    return f[:n], f[n:]


def step_losses(model: AutoMix, x: torch.Tensor, y: torch.Tensor, dd: DeviceDraws, train_mb: bool = True,
                fused: bool = False) -> dict[str, torch.Tensor]:
    """``AutoMix.losses`` for draws held as device tensors: no host read, no branch on data. ``train_mb`` (a
    host draw) decides whether the momentum network judges the Mix Block's mix (OpenMixup ``switch_off``)."""
    size = x.shape[-2:]
    lam_mb, lam_mb_c, lam_bb, lam_bb_c, w_mask = dd.scalars.unbind()
    perm_mb, perm_bb = dd.perms.unbind()
    z = model.feature_map(x, stop_early=model.momentum_features == "early_stop")  # [N, C, h, w], no grad
    mask_mb = model.mix_block(z, lam_mb, perm_mb, size)  # [N, 2, H, W], keeps the graph
    mask_bb = model.mix_block(z, lam_bb, perm_bb, size).detach()  # [N, 2, H, W]
    if model.mask_adjust > 0:
        mask_bb = torch.where(dd.flags[1], adjust_mask(mask_bb, lam_bb, lam_bb_c), mask_bb)
    if model.lam_margin >= 0:  # the λ-margin fallback, selected on the device
        plain = torch.stack([lam_bb, lam_bb_c]).view(1, 2, 1, 1).expand_as(mask_bb)  # [N, 2, H, W]
        mask_bb = torch.where(dd.flags[0], plain, mask_bb)
    loss_mask = mask_loss(mask_mb, lam_mb, model.mask_loss_mode, model.mask_loss_margin)
    loss_mix_k = x.new_zeros((), dtype=torch.float32)
    if train_mb:
        x_mb = mask_mix(x, mask_mb, perm_mb)  # [N, C, H, W]
        loss_mix_k = mixed_ce(model.head_mix_k(model.backbone_k(x_mb)), y, perm_mb, lam_mb, lam_mb_c)
    x_bb = mask_mix(x, mask_bb, perm_bb)  # [N, C, H, W]
    f_one, f_mix = online_features(model, x, x_bb, fused)  # [N, D] each
    loss_one_q = F.cross_entropy(model.head_one_q(f_one).float(), y)
    loss_mix_q = mixed_ce(model.head_mix_q(f_mix), y, perm_bb, lam_bb, lam_bb_c)
    return {"loss": loss_one_q + loss_mix_q + loss_mix_k + w_mask * loss_mask,
            "loss_one_q": loss_one_q, "loss_mix_q": loss_mix_q, "loss_mix_k": loss_mix_k, "loss_mask": loss_mask,
            "mask_mb": mask_mb.detach(), "perm_mb": perm_mb, "mask_bb": mask_bb, "perm_bb": perm_bb}


def training_step(model: AutoMix, x: torch.Tensor, y: torch.Tensor, step: int = 0, total_steps: int = 1, *,
                  generator: torch.Generator | None = None, check_labels: bool = True,
                  online_pass: str = "auto") -> dict[str, torch.Tensor]:
    """``model.training_step`` through ``step_losses`` (same draws from ``generator``, same returned dict)."""
    check_batch(x, y, model.num_classes, model.in_chans, check_labels)
    d = model.draw(x.shape[0], generator)
    w_mask = mask_loss_weight_at(step, total_steps, model.mask_loss_weight, model.mask_loss_schedule)
    out = step_losses(model, x, y, device_draws(d, x.device, w_mask), d.train_mb, uses_fused(online_pass, x.device))
    return {**out, **d.record(w_mask)}
