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


def mix_block_forward(block, z: torch.Tensor, lam: float, perm: torch.Tensor, out_size) -> torch.Tensor:
    """The Mix Block's mask [N, 2, H, W] from its own modules: q = BN(W_qk z), k = BN(W_qk z[π]), v = W_v z[π]
    (with the λ / 1 − λ channels first when ``block.lam_concat``), P = softmax(qᵀk/√d), u = P v, nearest
    upsampling, then [1 − σ(u), σ(u)]."""
    zp = z[perm]  # [N, C, h, w] the partners' features
    if block.lam_concat:
        lam_map = torch.full_like(z[:, :1], lam)  # [N, 1, h, w]
        z, zp = torch.cat([z, lam_map], 1), torch.cat([zp, 1 - lam_map], 1)
    q, k, v = block.query(z), block.query(zp), block.value(zp)  # [N, d, h, w], [N, d, h, w], [N, 1, h, w]
    n, _, h, w = q.shape
    u = (attention(q, k, 1.0) @ v.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, 1, h, w)  # [N, 1, h, w]
    partner = torch.sigmoid(torch.nn.functional.interpolate(u, size=tuple(out_size), mode="nearest"))
    return torch.cat([1 - partner, partner], dim=1)  # [N, 2, H, W]: own, partner
