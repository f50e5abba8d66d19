"""Solutions to the exercises of notebooks/01_mixup_zoo.ipynb (the checks use them when AUTOMIX_SOLUTIONS=1)."""
import math

import torch


def mix_images(x: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x̃ = M ⊙ x + (1 − M) ⊙ x[π]: mask [N, 1, H, W] is each sample's own weight."""
    return x * mask + x[perm] * (1 - mask)


def cutmix_box(h: int, w: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """The CutMix box (y0, y1, x0, x1) of sides ⌊H√(1−λ)⌋ × ⌊W√(1−λ)⌋ centred at (cy, cx), clipped."""
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    clip = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return clip(cy - ch // 2, h), clip(cy + ch // 2, h), clip(cx - cw // 2, w), clip(cx + cw // 2, w)
