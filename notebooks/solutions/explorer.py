"""Solutions to the exercises of notebooks/04_mask_explorer.ipynb (the checks use them when AUTOMIX_SOLUTIONS=1)."""
import torch


def adjust(own: torch.Tensor, lam: float) -> torch.Tensor:
    """Rescale an own-weight mask [N, 1, H, W] so its area is λ: shrink the side that is too large."""
    area = own.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    shrink_own = own * (lam / area)
    shrink_partner = 1 - (1 - own) * ((1 - lam) / (1 - area).clamp_min(1e-8))
    return torch.where(area > lam, shrink_own, shrink_partner).clamp(0, 1)


def attended_position(attn_row: torch.Tensor, w: int) -> tuple[int, int]:
    """(row, column) of the partner position a query attends to most; attn_row [h*w]."""
    i = int(attn_row.argmax())
    return i // w, i % w
