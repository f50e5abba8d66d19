"""Solutions to the exercises of notebooks/05_scale_to_imagenet.ipynb (the checks use them when AUTOMIX_SOLUTIONS=1)."""
import math


def momentum(t: int, total: int, base: float, end: float, scope: float) -> float:
    """m0 while t < ⌊scope·T⌋, then m = end − (end − m0)·(cos(πt/T) + 1)/2."""
    if t < int(scope * total):
        return base
    return end - (end - base) * (math.cos(math.pi * min(t, total) / total) + 1) / 2


def upstream_weight(t: int, total: int, base: float) -> float:
    """OpenMixup's compounding ImageNet hook: w_t = w0 · Π_{i=1..t} (cos(πi/T) + 1)/2."""
    w = base
    for i in range(1, t + 1):
        w *= (math.cos(math.pi * i / total) + 1) / 2
    return w


def momentum_update(model, step: int, total_steps: int) -> float:
    """θ_k ← m·θ_k + (1 − m)·θ_q for the parameters of the momentum encoder and its two heads (not the buffers),
    in place, with m from the model's schedule; returns m."""
    import torch

    m = momentum(step, total_steps, model.momentum, model.end_momentum, model.momentum_scope)
    with torch.no_grad():
        for online, ema in ((model.backbone_q, model.backbone_k), (model.head_one_q, model.head_one_k),
                            (model.head_mix_q, model.head_mix_k)):
            for p_q, p_k in zip(online.parameters(), ema.parameters()):
                p_k.mul_(m).add_(p_q, alpha=1 - m)
    return m
