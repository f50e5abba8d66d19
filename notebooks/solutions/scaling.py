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
