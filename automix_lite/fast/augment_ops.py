"""The random part of the image pipelines, as batched tensor maths: the draws of ``RandomCrop`` (reflect
padding) / ``RandomResizedCrop`` + flip, and Pillow's fixed-point bicubic resampling replayed exactly.

Pure functions of their arguments and a ``torch.Generator``; ``fast.device_data`` applies them per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2


@dataclass(frozen=True)
class ShiftAugment:
    """``RandomCrop(size, padding=pad, padding_mode='reflect')`` then a horizontal flip with probability
    ``flip_p`` (0 = no flip). The stored images are ``size`` x ``size`` (``None``: whatever they are)."""

    pad: int
    flip_p: float = 0.5
    size: int | None = None


@dataclass(frozen=True)
class ResizedCropAugment:
    """``RandomResizedCrop(size, scale, ratio, bicubic)`` then a horizontal flip with probability ``flip_p``."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5


# ---------------------------------------------------------------- pure maths: draws
def draw_shift(n: int, pad: int, flip_p: float, generator: torch.Generator) -> torch.Tensor:
    """``[n, 3]`` long: crop offsets ``dy, dx`` uniform in ``0..2*pad`` and ``flip`` (1 with prob. ``flip_p``);
    torchvision's ``RandomCrop.get_params`` on the padded image and ``RandomHorizontalFlip``."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)  # [n, 2]
    flip = (torch.rand(n, generator=generator) < flip_p).long()  # [n]
    return torch.cat([offsets, flip[:, None]], 1)


def draw_resized_crop(n: int, height: int, width: int, aug: ResizedCropAugment,
                      generator: torch.Generator) -> torch.Tensor:
    """``[n, 5]`` long boxes ``(top, left, h, w, flip)`` with torchvision's ``RandomResizedCrop.get_params``
    distribution: up to 10 tries of (area fraction ~ U(scale), log aspect ~ U(log ratio)), the first that fits
    wins, else the central crop with the aspect clamped to ``ratio``. All tries are drawn at once."""
    tries = 10
    area = height * width
    log_r = torch.log(torch.tensor(aug.ratio))  # float32, as torchvision
    frac = torch.empty(n, tries).uniform_(aug.scale[0], aug.scale[1], generator=generator)  # [n, 10] float32
    aspect = torch.exp(torch.empty(n, tries).uniform_(float(log_r[0]), float(log_r[1]), generator=generator))
    target = area * frac.double()  # [n, 10]: torchvision multiplies in Python floats (double)
    w = torch.round(torch.sqrt(target * aspect.double()))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect.double()))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [n, 10]
    first = torch.where(ok, torch.arange(tries).expand(n, tries), tries).min(1).values  # [n]; 10 = none fit
    found = first < tries
    pick = first.clamp(max=tries - 1)[:, None]
    h = h.gather(1, pick)[:, 0].long()
    w = w.gather(1, pick)[:, 0].long()
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)  # offsets uniform in 0..H-h, 0..W-w
    top = (u[:, 0] * (height - h + 1)).floor().long().clamp(max=height - h)
    left = (u[:, 1] * (width - w + 1)).floor().long().clamp(max=width - w)
    fh, fw = _central_box(height, width, aug.ratio)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    flip = (torch.rand(n, generator=generator) < aug.flip_p).long()
    return torch.stack([top, left, h, w, flip], 1)


def _central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback: the whole image, its aspect clamped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


# ---------------------------------------------------------------- pure maths: crops
def _reflect(r: torch.Tensor, n: int) -> torch.Tensor:
    """Index into a length-``n`` axis reflect-padded without repeating the edge (``np.pad`` 'reflect')."""
    r = torch.where(r < 0, -r, r)
    return torch.where(r > n - 1, 2 * (n - 1) - r, r)


def shift_grid(params: torch.Tensor, pad: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column source indices ``[B, size]`` of the crops ``params = [B, 3] (dy, dx, flip)`` from
    ``size`` x ``size`` images reflect-padded by ``pad`` (flipped crops read their columns backwards)."""
    ar = torch.arange(size, device=params.device)  # [S]
    rows = _reflect(params[:, :1] - pad + ar, size)  # [B, S]
    cols = params[:, 1:2] - pad + torch.where(params[:, 2:3] > 0, size - 1 - ar, ar)
    return rows, _reflect(cols, size)


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """Pillow's bicubic kernel (a = -0.5) on float64."""
    a, x = -0.5, x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def pil_bicubic_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int) -> torch.Tensor:
    """Pillow's fixed-point bicubic coefficients (``precompute_coeffs`` + ``normalize_coeffs_8bpc``) that resize
    the span ``[start, start + length)`` of an axis of ``in_size`` pixels to ``out_size``; the span is cropped
    first (torchvision's ``resized_crop`` = ``resize(crop(img))``), so taps stop at its edges.

    Args: start, length: ``[B]`` long. Returns: ``[B, out_size, in_size]`` float64 holding integers
    (weights scaled by 2**22; zero outside each sample's taps).
    """
    dev = start.device
    scale = length.double()[:, None, None] / out_size  # [B, 1, 1]
    fscale = scale.clamp(min=1.0)
    support = 2.0 * fscale
    center = (torch.arange(out_size, device=dev, dtype=torch.float64)[None, :, None] + 0.5) * scale  # [B, S, 1]
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)
    xmax = torch.minimum(torch.trunc(center + support + 0.5), length.double()[:, None, None])
    p = (torch.arange(in_size, device=dev)[None, None, :] - start[:, None, None]).double()  # crop coordinate
    taps = (p >= xmin) & (p < xmax)  # [B, S, in]
    w = torch.where(taps, _bicubic((p - center + 0.5) * (1.0 / fscale)), torch.zeros((), dtype=torch.float64,
                                                                                       device=dev))
    total = w.sum(-1, keepdim=True)
    w = torch.where(total != 0, w / torch.where(total != 0, total, 1.0), w)
    fixed = w * (1 << _PRECISION_BITS)
    return torch.where(fixed < 0, torch.trunc(fixed - 0.5), torch.trunc(fixed + 0.5))


def _clip8(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's rounding of a fixed-point accumulator to 0..255 (the 1/2 offset added before)."""
    return torch.floor((acc + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS)).clamp(0, 255)


def _pillow_vertical_first() -> bool:
    """Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice the width's
    reduction (python-pillow/Pillow#9549); earlier versions always run the horizontal pass first."""
    try:
        import PIL
    except ImportError:  # pragma: no cover - torchvision depends on Pillow
        return True
    return int(PIL.__version__.split(".")[0]) >= 13


PILLOW_VERTICAL_FIRST = _pillow_vertical_first()


def resize_crops(images: torch.Tensor, boxes: torch.Tensor, size: int,
                 vertical_first_rule: bool = PILLOW_VERTICAL_FIRST) -> torch.Tensor:
    """``RandomResizedCrop``'s resize, as Pillow computes it on 8-bit images: crop ``boxes = [B, 5]``
    ``(top, left, h, w, flip)`` of ``images [B, C, H, W]`` (uint8) and resize to ``size`` x ``size`` with
    bicubic resampling in two passes, each rounded to 8 bits; flipped boxes come out mirrored. The pass order
    follows Pillow: horizontal first, except (``vertical_first_rule``, Pillow >= 13) when
    ``h > size`` and ``h - size > 2 * (w - size)``. Returns ``[B, C, size, size]`` float64 holding 0..255."""
    _, _, height, width = images.shape
    wy = pil_bicubic_weights(boxes[:, 0], boxes[:, 2], size, height)[:, None]  # [B, 1, S, H]
    wx = pil_bicubic_weights(boxes[:, 1], boxes[:, 3], size, width)  # [B, S, W]
    wx = torch.where(boxes[:, 4, None, None] > 0, wx.flip(1), wx).transpose(1, 2)[:, None]  # [B, 1, W, S]
    x = images.double()  # integer sums below stay exact in float64 (< 2**53)
    out = _clip8(torch.matmul(wy, _clip8(torch.matmul(x, wx))))  # horizontal pass first
    if vertical_first_rule:
        h, w = boxes[:, 2], boxes[:, 3]
        vertical = ((h > size) & (h - size > 2 * (w - size)))[:, None, None, None]  # [B, 1, 1, 1]
        out = torch.where(vertical, _clip8(torch.matmul(_clip8(torch.matmul(wy, x)), wx)), out)
    return out
