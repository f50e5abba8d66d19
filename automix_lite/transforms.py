"""A batch transform in the timm / torchvision convention: ``(images, soft_targets [N, K])``.

timm's ``data.Mixup`` and torchvision's ``transforms.v2.MixUp`` / ``CutMix`` take a batch and return the mixed
images with *soft* targets for a soft-target cross-entropy; they drop into a ``DataLoader``'s ``collate_fn``.
``MixTargets`` does the same for every mixer of ``automix_lite.MIXERS`` (and for a trained AutoMix used as a
frozen mixer, ``AutoMixAugment``), with timm's options: ``prob`` (mix a batch at all), ``switch_prob`` (use the
second of two methods), ``smoothing`` (label smoothing) and ``pairing``:

* ``"random"``: a random permutation (OpenMixup's and this library's trainer; a sample may draw itself);
* ``"flip"``: sample i mixes with n-1-i (timm's ``Mixup``);
* ``"roll"``: sample i mixes with i-1 (torchvision's ``MixUp`` / ``CutMix``).

The soft target of sample i is λ_i·onehot(y_i) + (1-λ_i)·onehot(y_partner), smoothed as
``t·(1-s) + s/K``, where λ_i is the realised own area for box and mask methods (as timm's ``correct_lam``
and torchvision's ``lam_adjusted``). AutoMix itself trains inside ``AutoMix.training_step`` (its losses need the
model); docs/timm_recipe.md shows how to run that step from a timm training script.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import default_collate

from .core.mixing import MIXERS, PAIRINGS, Mixer, MixOutput, mix, soft_targets

__all__ = ["MixTargets"]


class MixTargets:
    """``transform(x, y) -> (images, soft_targets)``; ``transform.collate(batch)`` for a ``collate_fn``.

    Args:
        num_classes: K, the width of the soft targets.
        methods: one method name (or mixer callable), or a dict ``{method: alpha}`` of one or two methods,
            e.g. ``{"mixup": 0.8, "cutmix": 1.0}`` (timm's defaults).
        alpha: λ ~ Beta(alpha, alpha) when ``methods`` is a single method.
        prob: probability that a batch is mixed at all (otherwise images pass unchanged, targets are the
            smoothed one-hot labels).
        switch_prob: with two methods, the probability of using the second one for a batch.
        smoothing: label smoothing s.
        pairing: ``"random"``, ``"flip"`` (timm) or ``"roll"`` (torchvision); see the module docstring.
        generator: a ``torch.Generator`` for every draw (the default generator if None).
    """

    def __init__(self, num_classes: int, methods: str | Mixer | dict[str | Mixer, float] = "mixup", *,
                 alpha: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5, smoothing: float = 0.0,
                 pairing: str = "random", generator: torch.Generator | None = None):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.methods = dict(methods) if isinstance(methods, dict) else {methods: alpha}
        if not 1 <= len(self.methods) <= 2:
            raise ValueError(f"methods takes one or two methods (timm's mixup/cutmix switch), got {len(self.methods)}")
        for m in self.methods:
            if isinstance(m, str) and m not in MIXERS:
                raise ValueError(f"unknown method {m!r}; available: {', '.join(MIXERS)}")
            if m == "manifoldmix":
                raise ValueError("manifoldmix mixes hidden features, not images: use manifold_forward")
        for name, value in (("prob", prob), ("switch_prob", switch_prob), ("smoothing", smoothing)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
        if pairing != "random" and any(not isinstance(m, str) for m in self.methods):
            raise ValueError("pairing applies to the built-in methods; a mixer callable draws its own pairs "
                             "(use pairing='random')")
        self.num_classes, self.prob, self.switch_prob = num_classes, prob, switch_prob
        self.smoothing, self.pairing, self.generator = smoothing, pairing, generator

    def _coin(self, p: float) -> bool:
        return p >= 1.0 or (p > 0.0 and torch.rand((), generator=self.generator).item() < p)

    def mix_output(self, x: torch.Tensor, y: torch.Tensor) -> MixOutput | None:
        """The ``MixOutput`` of this batch, or None when the batch is left unmixed (``prob``)."""
        if not self._coin(self.prob):
            return None
        items = list(self.methods.items())
        method, alpha = items[1] if len(items) == 2 and self._coin(self.switch_prob) else items[0]
        kw: dict[str, Any] = {"pairing": self.pairing} if isinstance(method, str) and method != "vanilla" else {}
        return mix(x, y, method, alpha=alpha, generator=self.generator, **kw)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x [N, C, H, W] images, y [N] integer labels. Returns (images [N, C, H, W], targets [N, K])."""
        out = self.mix_output(x, y)
        if out is None:
            one_hot = torch.nn.functional.one_hot(y, self.num_classes).float()  # [N, K]
            return x, one_hot * (1 - self.smoothing) + self.smoothing / self.num_classes
        return out.images, soft_targets(out, self.num_classes, self.smoothing)

    def collate(self, batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``DataLoader(..., collate_fn=transform.collate)``: stack the samples, then mix the batch."""
        x, y = default_collate(batch)
        return self(x, y)
