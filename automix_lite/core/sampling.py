"""The random draws every mixer makes: λ ~ Beta(α, α) and the pairing of each sample with a partner.

Paper: mixup (Zhang et al., ICLR 2018) draws λ ~ Beta(α, α); AutoMix (arXiv:2103.13027) draws two such λ
per step. Everything comes from an optional ``torch.Generator``, so one seed replays one run.
"""
from __future__ import annotations

import math

import torch

from .masks import _dev, _uniform

__all__ = ["PAIRINGS", "sample_lam", "sample_pairs", "sample_perm"]


def _log_gamma(shape: float, generator) -> float:
    """log of one Gamma(shape, 1) draw (Marsaglia & Tsang 2000; boosted for shape < 1)."""
    if shape < 1.0:  # G(a) = G(a + 1) * U^(1/a)
        return _log_gamma(shape + 1.0, generator) + math.log(1.0 - _uniform(generator)) / shape
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = torch.randn((), generator=generator, device=_dev(generator), dtype=torch.float64).item()
        v = (1.0 + c * z) ** 3
        if v <= 0:
            continue
        u = 1.0 - _uniform(generator)  # in (0, 1]
        if math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return math.log(d * v)


def sample_lam(alpha: float = 1.0, generator: torch.Generator | None = None) -> float:
    """Draw λ ~ Beta(alpha, alpha) as G1 / (G1 + G2) of two Gamma(alpha) draws, using ``generator``.

    Args:
        alpha: concentration, > 0 (1 = uniform, small = λ near 0 or 1, large = λ near 0.5).
        generator: optional torch.Generator for reproducibility.
    """
    if not float(alpha) > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    d = _log_gamma(float(alpha), generator) - _log_gamma(float(alpha), generator)  # log G1 - log G2
    return 1.0 / (1.0 + math.exp(-d)) if d > -700 else 0.0  # G1 / (G1 + G2), overflow-safe


def sample_perm(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random pairing: ``torch.randperm(n)`` drawn with ``generator`` (fixed points are allowed).

    Args:
        n: batch size, at least 2.
        generator: optional torch.Generator; the permutation lives on its device.
    """
    if n < 2:
        raise ValueError(f"pairing needs a batch of at least 2 samples, got {n}; "
                         "use drop_last=True in the DataLoader or method='vanilla'")
    return torch.randperm(n, generator=generator, device=_dev(generator))


PAIRINGS = ("random", "flip", "roll")  # see sample_pairs


def sample_pairs(n: int, pairing: str = "random", generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sample's partner index [N]: ``'random'`` = ``sample_perm`` (this library's default and OpenMixup's;
    a sample may draw itself and then mixes with itself), ``'flip'`` = n-1-i (timm's ``Mixup``), ``'roll'`` =
    i-1 (torchvision's ``MixUp`` / ``CutMix``). Only ``'random'`` draws from ``generator``; an odd ``n`` leaves
    the middle sample of ``'flip'`` paired with itself."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if pairing == "random":
        return sample_perm(n, generator)
    if n < 2:
        raise ValueError(f"pairing needs a batch of at least 2 samples, got {n}")
    idx = torch.arange(n, device=_dev(generator))
    return idx.flip(0) if pairing == "flip" else idx.roll(1)
