"""Mixing core: λ sampling, pairing, mask-based mixing, the mixed loss and the hand-crafted mixers.

Every mixer pairs sample i with partner ``perm[i]`` and returns a :class:`MixOutput` whose ``mask`` is the
pixel weight of the sample itself (the partner gets ``1 - mask``) and whose ``lam`` is the weight of
``target_a`` per sample. For every mask method ``lam`` equals the per-sample mean of the float32 mask.
The pure mask builders (boxes, Fourier noise, Gaussian bumps, grids, saliency) live in ``masks.py`` and are
re-exported here.

Papers:
    MixUp        Zhang et al., ICLR 2018, arXiv:1710.09412
    CutMix       Yun et al., ICCV 2019, arXiv:1905.04899
    ManifoldMix  Verma et al., ICML 2019, arXiv:1806.05236
    FMix         Harris et al., 2020, arXiv:2002.12047
    ResizeMix    Qin et al., 2020, arXiv:2012.11101
    SaliencyMix  Uddin et al., ICLR 2021, arXiv:2006.01791
    SmoothMix    Lee et al., CVPR Workshops 2020
    GridMix      Baek et al., Pattern Recognition 2021
    Spectral residual saliency: Hou & Zhang, CVPR 2007

Differences from OpenMixup (``openmixup/models/augments``; also in docs/differences.md#in-the-hand-crafted-mixers):
    * One λ is drawn per batch as there, but ``lam`` is reported per sample and is the *realised* mask area for
      every method whose masks differ between samples (cutmix, fmix, saliencymix, smoothmix, gridmix, resizemix).
    * FMix, SmoothMix and GridMix draw one mask per sample (OpenMixup: one per batch).
    * SaliencyMix uses spectral-residual saliency written in torch instead of OpenCV's fine-grained static
      saliency, and centres one box per sample on *its own partner's* peak (the reference code uses the peak
      of the first partner for the whole batch).
    * SmoothMix draws the Gaussian bump as OpenMixup does (random centre, σ ~ U(0.25, 0.5) · side) and then scales
      it, clipping at 1, so that its mass is exactly 1 - λ with λ ~ Beta(α, α); OpenMixup takes λ from the mass.
    * GridMix takes each cell of an n x n grid from the partner with probability 1 - λ (the paper's idea) instead
      of OpenMixup's regular holes inside a random crop.
    * Images are mixed in float32 and cast back to the input dtype; masks are always float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .._names import did_you_mean
from .checks import check_images, check_label_range
from .checks import check_labels as check_labels_
from .masks import (  # noqa: F401
    _check_lam,
    _dev,
    _randint,
    _to_device,
    _uniform,
    box_mask,
    cutmix_box,
    cutmix_boxes_at,
    fmix_mask,
    grid_mask,
    smooth_mask,
    spectral_residual_saliency,
)
from .sampling import PAIRINGS, sample_lam, sample_pairs, sample_perm  # noqa: F401  (re-exported)

__all__ = [
    "MixOutput", "mix", "mix_loss", "soft_targets", "MIXERS", "sample_lam", "sample_perm", "mix_images",
    "cutmix_box", "cutmix_boxes_at", "box_mask", "fmix_mask", "smooth_mask", "grid_mask", "spectral_residual_saliency",
    "manifold_forward",
]


@dataclass
class MixOutput:
    """Result of one mixing call (shapes for a batch of N images of size H x W).

    Args:
        images: [N, C, H, W] mixed images, same dtype as the input (a new tensor).
        target_a: [N] labels of the samples themselves (= y).
        target_b: [N] labels of the partners (= y[perm]).
        lam: [N] float32 weight of ``target_a`` per sample.
        mask: [N, 1, H, W] float32 in [0, 1], pixel weight of the sample itself; None for feature-level methods.
        perm: [N] long, partner index of each sample.
        stage: feature stage to mix at (manifoldmix only), see :func:`manifold_forward`.
        method: name of the mixer that produced this output.
    """

    images: torch.Tensor
    target_a: torch.Tensor
    target_b: torch.Tensor
    lam: torch.Tensor
    mask: torch.Tensor | None
    perm: torch.Tensor
    stage: int | None = None
    method: str = ""


# ----------------------------------------------------------------------------- checks and random helpers

def _check_inputs(x, y, alpha, check_labels: bool = True) -> None:
    """Types and shapes; with ``check_labels`` also y >= 0, the one check that reads the device."""
    check_images(x)
    check_labels_(x, y)
    if check_labels:
        check_label_range(y)
    if not float(alpha) > 0:
        raise ValueError(f"alpha must be > 0 (λ ~ Beta(alpha, alpha)), got {alpha}; use method='vanilla' to not mix")


def _reject_extra(name: str, kw: dict) -> bool:
    """Reject unknown options; return the ``check_labels`` option (default True)."""
    check_labels = bool(kw.pop("check_labels", True))
    if kw:
        raise TypeError(f"mixer '{name}' got unexpected options {sorted(kw)}; see help(MIXERS['{name}'])")
    return check_labels


class _Options(NamedTuple):
    check_labels: bool
    pairing: str


def _options(name: str, kw: dict) -> _Options:
    """The options every pairing mixer takes: ``check_labels`` and ``pairing`` (see ``sample_pairs``)."""
    pairing = kw.pop("pairing", "random")
    return _Options(_reject_extra(name, kw), pairing)


def _setup(x, y, alpha, lam, generator, opts: _Options = _Options(True, "random")):
    """Shared prologue of the pairing mixers: validate, then draw λ (unless forced) and the permutation
    (host draws; the permutation reaches the device by a queued copy, the host never waits)."""
    _check_inputs(x, y, alpha, opts.check_labels)
    lam = sample_lam(alpha, generator) if lam is None else _check_lam(lam)
    perm = _to_device(sample_pairs(x.shape[0], opts.pairing, generator), x.device)
    return lam, perm


def _output(x, y, images, lam, mask, perm, method, stage=None) -> MixOutput:
    if not isinstance(lam, torch.Tensor):
        lam = torch.full((x.shape[0],), float(lam), device=x.device)  # filled on the device: no copy
    return MixOutput(images=images, target_a=y, target_b=y[_to_device(perm, y.device)],
                     lam=lam.to(device=x.device, dtype=torch.float32), mask=mask, perm=perm,
                     stage=stage, method=method)


def _area(mask: torch.Tensor) -> torch.Tensor:
    return mask.mean(dim=(1, 2, 3))  # [N]


def _masked_output(x, y, mask, perm, method) -> MixOutput:
    """Output of a pixel-mask mixer: images mixed by ``mask``, lam = the realised own area of each mask."""
    return _output(x, y, mix_images(x, mask, perm), _area(mask), mask, perm, method)


# ----------------------------------------------------------------------------- pure building blocks

def mix_images(x: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x * mask + x[perm] * (1 - mask)`` computed in (at least) float32 and cast back to ``x.dtype``.

    Args:
        x: [N, C, H, W] images (not modified).
        mask: [N, 1, H, W] (or anything broadcastable) weight of each sample itself, in [0, 1].
        perm: [N] partner index.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dtype)
    m = mask.to(device=x.device, dtype=dtype)
    return (xf * m + xf[perm] * (1 - m)).to(x.dtype)  # [N, C, H, W]


# ----------------------------------------------------------------------------- mixers

def vanilla(x, y, *, alpha=1.0, generator=None, lam=None, **kw) -> MixOutput:
    """No mixing (baseline): images are a copy of x, lam = 1, mask = ones, perm = identity."""
    _check_inputs(x, y, alpha, _reject_extra("vanilla", kw))
    if lam is not None and _check_lam(lam) != 1.0:
        raise ValueError(f"vanilla does not mix, so lam must be None or 1, got {lam}")
    n, _, h, w = x.shape
    perm = torch.arange(n, device=x.device)
    return _output(x, y, x.clone(), 1.0, torch.ones(n, 1, h, w, device=x.device), perm, "vanilla")


def mixup(x, y, *, alpha=1.0, generator=None, lam=None, **kw) -> MixOutput:
    """MixUp (Zhang et al., ICLR 2018): λ ~ Beta(α, α) per batch, global blend; lam = λ, mask = constant λ."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("mixup", kw))
    n, _, h, w = x.shape
    mask = torch.full((n, 1, h, w), lam, device=x.device)
    return _output(x, y, mix_images(x, mask, perm), lam, mask, perm, "mixup")


def cutmix(x, y, *, alpha=1.0, generator=None, lam=None, **kw) -> MixOutput:
    """CutMix (Yun et al., ICCV 2019): λ ~ Beta(α, α), one partner box of area 1 - λ per batch; lam = realised area."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("cutmix", kw))
    n, _, h, w = x.shape
    mask = box_mask(h, w, cutmix_box(h, w, lam, generator), device=x.device).expand(n, 1, h, w).clone()
    return _masked_output(x, y, mask, perm, "cutmix")


def fmix(x, y, *, alpha=1.0, generator=None, lam=None, decay_power=3.0, **kw) -> MixOutput:
    """FMix (Harris et al., 2020): λ ~ Beta(α, α), per-sample Fourier-noise masks with exactly λ·HW own pixels;
    lam = realised area (λ rounded to whole pixels)."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("fmix", kw))
    n, _, h, w = x.shape
    mask = fmix_mask(n, h, w, lam, generator, decay_power=decay_power, device=x.device)
    return _masked_output(x, y, mask, perm, "fmix")


def smoothmix(x, y, *, alpha=1.0, generator=None, lam=None, sigma_range=(0.25, 0.5), **kw) -> MixOutput:
    """SmoothMix (Lee et al., CVPR-W 2020): λ ~ Beta(α, α), per-sample soft Gaussian partner bump of mass 1 - λ;
    lam = realised mask mean."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("smoothmix", kw))
    n, _, h, w = x.shape
    mask = smooth_mask(n, h, w, lam, generator, sigma_range=sigma_range, device=x.device)
    return _masked_output(x, y, mask, perm, "smoothmix")


def gridmix(x, y, *, alpha=1.0, generator=None, lam=None, cells=(2, 8), **kw) -> MixOutput:
    """GridMix (Baek et al., Pattern Recognition 2021): λ ~ Beta(α, α), each grid cell from the partner with
    probability 1 - λ; lam = realised own area per sample."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("gridmix", kw))
    n, _, h, w = x.shape
    mask = grid_mask(n, h, w, lam, generator, cells=cells, device=x.device)
    return _masked_output(x, y, mask, perm, "gridmix")


def resizemix(x, y, *, alpha=1.0, generator=None, lam=None, scale=(0.1, 0.8), **kw) -> MixOutput:
    """ResizeMix (Qin et al., 2020): the partner shrunk to a patch of scale τ ~ U(0.1, 0.8) (α unused; forced lam
    gives τ = sqrt(1 - lam)) pasted at a random place; lam = own area 1 - patch area."""
    opts = _options("resizemix", kw)
    _check_inputs(x, y, alpha, opts.check_labels)
    tau = _uniform(generator, *scale) if lam is None else math.sqrt(1.0 - _check_lam(lam))
    perm = _to_device(sample_pairs(x.shape[0], opts.pairing, generator), x.device)
    n, _, h, w = x.shape
    ph, pw = int(round(tau * h)), int(round(tau * w))
    y0, x0 = _randint(generator, h - ph + 1), _randint(generator, w - pw + 1)
    mask = box_mask(h, w, (y0, y0 + ph, x0, x0 + pw), device=x.device).expand(n, 1, h, w).clone()
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    images = xf * mask  # [N, C, H, W], zero inside the patch
    if ph > 0 and pw > 0:
        images[:, :, y0:y0 + ph, x0:x0 + pw] = F.interpolate(
            xf[perm], size=(ph, pw), mode="bilinear", align_corners=False, antialias=(ph < h or pw < w))
    return _output(x, y, images.to(x.dtype), _area(mask), mask, perm, "resizemix")


def saliencymix(x, y, *, alpha=1.0, generator=None, lam=None, **kw) -> MixOutput:
    """SaliencyMix (Uddin et al., ICLR 2021): λ ~ Beta(α, α), a CutMix box of area 1 - λ centred on the partner's
    spectral-residual saliency peak, pasted at the same place; lam = realised area per sample."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("saliencymix", kw))
    n, _, h, w = x.shape
    peak = spectral_residual_saliency(x).flatten(1).argmax(1)[perm]  # [N] partner's peak, flat index (device)
    mask = box_mask(h, w, cutmix_boxes_at(h, w, lam, peak // w, peak % w))  # boxes computed on the device
    return _masked_output(x, y, mask, perm, "saliencymix")


def manifoldmix(x, y, *, alpha=1.0, generator=None, lam=None, stages=(0, 1, 2, 3), num_stages=None,
                **kw) -> MixOutput:
    """ManifoldMix (Verma et al., ICML 2019): λ ~ Beta(α, α) per batch, mixed later at a hidden stage drawn from
    ``stages`` (below ``num_stages`` if given); images = copy of x, mask None, lam = λ. Use manifold_forward."""
    lam, perm = _setup(x, y, alpha, lam, generator, _options("manifoldmix", kw))
    choices = [int(s) for s in stages if num_stages is None or int(s) < num_stages]
    if not choices:
        raise ValueError(f"no stage in {tuple(stages)} is below num_stages={num_stages}")
    stage = choices[_randint(generator, len(choices))]
    return _output(x, y, x.clone(), lam, None, perm, "manifoldmix", stage=stage)


Mixer = Callable[..., MixOutput]
MIXERS: dict[str, Mixer] = {
    "vanilla": vanilla, "mixup": mixup, "cutmix": cutmix, "manifoldmix": manifoldmix, "fmix": fmix,
    "resizemix": resizemix, "saliencymix": saliencymix, "smoothmix": smoothmix, "gridmix": gridmix,
}


def mix(x: torch.Tensor, y: torch.Tensor, method: str | Mixer, *, alpha: float | None = None,
        generator: torch.Generator | None = None, check_labels: bool = True, **kwargs) -> MixOutput:
    """Mix a batch with a named method from MIXERS or any mixer callable (e.g. a frozen AutoMix mixer).

    Nothing here waits for the device (draws are made on ``generator``, a CPU one keeps them on the host)
    except the check that labels are >= 0; a trainer that validated its labels once passes
    ``check_labels=False``.

    Args:
        x: [N, C, H, W] float images (never modified in place).
        y: [N] integer labels.
        method: a name in MIXERS or a callable ``mixer(x, y, *, alpha, generator, **kwargs) -> MixOutput``.
        alpha: Beta(alpha, alpha) concentration for λ; None = 1.0 for the built-in mixers, and the mixer's own
            default for a callable (a trained AutoMix's ``AutoMixAugment`` uses the model's alpha, 2.0).
        generator: optional torch.Generator for every random draw.
        check_labels: check y >= 0 (reads the labels from the device).
        **kwargs: passed to the mixer, e.g. ``lam=0.7`` to force the ratio.
    """
    if isinstance(method, str):
        fn = MIXERS.get(method, MIXERS.get(method.lower()))
        if fn is None:
            hint = did_you_mean(method.lower(), MIXERS, cutoff=0.0, quote="plain")
            raise ValueError(f"unknown mixing method '{method}'.{hint} Available: {', '.join(MIXERS)}")
    elif callable(method):
        fn = method
    else:
        raise TypeError(f"method must be a name in MIXERS or a callable, got {type(method).__name__}")
    builtin = fn in MIXERS.values()
    if alpha is None and builtin:
        alpha = 1.0
    _check_inputs(x, y, 1.0 if alpha is None else alpha, check_labels)
    if builtin:  # validated above: the built-in mixer need not read the labels again
        kwargs["check_labels"] = False
    out = fn(x, y, alpha=alpha, generator=generator, **kwargs)
    if not isinstance(out, MixOutput):
        raise TypeError(f"mixer {method!r} returned {type(out).__name__}, expected MixOutput")
    return out


# ----------------------------------------------------------------------------- losses and feature-level mixing

def mix_loss(logits: torch.Tensor, out: MixOutput, smoothing: float = 0.0, *,
             check_labels: bool = True) -> torch.Tensor:
    """Mean over the batch of λ_i · CE(logits_i, target_a_i) + (1 - λ_i) · CE(logits_i, target_b_i), in float32.

    Args:
        logits: [N, K] class scores.
        out: the MixOutput the logits were computed from.
        smoothing: label smoothing applied to each CE term, in [0, 1).
        check_labels: check that both targets lie in [0, K) (reads them from the device; a trainer that
            validated its labels once passes False).
    """
    if logits.dim() != 2 or logits.shape[0] != out.target_a.shape[0]:
        raise ValueError(f"logits must be [N, K] with N = {out.target_a.shape[0]}, got {tuple(logits.shape)}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    k = logits.shape[1]
    for t in (out.target_a, out.target_b) if check_labels else ():
        check_label_range(t, k, f"labels (for logits with {k} classes)", "; build the model with num_classes > max")
    lf = logits.float()
    ce_a = F.cross_entropy(lf, out.target_a.to(lf.device), reduction="none", label_smoothing=smoothing)  # [N]
    ce_b = F.cross_entropy(lf, out.target_b.to(lf.device), reduction="none", label_smoothing=smoothing)  # [N]
    lam = out.lam.to(device=lf.device, dtype=torch.float32)
    return (lam * ce_a + (1 - lam) * ce_b).mean()


def soft_targets(out: MixOutput, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Mixed label distribution [N, K]: λ·onehot(target_a) + (1 - λ)·onehot(target_b), optionally smoothed.

    ``F.cross_entropy(logits, soft_targets(out, K, s))`` equals ``mix_loss(logits, out, s)``.

    Args:
        out: a MixOutput.
        num_classes: K.
        smoothing: label smoothing (mass s spread uniformly over the K classes).
    """
    lam = out.lam.float()[:, None]  # [N, 1]
    t = lam * F.one_hot(out.target_a, num_classes).float() + (1 - lam) * F.one_hot(out.target_b, num_classes).float()
    return t * (1 - smoothing) + smoothing / num_classes  # [N, K]


def manifold_forward(model: torch.nn.Module, x: torch.Tensor, out: MixOutput, *, stage: int | None = None):
    """Run ``model(x)`` with the output h of feature stage ``stage`` replaced by lam·h + (1 - lam)·h[perm].

    The stage module is ``automix_lite.core.models.stage_modules(model)[stage]``; ``stage`` defaults to ``out.stage``
    (clipped to the model's last stage). Only the module's first call in the forward pass is mixed, and the hook
    is always removed afterwards.

    Args:
        model: the network (its stages must be known to ``stage_modules``).
        x: [N, C, H, W] input, normally ``out.images``.
        out: MixOutput giving lam [N] and perm [N] (e.g. from ``mix(x, y, "manifoldmix")``).
        stage: explicit stage index in [0, number of stages).
    """
    from automix_lite.core.models import stage_modules  # lazy: models imports timm

    modules = stage_modules(model)
    if stage is None:
        if out.stage is None:
            raise ValueError("out has no stage: create it with mix(x, y, 'manifoldmix') or pass stage=")
        stage = min(int(out.stage), len(modules) - 1)
    elif not 0 <= stage < len(modules):
        raise ValueError(f"stage must lie in [0, {len(modules)}) for this model, got {stage}")
    done = []

    def hook(module, inputs, h):
        if done:
            return None
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"stage {stage} outputs {type(h).__name__}, manifold mixing needs a tensor")
        done.append(True)
        lam = out.lam.to(device=h.device, dtype=h.dtype).view(-1, *([1] * (h.dim() - 1)))  # [N, 1, ...]
        return lam * h + (1 - lam) * h[out.perm.to(h.device)]

    handle = modules[stage].register_forward_hook(hook)
    try:
        return model(x)
    finally:
        handle.remove()
