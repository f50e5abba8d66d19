"""Pure mask builders of the hand-crafted mixers, and their random helpers.

Every function here is a pure function of its arguments and an optional ``torch.Generator``: boxes (CutMix,
SaliencyMix, ResizeMix), Fourier-noise masks (FMix), Gaussian bumps (SmoothMix), grids (GridMix) and the
spectral-residual saliency map (Hou & Zhang, CVPR 2007) that SaliencyMix centres its box on. Masks are float32
weights of the sample itself ([n, 1, h, w], 1 = own pixel). ``automix_lite.core.mixing`` builds the mixers on top of
them (and re-exports the public ones); papers and the differences from OpenMixup are listed there.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["cutmix_box", "cutmix_boxes_at", "box_mask", "fmix_mask", "smooth_mask", "grid_mask",
           "spectral_residual_saliency"]


# ----------------------------------------------------------------------------- random helpers (shared with mixing)
def _check_lam(lam) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1] (weight of the sample itself), got {lam}")
    return lam


def _dev(generator: torch.Generator | None, fallback=None) -> torch.device:
    """Device to draw on: the generator's own device, else ``fallback`` (CPU when None)."""
    if generator is not None:
        return generator.device
    return torch.device(fallback) if fallback is not None else torch.device("cpu")


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait for the device.

    A plain ``t.to("cuda")`` of pageable memory waits for the copy; here a CUDA target gets a pinned staging
    copy and a ``non_blocking`` transfer queued on the current stream (the pinned block stays reserved until
    the copy has run). Other targets: ``t.to(device)``."""
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _uniform(generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator, device=_dev(generator), dtype=torch.float64).item()


def _randint(generator, high: int) -> int:
    return int(torch.randint(high, (), generator=generator, device=_dev(generator)).item())


# ----------------------------------------------------------------------------- mask builders

def cutmix_box(h: int, w: int, lam: float, generator: torch.Generator | None = None, *,
               center: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """CutMix box ``(y0, y1, x0, x1)`` of nominal area (1 - lam) * h * w, clipped to the image.

    Sides are ``int(side * sqrt(1 - lam))``, the centre is uniform (or ``center=(cy, cx)``); clipping only shrinks
    the box, so the realised own-area ``1 - (y1 - y0) * (x1 - x0) / (h * w)`` is >= lam.

    Args:
        h, w: image height and width.
        lam: target weight of the sample itself, in [0, 1].
        generator: optional torch.Generator for the centre.
        center: fixed centre (row, column) instead of a random one.
    """
    cut = math.sqrt(1.0 - _check_lam(lam))
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = center if center is not None else (_randint(generator, h), _randint(generator, w))
    y0, y1 = min(max(cy - ch // 2, 0), h), min(max(cy + ch // 2, 0), h)
    x0, x1 = min(max(cx - cw // 2, 0), w), min(max(cx + cw // 2, 0), w)
    return y0, y1, x0, x1


def cutmix_boxes_at(h: int, w: int, lam: float, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """``cutmix_box(h, w, lam, center=(cy[i], cx[i]))`` for a batch of centres, as a long tensor [N, 4] on the
    centres' device (no host read of the centres).

    Args:
        h, w: image height and width.
        lam: target weight of the sample itself, in [0, 1].
        cy, cx: [N] integer centre rows and columns.
    """
    cut = math.sqrt(1.0 - _check_lam(lam))
    ch, cw = int(h * cut), int(w * cut)
    y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
    x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], dim=1).long()  # [N, 4]


def box_mask(h: int, w: int, boxes, device=None) -> torch.Tensor:
    """Float32 mask [N, 1, h, w]: 0 inside each box (taken from the partner), 1 elsewhere.

    Args:
        h, w: mask size.
        boxes: one ``(y0, y1, x0, x1)`` box (N = 1) or a long tensor [N, 4] of them; ends are exclusive.
        device: device of the mask (default: the boxes' device; Python boxes reach it by a queued copy).
    """
    b = boxes if torch.is_tensor(boxes) else torch.tensor(boxes, dtype=torch.long)
    b = _to_device(b.long(), device if device is not None else b.device).reshape(-1, 4)[:, :, None, None]
    ys = torch.arange(h, device=b.device)[None, :, None]  # [1, h, 1]
    xs = torch.arange(w, device=b.device)[None, None, :]  # [1, 1, w]
    inside = (ys >= b[:, 0]) & (ys < b[:, 1]) & (xs >= b[:, 2]) & (xs < b[:, 3])  # [N, h, w]
    return (~inside).float()[:, None]  # [N, 1, h, w]


def fmix_mask(n: int, h: int, w: int, lam: float, generator: torch.Generator | None = None, *,
              decay_power: float = 3.0, device=None) -> torch.Tensor:
    """FMix mask [n, 1, h, w]: low-frequency Fourier noise whose top ``round(lam * h * w)`` pixels are 1.

    The noise spectrum is complex Gaussian scaled by 1 / max(f, 1 / max(h, w)) ** decay_power, so larger
    ``decay_power`` gives smoother blobs. The area is exact: every mask has ``round(lam * h * w)`` ones.

    Args:
        n, h, w: number and size of masks.
        lam: fraction of pixels kept from the sample itself.
        generator: optional torch.Generator (the noise is drawn on its device, else on ``device``).
        decay_power: spectral decay exponent (3 in the paper).
        device: device of the returned mask.
    """
    lam, dev = _check_lam(lam), _dev(generator, device)
    fy = torch.fft.fftfreq(h, device=dev)[:, None]  # [h, 1]
    fx = torch.fft.rfftfreq(w, device=dev)[None, :]  # [1, w//2+1]
    scale = (fy ** 2 + fx ** 2).sqrt().clamp_min(1.0 / max(h, w)) ** -decay_power  # [h, w//2+1]
    spec = torch.randn(n, h, w // 2 + 1, 2, generator=generator, device=dev)
    noise = torch.fft.irfft2(torch.view_as_complex(spec) * scale, s=(h, w)).reshape(n, h * w)  # [n, h*w]
    k = int(round(lam * h * w))
    top = noise.topk(k, dim=1).indices  # [n, k], the k largest (no full sort)
    mask = torch.zeros(n, h * w, device=dev).scatter_(1, top, 1.0)
    return _to_device(mask.reshape(n, 1, h, w), device if device is not None else dev)


def _scale_to_mass(g: torch.Tensor, target: float) -> torch.Tensor:
    """Scale each row of g [n, P] (values in (0, 1]) by s >= 0 so that mean(clamp(s * g, max=1)) == target.

    With the k largest values saturated the mean is (k + s * tail_k) / P; each such line lies above the true curve,
    so the solution is s = max_k (P * target - k) / tail_k over k <= P * target.
    """
    if target <= 0:
        return torch.zeros_like(g)
    if target >= 1:
        return torch.ones_like(g)
    p = g.shape[1]
    gs = g.sort(dim=1, descending=True).values  # [n, P]
    tail = gs.flip(1).cumsum(1).flip(1).clamp_min(1e-30)  # tail[:, k] = sum of gs[:, k:]
    k = torch.arange(p, device=g.device, dtype=g.dtype)
    s = ((p * target - k) / tail).amax(dim=1, keepdim=True)  # [n, 1]
    return (s * g).clamp(0, 1)


def smooth_mask(n: int, h: int, w: int, lam: float, generator: torch.Generator | None = None, *,
                sigma_range: tuple[float, float] = (0.25, 0.5), device=None) -> torch.Tensor:
    """SmoothMix mask [n, 1, h, w]: 1 minus a Gaussian bump at a random centre, whose mass is 1 - lam.

    Each bump has centre uniform in the image and widths σ = u · (h, w), u ~ U(*sigma_range); it is then scaled
    (clipping at 1) so that the mask's mean is lam up to float rounding. lam = 1 gives ones, lam = 0 zeros.

    Args:
        n, h, w: number and size of masks.
        lam: mean of each mask (the weight of the sample itself).
        generator: optional torch.Generator (drawn on its device, else on ``device``).
        sigma_range: range of the Gaussian width as a fraction of the side.
        device: device of the returned mask.
    """
    lam, dev = _check_lam(lam), _dev(generator, device)
    u = torch.rand(n, 3, generator=generator, device=dev)  # centre y, centre x, width
    cy, cx = (u[:, 0] * h)[:, None, None], (u[:, 1] * w)[:, None, None]
    sig = (sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u[:, 2])[:, None, None]
    ys = torch.arange(h, device=dev, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(w, device=dev, dtype=torch.float32)[None, None, :] + 0.5
    bump = torch.exp(-0.5 * (((ys - cy) / (sig * h)) ** 2 + ((xs - cx) / (sig * w)) ** 2))  # [n, h, w]
    partner = _scale_to_mass(bump.reshape(n, h * w), 1.0 - lam)
    return _to_device((1.0 - partner).reshape(n, 1, h, w), device if device is not None else dev)


def grid_mask(n: int, h: int, w: int, lam: float, generator: torch.Generator | None = None, *,
              cells: int | tuple[int, int] = (2, 8), device=None) -> torch.Tensor:
    """GridMix mask [n, 1, h, w]: a g x g grid whose cells are kept with probability lam, else 0 (partner).

    Args:
        n, h, w: number and size of masks.
        lam: probability that a cell is kept from the sample itself (realised area varies around it).
        generator: optional torch.Generator (drawn on its device, else on ``device``).
        cells: cells per side, or an inclusive range drawn once per call; capped at min(h, w).
        device: device of the returned mask.
    """
    lam, dev = _check_lam(lam), _dev(generator, device)
    lo, hi = (cells, cells) if isinstance(cells, int) else cells
    g = min(lo + _randint(generator, hi - lo + 1), h, w)
    keep = (torch.rand(n, g, g, generator=generator, device=dev) < lam).float()  # [n, g, g]
    rows = torch.arange(h, device=dev) * g // h  # cell row of each pixel row
    cols = torch.arange(w, device=dev) * g // w
    mask = keep[:, rows][:, :, cols]  # [n, h, w]
    return _to_device(mask[:, None], device if device is not None else dev)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of img [N, H, W] with reflect padding."""
    h, w = img.shape[-2:]
    r = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    t = torch.arange(-r, r + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(img[:, None], (r, r, r, r), mode="reflect")  # [N, 1, H+2r, W+2r]
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    return F.conv2d(out, k.view(1, 1, -1, 1))[:, 0]  # [N, H, W]


@torch.no_grad()
def spectral_residual_saliency(x: torch.Tensor, *, work_size: int = 64, sigma: float = 2.5) -> torch.Tensor:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of x [N, C, H, W] -> [N, H, W], max 1 per image.

    On the channel-mean image: log-amplitude spectrum minus its 3x3 (circular) box-filtered version, phase kept,
    inverse FFT, squared magnitude, Gaussian blur. As in the paper the map is computed with the longer side at
    most ``work_size`` pixels and resized back.

    Args:
        x: images, any float dtype.
        work_size: longer side of the working resolution (64 in the paper).
        sigma: blur width in pixels at a working side of 64 (scaled with the working size).
    """
    n, _, h, w = x.shape
    gray = x.double().mean(1, keepdim=True)  # [N, 1, H, W]; float64 so the flattened spectrum is not rounding noise
    if max(h, w) > work_size:
        s = work_size / max(h, w)
        gray = F.interpolate(gray, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    spec = torch.fft.fft2(gray[:, 0])  # [N, h', w']
    log_amp = torch.log(spec.abs().clamp_min(1e-8))
    smooth = F.avg_pool2d(F.pad(log_amp[:, None], (1, 1, 1, 1), mode="circular"), 3, stride=1)[:, 0]
    sal = torch.fft.ifft2(torch.polar(torch.exp(log_amp - smooth), torch.angle(spec))).abs() ** 2
    sal = _gaussian_blur(sal, sigma * max(sal.shape[-2:]) / 64)
    if sal.shape[-2:] != (h, w):
        sal = F.interpolate(sal[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    sal = sal / sal.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
    return sal.float()  # [N, H, W]
