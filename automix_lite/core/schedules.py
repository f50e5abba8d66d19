"""AutoMix's schedules: the EMA momentum of the momentum encoder and the mask-loss weight, and the EMA itself.

Paper: AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027), section 3.3 ("momentum pipeline"): the momentum
encoder θ_k follows the online encoder θ_q as θ_k ← m·θ_k + (1 − m)·θ_q, with m raised from m0 towards 1 by
a cosine schedule (docs/algorithm.md#momentum-schedule). Pure functions of the step, no state.
"""
from __future__ import annotations

import functools
import math

import torch

__all__ = ["momentum_at", "mask_loss_weight_at", "ema_"]


def momentum_at(step: int, total_steps: int, base: float = 0.999, end: float = 0.999999,
                scope_start: float = 0.1) -> float:
    """EMA momentum of OpenMixup's ``CosineScheduleHook`` (docs/algorithm.md#momentum-schedule).

    ``m = base`` for ``t < int(scope_start * T)`` (the hook's integer cut-off, ``min_iter``); afterwards
    ``m = end - (end - base) * (cos(π t / T) + 1) / 2``. The cosine uses t/T, not the position inside the
    scope, so there is a tiny jump at the cut-off (0.999 -> ~0.999024 for the CIFAR recipe): an upstream
    detail we keep.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < int(scope_start * total_steps):
        return base
    t = min(step, total_steps) / total_steps
    return end - (end - base) * (math.cos(math.pi * t) + 1) / 2


def mask_loss_weight_at(step: int, total_steps: int, base: float = 0.1, schedule: str = "constant") -> float:
    """Mask-loss weight at ``step`` (docs/algorithm.md#mask-loss).

    * "constant": ``base`` (CIFAR and Tiny-ImageNet recipes).
    * "cosine": a true cosine from ``base`` to 0 over training.
    * "upstream": OpenMixup's ImageNet hook as it really behaves — every iteration applies the cosine factor
      to the *current* value, so the weight compounds towards 0 within a few epochs. Closed form:
      ``base * prod_{i<=t} (cos(π i/T) + 1) / 2``.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1) / 2
    if schedule == "upstream":
        t = min(step, total_steps)
        return base * math.exp(float(_upstream_log_factors(total_steps)[t])) if t > 0 else base
    raise ValueError(f"mask loss schedule must be 'constant', 'cosine' or 'upstream', got {schedule!r}")


@functools.lru_cache(maxsize=4)
def _upstream_log_factors(total_steps: int) -> torch.Tensor:
    """Prefix sums of log((cos(π i/T) + 1) / 2), i = 0..T (index t = product over the first t iterations)."""
    i = torch.arange(1, total_steps + 1, dtype=torch.float64)
    logs = torch.log(((torch.cos(math.pi * i / total_steps) + 1) / 2).clamp_min(1e-300))
    return torch.cat([torch.zeros(1, dtype=torch.float64), logs.cumsum(0)])


@torch.no_grad()
def ema_(targets: list[torch.Tensor], sources: list[torch.Tensor], m: float) -> None:
    """targets <- m * targets + (1 - m) * sources, in place."""
    if targets:
        torch._foreach_mul_(targets, m)
        torch._foreach_add_(targets, sources, alpha=1 - m)
