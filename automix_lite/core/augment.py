"""``AutoMixAugment``: a trained AutoMix's Mix Block used as a frozen mixer (no training, no fallback).

Paper: AutoMix (arXiv:2103.13027); OpenMixup ``MixUpClassification`` with ``mix_args.automix``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .checks import check_batch
from .masks import _to_device
from .mixblock import adjust_mask
from .mixing import MixOutput, mix_images
from .sampling import sample_lam, sample_perm

__all__ = ["AutoMixAugment"]


@dataclass
class AutoMixAugment:
    """A trained AutoMix used as a frozen mixer (OpenMixup ``MixUpClassification`` with ``mix_args.automix``).

    ``mix(x, y, method=AutoMixAugment(model))`` or ``AutoMixAugment(model)(x, y)``: draws λ ~ Beta(α, α)
    and a permutation, builds the mask from the model's momentum encoder features and frozen Mix Block, and
    returns a ``MixOutput``. ``lam`` is the sampled λ (the label weight AutoMix trains with); the realised
    own-area is ``mask.mean((1, 2, 3))`` and differs from it unless ``adjust=True`` rescales the mask.

    Args:
        model: a trained ``AutoMix``.
        adjust: rescale each mask so its own-sample area equals λ exactly.
    """

    model: nn.Module  # a trained AutoMix (not imported here: automix.py builds this mixer in as_mixer)
    adjust: bool = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, alpha: float | None = None,
                 generator: torch.Generator | None = None, lam: float | None = None, **_) -> MixOutput:
        check_batch(x, y, self.model.num_classes, self.model.in_chans)
        lam = sample_lam(self.model.alpha if alpha is None else alpha, generator) if lam is None else float(lam)
        perm = _to_device(sample_perm(x.shape[0], generator), x.device)
        mask = self.model.generate_mask(x, lam, perm)  # [N, 2, H, W]
        if self.adjust:
            mask = adjust_mask(mask, lam)
        own = mask[:, 0:1]  # [N, 1, H, W]
        images = mix_images(x, own, perm)  # [N, C, H, W]
        return MixOutput(images=images, target_a=y, target_b=y[perm],
                         lam=torch.full((x.shape[0],), lam, dtype=torch.float32, device=x.device),
                         mask=own, perm=perm)
