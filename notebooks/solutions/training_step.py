"""Solutions to the exercises of notebooks/02b_the_training_step.ipynb.

The notebook's checking cells use these when ``AUTOMIX_SOLUTIONS=1`` (the test suite sets it, so a broken
exercise or checker fails CI); a learner writes their own in the exercise cells instead.
"""
import torch
import torch.nn.functional as F


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """λ·CE(logits, y) + (1 − λ)·CE(logits, y[perm]), each cross-entropy averaged over the batch."""
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


def l1_mask_loss(mask: torch.Tensor, lam: float, margin: float) -> torch.Tensor:
    """max(0, |own area − λ| − margin), the own area averaged over every pixel of every sample."""
    own_area = 1 - mask[:, 1].mean()
    return (own_area - lam).abs().sub(margin).clamp(min=0)


def fallback(mask_bb: torch.Tensor, lam_bb: float, lam_margin: float) -> torch.Tensor:
    """The λ-margin fallback: when min(λ_bb, 1 − λ_bb) <= lam_margin, the constant MixUp mask [λ_bb, 1 − λ_bb]."""
    if min(lam_bb, 1 - lam_bb) <= lam_margin:
        own = torch.full_like(mask_bb[:, :1], lam_bb)  # [N, 1, H, W]
        return torch.cat([own, 1 - own], dim=1)
    return mask_bb


def losses(model, x: torch.Tensor, y: torch.Tensor, d) -> dict:
    """The four losses of one AutoMix step for the draws ``d`` (λ_mb, λ_bb, π_mb, π_bb)."""
    size = x.shape[-2:]
    z = model.feature_map(x, stop_early=False)  # [N, C, h, w] of the momentum encoder, no gradient
    mask_mb = model.mix_block(z, d.lam_mb, d.perm_mb, size)  # [N, 2, H, W], trains the Mix Block
    mask_bb = fallback(model.mix_block(z, d.lam_bb, d.perm_bb, size).detach(), d.lam_bb, model.lam_margin)
    x_mb = x * mask_mb[:, 0:1] + x[d.perm_mb] * mask_mb[:, 1:2]
    x_bb = x * mask_bb[:, 0:1] + x[d.perm_bb] * mask_bb[:, 1:2]
    loss_mix_k = mixed_ce(model.head_mix_k(model.backbone_k(x_mb)), y, d.perm_mb, d.lam_mb)
    loss_one_q = F.cross_entropy(model.head_one_q(model.backbone_q(x)), y)
    loss_mix_q = mixed_ce(model.head_mix_q(model.backbone_q(x_bb)), y, d.perm_bb, d.lam_bb)
    loss_mask = l1_mask_loss(mask_mb, d.lam_mb, model.mask_loss_margin)
    loss = loss_one_q + loss_mix_q + loss_mix_k + model.mask_loss_weight * loss_mask
    return {"loss": loss, "loss_one_q": loss_one_q, "loss_mix_q": loss_mix_q, "loss_mix_k": loss_mix_k,
            "loss_mask": loss_mask}
