"""Solutions to the exercises of notebooks/02_mix_block.ipynb (the checks use them when AUTOMIX_SOLUTIONS=1)."""
import math

import torch


def attention(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """P = softmax(qᵀk / (τ√d)) over the partner's positions: q, k [N, d, h, w] -> [N, hw, hw]."""
    d = q.shape[1]
    return torch.softmax(q.flatten(2).transpose(1, 2) @ k.flatten(2) / (tau * math.sqrt(d)), dim=-1)


def l2_variance_mask_loss(mask: torch.Tensor, lam: float, margin: float) -> torch.Tensor:
    """max(0, (own area − λ)² − ε²) − 2·Var(partner weights), the variance over all pixels of all samples."""
    m1 = mask[:, 1]
    return ((1 - m1.mean() - lam) ** 2 - margin ** 2).clamp(min=0) - 2 * m1.var(unbiased=False)
