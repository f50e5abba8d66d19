"""Input checks shared by the mixers, AutoMix and the trainer: one message per mistake, wherever it is made.

Only ``check_label_range`` reads the device (``y.min()``/``y.max()``); the trainer checks a dataset's labels
once and then passes ``check_labels=False`` to the per-step calls.
"""
from __future__ import annotations

import torch

__all__ = ["check_images", "check_labels", "check_label_range", "check_batch"]


def _kind(t) -> str:
    return str(t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__


def check_images(x, in_chans: int | None = None) -> None:
    """``x`` is a floating-point [N, C, H, W] tensor (with ``in_chans`` channels when given)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"images x must be a floating-point tensor [N, C, H, W], got {_kind(x)}; "
                        "convert with x.float() (and normalise)")
    if x.dim() != 4:
        raise ValueError(f"images x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}; add a batch dim with x[None]")
    if in_chans is not None and x.shape[1] != in_chans:
        raise ValueError(f"images have {x.shape[1]} channels but the model expects {in_chans} (in_chans)")


def check_labels(x: torch.Tensor, y) -> None:
    """``y`` is a 1-D integer tensor of class indices, one per image of ``x``."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"labels y must be an integer tensor of class indices, got {_kind(y)}; use y.long()")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels y must be 1-D with one label per image ({x.shape[0]}), got shape {tuple(y.shape)}")


def check_label_range(y: torch.Tensor, num_classes: int | None = None, what: str = "labels", hint: str = "") -> None:
    """``0 <= y < num_classes`` (only ``y >= 0`` when ``num_classes`` is None). Reads ``y`` from its device."""
    if not y.numel():
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else "[0, K) (class indices >= 0)"
        hint = hint or "; map labels to 0..K-1"
        raise ValueError(f"{what} must lie in {bound}, got min {low} max {high}{hint}")


def check_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, in_chans: int, check: bool = True) -> None:
    """Shapes and dtypes, a batch of at least 2, and (``check``) the label range (the one device read)."""
    check_images(x, in_chans)
    check_labels(x, y)
    if x.shape[0] < 2:
        raise ValueError("AutoMix pairs samples within the batch: it needs a batch of at least 2, got 1")
    if check:
        check_label_range(y, num_classes)
