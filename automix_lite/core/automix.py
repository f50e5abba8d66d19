"""AutoMix: online + momentum encoders, four heads, the Mix Block, and one training step.

Paper: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022 Oral,
arXiv:2103.13027. Reference implementation: OpenMixup ``AutoMixup`` (the "V1plus" momentum pipeline),
described step by step in ``docs/algorithm.md``; ``docs/...#section`` references below point into ``docs/``.

One step (docs/algorithm.md#one-training-step): draw two independent (λ, permutation) pairs — "mb" trains the
Mix Block, "bb" trains the backbone; take the momentum encoder's feature map at ``feature_stage`` on the clean
batch; the Mix Block turns it into ``mask_mb`` (graph kept) and ``mask_bb`` (detached, with the λ-margin
fallback to plain MixUp); the frozen momentum network classifies the ``mask_mb`` mix (its loss trains only the
Mix Block, through the pixels), the online network classifies the clean batch and the ``mask_bb`` mix. One
backward of ``loss_one_q + loss_mix_q + loss_mix_k + mask_loss_weight * loss_mask``; after the optimizer step,
``momentum_update`` moves the momentum network towards the online one (parameters only,
docs/algorithm.md#momentum-schedule).

Deliberate differences from OpenMixup, all listed in docs/differences.md:
* the momentum parameters are never put in an optimizer group (OpenMixup includes them, gradient-free).
* ``mask_adjust`` rescales ``mask_bb`` towards **λ_bb**; OpenMixup compares with ``lam[0]`` = λ_mb (a bug,
  docs/differences.md). Irrelevant for every AutoMix recipe (``mask_adjust=0``).
* the upsampling factor is image size / feature size (OpenMixup: a rule on image width > 64 px,
  docs/differences.md).
* ``no_repeat_perm`` with a batch of 2: the Mix Block pairing falls back to the swap (OpenMixup's random
  shift in [1, N-2] is undefined there and raises).
* draws come from one ``torch.Generator`` on the host (OpenMixup: NumPy's global RNG and ``torch.randperm``).

Matching OpenMixup (each pinned by a test in tests/test_automix.py or tests/test_mixblock.py): the whole
momentum encoder runs on the clean batch (``momentum_features="full"``; ``"early_stop"`` is an opt-in speed
option that changes only the running statistics of the momentum encoder's BatchNorm layers after the feature
stage), ``switch_off`` skips the momentum branch with the constant probability ``1 - switch_off`` and still
adds the mask loss, the variance mask losses use the population variance, the momentum keeps its base value
while ``step < int(momentum_scope * T)``, the no-repeat fallback shifts only the Mix Block pairing by a random
amount, and ``training_step`` returns λ_mb / λ_bb exactly (float64).

GPU path: ``training_step`` = ``draw`` (host: λ, pairings, coin flips) + ``device_draws`` (one queued copy)
+ ``step_losses`` (device work only, no host read, no branch on data; ``check_labels=False`` also skips the
label-range read). ``online_pass="fused"`` (the default on CUDA) runs the online encoder once over the clean
batch and the backbone's mix with per-half BatchNorm statistics (``automix_lite.fast.fused``).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fast.fused import per_part_batchnorm
from .masks import _randint, _to_device, _uniform
from .mixblock import MixBlock, mask_loss
from .mixing import MixOutput, mix_images, sample_lam, sample_perm
from .models import (LinearHead, check_image_size, create_backbone, default_feature_stage, feature_map,
                     stage_channels)

__all__ = ["AutoMix", "AutoMixAugment", "StepDraws", "DeviceDraws", "momentum_at", "mask_loss_weight_at", "HEADS"]

HEADS = ("one_k", "mix_k", "one_q", "mix_q")


def momentum_at(step: int, total_steps: int, base: float = 0.999, end: float = 0.999999,
                scope_start: float = 0.1) -> float:
    """EMA momentum of OpenMixup's ``CosineScheduleHook`` (docs/algorithm.md#momentum-schedule).

    ``m = base`` for ``t < int(scope_start * T)`` (the hook's integer cut-off, ``min_iter``); afterwards
    ``m = end - (end - base) * (cos(π t / T) + 1) / 2``. The cosine uses t/T, not the position inside the
    scope, so there is a tiny jump at the cut-off (0.999 -> ~0.999024 for the CIFAR recipe): an upstream
    detail we keep.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < int(scope_start * total_steps):
        return base
    t = min(step, total_steps) / total_steps
    return end - (end - base) * (math.cos(math.pi * t) + 1) / 2


def mask_loss_weight_at(step: int, total_steps: int, base: float = 0.1, schedule: str = "constant") -> float:
    """Mask-loss weight at ``step`` (docs/algorithm.md#mask-loss).

    * "constant": ``base`` (CIFAR and Tiny-ImageNet recipes).
    * "cosine": a true cosine from ``base`` to 0 over training.
    * "upstream": OpenMixup's ImageNet hook as it really behaves — every iteration applies the cosine factor
      to the *current* value, so the weight compounds towards 0 within a few epochs. Closed form:
      ``base * prod_{i<=t} (cos(π i/T) + 1) / 2``.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1) / 2
    if schedule == "upstream":
        t = min(step, total_steps)
        return base * math.exp(float(_upstream_log_factors(total_steps)[t])) if t > 0 else base
    raise ValueError(f"mask loss schedule must be 'constant', 'cosine' or 'upstream', got {schedule!r}")


@functools.lru_cache(maxsize=4)
def _upstream_log_factors(total_steps: int) -> torch.Tensor:
    """Prefix sums of log((cos(π i/T) + 1) / 2), i = 0..T (index t = product over the first t iterations)."""
    i = torch.arange(1, total_steps + 1, dtype=torch.float64)
    logs = torch.log(((torch.cos(math.pi * i / total_steps) + 1) / 2).clamp_min(1e-300))
    return torch.cat([torch.zeros(1, dtype=torch.float64), logs.cumsum(0)])


def _mixed_ce(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam, lam_c) -> torch.Tensor:
    """λ·CE(logits, y) + (1-λ)·CE(logits, y[perm]) with one scalar λ, CE averaged over the batch, fp32.

    ``lam_c`` is 1 - λ, computed by the caller in float64 (a Python float or a float32 device scalar)."""
    logits = logits.float()  # [N, K]
    return lam * F.cross_entropy(logits, y) + lam_c * F.cross_entropy(logits, y[perm])


def _check_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, in_chans: int,
                 check_labels: bool = True) -> None:
    """Shapes, dtypes and (``check_labels``) the label range; only the label range reads the device."""
    if not torch.is_tensor(x) or x.ndim != 4:
        raise ValueError(f"images must be a 4-D tensor [N, C, H, W], got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"images must be floating point (normalised), got {x.dtype}; use x.float() / 255")
    if x.shape[1] != in_chans:
        raise ValueError(f"images have {x.shape[1]} channels but the model expects {in_chans} (in_chans)")
    if not torch.is_tensor(y) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be a 1-D tensor of length N={x.shape[0]}, got "
                         f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {y.dtype}")
    if x.shape[0] < 2:
        raise ValueError("AutoMix pairs samples within the batch: it needs a batch of at least 2, got 1")
    if check_labels and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got min {int(y.min())} max {int(y.max())}")


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


@torch.no_grad()
def _ema_(targets: list[torch.Tensor], sources: list[torch.Tensor], m: float) -> None:
    """targets <- m * targets + (1 - m) * sources, in place."""
    if targets:
        torch._foreach_mul_(targets, m)
        torch._foreach_add_(targets, sources, alpha=1 - m)


@dataclass(frozen=True)
class StepDraws:
    """The random draws of one AutoMix step, made on the host (``AutoMix.draw``).

    Args:
        lam_mb, lam_bb: the exact Beta(α, α) draws (Python floats) for the Mix Block and the backbone.
        perm_mb, perm_bb: pairings [N] (CPU long tensors).
        train_mb: the momentum network judges the Mix Block's mix this step (False only with ``switch_off``).
        adjust: ``mask_adjust`` applies to ``mask_bb`` this step.
        fallback: λ_bb is within ``lam_margin`` of 0 or 1: the backbone mixes with plain MixUp.
    """

    lam_mb: float
    lam_bb: float
    perm_mb: torch.Tensor
    perm_bb: torch.Tensor
    train_mb: bool
    adjust: bool
    fallback: bool

    def host_tensors(self, w_mask: float) -> "DeviceDraws":
        """The layout a device step reads, still on the host: scalars [5] float32 = (λ_mb, 1-λ_mb, λ_bb, 1-λ_bb,
        mask-loss weight), each rounded once from float64; flags [2] bool = (fallback, adjust); perms [2, N]."""
        scalars = torch.tensor([self.lam_mb, 1 - self.lam_mb, self.lam_bb, 1 - self.lam_bb, w_mask],
                               dtype=torch.float32)
        return DeviceDraws(scalars, torch.tensor([self.fallback, self.adjust]),
                           torch.stack([self.perm_mb, self.perm_bb]))


class DeviceDraws(NamedTuple):
    """``StepDraws`` as three device tensors (see ``AutoMix.device_draws``): what a captured step reads."""

    scalars: torch.Tensor  # [5] float32: λ_mb, 1-λ_mb, λ_bb, 1-λ_bb, mask-loss weight
    flags: torch.Tensor  # [2] bool: fallback, adjust
    perms: torch.Tensor  # [2, N] long: perm_mb, perm_bb


class AutoMix(nn.Module):
    """The AutoMix classifier (OpenMixup ``AutoMixup``), trained by ``training_step``.

    Args:
        backbone: timm model name, a CIFAR-stem name (``resnet18_cifar`` ...) or an ``nn.Module`` backbone.
        num_classes: number of classes.
        feature_stage: stage index fed to the Mix Block (timm ``feature_info`` index; None = the backbone's
            default, ResNet ``layer3``).
        alpha: λ ~ Beta(α, α) for both draws (2 in every recipe).
        momentum: base EMA momentum m0 (0.999). ``momentum == 1`` disables the EMA (values above 1 are refused).
        end_momentum: final momentum of the cosine schedule (0.999999 CIFAR/Tiny, 0.99999 ImageNet).
        momentum_scope: fraction of training during which the momentum stays at m0 (0.1; ViTs 0.25).
        mask_loss_weight: weight of the mask loss (0.1).
        mask_loss_mode / mask_loss_margin: see ``mixblock.mask_loss`` ("L1", 0.1).
        mask_loss_schedule: "constant", "cosine" or "upstream" (see ``mask_loss_weight_at``).
        lam_margin: if min(λ_bb, 1-λ_bb) <= margin the backbone step uses plain MixUp (0.08; < 0 disables).
        lam_concat: feed λ to the Mix Block (ImageNet recipes).
        reduction, use_scale, upsample, att_norm: Mix Block options.
        mask_adjust: probability of rescaling ``mask_bb`` so its per-sample own area equals λ_bb (0).
        switch_off: ViT knob (0.8 there): the probability that the momentum network judges the Mix Block's
            mix in a step (0 = always); on the other steps only the mask loss trains the Mix Block.
        ema_bn_buffers: also EMA the float buffers (BN running stats); False = OpenMixup (k keeps its own stats).
        head_ensemble: ``forward(x, head="ensemble")`` becomes the default evaluation head.
        no_repeat_perm: avoid fixed points i == perm[i] (OpenMixup ``mix_shuffle_no_repeat``; see ``_perm``).
        momentum_features: how the Mix Block's feature map is computed from the clean batch. "full"
            (default, as OpenMixup): the whole momentum encoder runs, so its BatchNorm layers after the feature
            stage update their running statistics from the clean batch too (two updates per step). "early_stop":
            stop at the feature stage (faster); the step's losses, gradients and parameters are unchanged, but
            those later BatchNorm layers then see only the Mix Block's mix (one update per step), which changes
            their running statistics and so the eval-mode logits of the ``one_k`` / ``mix_k`` heads.
        online_pass: how the online encoder sees the clean batch and the backbone's mix. "separate": two
            passes. "fused": one pass over the 2N batch with every BatchNorm layer normalising (and updating its
            running statistics from) each half separately (``fused.per_part_batchnorm``), so the outputs,
            gradients and running statistics equal those of the two passes up to float rounding; faster where
            kernel launches dominate (a GPU at CIFAR sizes). "auto" (default): fused on CUDA, else separate.
        in_chans: image channels.
        **backbone_kwargs: passed to ``create_backbone`` (e.g. ``img_size=32`` for a ViT).
    """

    def __init__(self, backbone: str | nn.Module, num_classes: int, *, feature_stage: int | None = None,
                 alpha: float = 2.0, momentum: float = 0.999, end_momentum: float = 0.999999,
                 momentum_scope: float = 0.1, mask_loss_weight: float = 0.1, mask_loss_mode: str = "L1",
                 mask_loss_margin: float = 0.1, mask_loss_schedule: str = "constant", lam_margin: float = 0.08,
                 lam_concat: bool = False, reduction: int = 2, use_scale: bool = True, upsample: str = "nearest",
                 att_norm: str | None = None, mask_adjust: float = 0.0, switch_off: float = 0.0,
                 ema_bn_buffers: bool = False, head_ensemble: bool = False, no_repeat_perm: bool = False,
                 momentum_features: str = "full", online_pass: str = "auto", in_chans: int = 3,
                 **backbone_kwargs):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (λ ~ Beta(alpha, alpha)), got {alpha}")
        if not 0 <= momentum <= 1 or not 0 <= end_momentum <= 1:
            raise ValueError(f"momentum and end_momentum must lie in [0, 1], got {momentum}, {end_momentum}")
        if online_pass not in ("auto", "fused", "separate"):
            raise ValueError(f"online_pass must be 'auto', 'fused' or 'separate', got {online_pass!r}")
        if momentum_features not in ("full", "early_stop"):
            raise ValueError(f"momentum_features must be 'full' or 'early_stop', got {momentum_features!r}")
        self.backbone_q = create_backbone(backbone, in_chans=in_chans, **backbone_kwargs)
        self.feature_stage = (default_feature_stage(self.backbone_q) if feature_stage is None
                              else feature_stage)
        width = self.backbone_q.num_features
        self.head_one_q = LinearHead(width, num_classes)
        self.head_mix_q = LinearHead(width, num_classes)
        self.mix_block = MixBlock(stage_channels(self.backbone_q, self.feature_stage), reduction=reduction,
                                  lam_concat=lam_concat, use_scale=use_scale, upsample=upsample,
                                  att_norm=att_norm)
        # momentum (key) network: exact copies, frozen, updated only by EMA
        self.backbone_k = copy.deepcopy(self.backbone_q).requires_grad_(False)
        self.head_one_k = copy.deepcopy(self.head_one_q).requires_grad_(False)
        self.head_mix_k = copy.deepcopy(self.head_mix_q).requires_grad_(False)
        self.num_classes, self.in_chans, self.alpha = num_classes, in_chans, alpha
        self.momentum, self.end_momentum, self.momentum_scope = momentum, end_momentum, momentum_scope
        self.mask_loss_weight, self.mask_loss_mode = mask_loss_weight, mask_loss_mode
        self.mask_loss_margin, self.mask_loss_schedule = mask_loss_margin, mask_loss_schedule
        self.lam_margin, self.mask_adjust, self.switch_off = lam_margin, mask_adjust, switch_off
        self.ema_bn_buffers, self.head_ensemble, self.no_repeat_perm = ema_bn_buffers, head_ensemble, no_repeat_perm
        self.momentum_features, self.online_pass = momentum_features, online_pass
        self.backbone_name = backbone if isinstance(backbone, str) else type(backbone).__name__
        mask_loss_weight_at(0, 1, mask_loss_weight, mask_loss_schedule)  # validates the schedule name

    # ------------------------------------------------------------------ parameter groups
    def online_parameters(self) -> list[nn.Parameter]:
        """Parameters of the online encoder and its two heads (the trainer's main group)."""
        mods = (self.backbone_q, self.head_one_q, self.head_mix_q)
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def mix_block_parameters(self) -> list[nn.Parameter]:
        """Parameters of the Mix Block (may get their own learning-rate schedule)."""
        return [p for p in self.mix_block.parameters() if p.requires_grad]

    def _pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone_q, self.backbone_k), (self.head_one_q, self.head_one_k),
                (self.head_mix_q, self.head_mix_k)]

    # ------------------------------------------------------------------ random draws (host side)
    def _perm(self, n: int, generator, shift_on_failure: bool) -> torch.Tensor:
        """A random pairing [N] (CPU). ``no_repeat_perm`` (OpenMixup ``_no_repeat_shuffle_idx``): redraw up to
        10 times while some i == perm[i]; if the last check still fails, ``shift_on_failure`` (the Mix Block's
        pairing) replaces it by a cyclic shift by a random amount in [1, N-2] (1 when N = 2), otherwise (the
        backbone's pairing, ``ignore_failure=True`` upstream) the last draw is kept, fixed points and all."""
        perm = sample_perm(n, generator)
        if not self.no_repeat_perm:
            return perm
        for _ in range(10):
            if not bool((perm == torch.arange(n)).any()):  # host tensors: no device read
                return perm
            perm = sample_perm(n, generator)
        if not shift_on_failure:
            return perm
        shift = 1 + _randint(generator, n - 2) if n > 2 else 1
        return (torch.arange(n) + shift) % n

    def draw(self, n: int, generator: torch.Generator | None = None) -> StepDraws:
        """Every random draw of one step (docs/algorithm.md#one-training-step), made on the host before any
        device work: λ_mb, λ_bb, the two pairings, whether the Mix Block branch runs (``switch_off``) and
        whether ``mask_adjust`` applies. The draw order is fixed, so one generator seed gives one step."""
        lam_mb, lam_bb = sample_lam(self.alpha, generator), sample_lam(self.alpha, generator)
        perm_mb = self._perm(n, generator, shift_on_failure=True)
        perm_bb = self._perm(n, generator, shift_on_failure=False)
        # OpenMixup forward_k: skip the Mix Block branch when rand > switch_off (cos_annealing stays 1)
        train_mb = not (self.switch_off > 0 and _uniform(generator) > self.switch_off)
        adjust = self.mask_adjust > 0 and _uniform(generator) < self.mask_adjust
        fallback = self.lam_margin >= 0 and min(lam_bb, 1 - lam_bb) <= self.lam_margin
        return StepDraws(lam_mb, lam_bb, perm_mb, perm_bb, train_mb, adjust, fallback)

    # ------------------------------------------------------------------ masks
    def feature_map(self, x: torch.Tensor, *, stop_early: bool = True) -> torch.Tensor:
        """Momentum encoder's feature map at ``feature_stage``: [N, C, h, w] (no gradient).

        ``stop_early=False`` runs the whole momentum encoder (what a training step does by default, so the
        BatchNorm layers after the feature stage see the clean batch as in OpenMixup); the map is the same."""
        check_image_size(self.backbone_k, x)
        weight = next(self.backbone_k.parameters(), None)
        if weight is not None and x.dtype != weight.dtype and not _autocast_on(x.device.type):
            raise TypeError(f"images are {x.dtype} but the model's weights are {weight.dtype}; convert with "
                            f"x.to({weight.dtype}) (or model.to(dtype))")
        with torch.no_grad():
            z = feature_map(self.backbone_k, x, self.feature_stage, stop_early=stop_early)  # [N, C, h, w]
        if z.shape[-2] * z.shape[-1] < 2:
            raise ValueError(f"feature stage {self.feature_stage} maps {x.shape[-2]}x{x.shape[-1]} images to a "
                             f"{z.shape[-2]}x{z.shape[-1]} feature map: the Mix Block needs at least 2 positions "
                             "to place a mask. Use larger images (e.g. 32 px for the CIFAR ResNets) or an earlier "
                             "feature_stage")
        return z

    def generate_mask(self, x: torch.Tensor, lam, perm: torch.Tensor) -> torch.Tensor:
        """Mix Block mask [N, 2, H, W] for figures and frozen mixing (no gradient, no fallback).

        The momentum encoder and the Mix Block run in eval mode (BN running statistics, nothing updated),
        whatever the model's mode; their modes are restored afterwards."""
        modes = [(m, m.training) for m in (self.backbone_k, self.mix_block)]
        try:
            for m, _ in modes:
                m.eval()
            with torch.no_grad():
                return self.mix_block(self.feature_map(x), lam, _to_device(perm, x.device), x.shape[-2:])
        finally:
            for m, was in modes:
                m.train(was)

    def _adjust(self, mask: torch.Tensor, lam, lam_c=None) -> torch.Tensor:
        """Rescale each mask so the own-sample area equals λ exactly (the over-sized channel shrinks).
        ``lam_c`` = 1 - λ (defaults to ``1 - lam``)."""
        lam_c = 1 - lam if lam_c is None else lam_c
        own = mask[:, 0:1]  # [N, 1, H, W]
        area = own.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)  # [N, 1, 1, 1]
        shrink_own = own * (lam / area)  # own area too large -> scale own down
        shrink_partner = 1 - (1 - own) * (lam_c / (1 - area).clamp_min(1e-8))
        own = torch.where(area > lam, shrink_own, shrink_partner).clamp(0, 1)
        return torch.cat([own, 1 - own], dim=1)  # [N, 2, H, W]

    # ------------------------------------------------------------------ training
    def device_draws(self, d: StepDraws, device, w_mask: float) -> DeviceDraws:
        """The draws as device tensors (``StepDraws.host_tensors``, one host->device copy each, queued without
        waiting)."""
        return DeviceDraws(*(_to_device(t, device) for t in d.host_tensors(w_mask)))

    def training_step(self, x: torch.Tensor, y: torch.Tensor, step: int = 0, total_steps: int = 1, *,
                      generator: torch.Generator | None = None, check_labels: bool = True) -> dict[str, torch.Tensor]:
        """One AutoMix iteration (docs/algorithm.md#one-training-step).

        Call ``loss.backward()``, the optimizer, then ``momentum_update``.

        Returns a dict: ``loss`` and its terms ``loss_one_q loss_mix_q loss_mix_k loss_mask`` (all keep their
        graph, so each term's gradient can be inspected; log them with ``.item()``), ``lam_mb lam_bb`` (the
        exact draws, float64), ``mask_loss_weight``, ``fallback`` (1 if λ_bb hit the margin), ``mb_trained``,
        and for callbacks ``mask_mb`` / ``mask_bb`` [N, 2, H, W] (detached) with ``perm_mb`` / ``perm_bb``.

        Nothing here waits for the device except the label-range check; a trainer that validated its labels
        once passes ``check_labels=False``. Draws come from ``generator`` (a CPU generator keeps them on the host).
        """
        _check_batch(x, y, self.num_classes, self.in_chans, check_labels)
        d = self.draw(x.shape[0], generator)
        w_mask = mask_loss_weight_at(step, total_steps, self.mask_loss_weight, self.mask_loss_schedule)
        out = self.step_losses(x, y, self.device_draws(d, x.device, w_mask), train_mb=d.train_mb)
        out.update({
            "lam_mb": torch.tensor(d.lam_mb, dtype=torch.float64),
            "lam_bb": torch.tensor(d.lam_bb, dtype=torch.float64),
            "mask_loss_weight": torch.tensor(w_mask), "fallback": torch.tensor(float(d.fallback)),
            "mb_trained": torch.tensor(float(d.train_mb)),
        })
        return out

    def _online_features(self, x: torch.Tensor, x_bb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online encoder features of the clean batch and of the backbone's mix ([N, D] each), in one fused
        pass or two (``online_pass``)."""
        fused = self.online_pass == "fused" or (self.online_pass == "auto" and x.device.type == "cuda")
        if not fused:
            return self.backbone_q(x), self.backbone_q(x_bb)
        n = x.shape[0]
        with per_part_batchnorm(self.backbone_q, (n, n)):
            f = self.backbone_q(torch.cat([x, x_bb]))  # [2N, D]
        return f[:n], f[n:]

    def step_losses(self, x: torch.Tensor, y: torch.Tensor, dd: DeviceDraws, train_mb: bool = True) -> dict:
        """The device part of a step, given the draws as device tensors: no host read, no branch on data
        (the λ-margin fallback and ``mask_adjust`` are selected with ``torch.where``), so it can be captured
        in a CUDA graph. ``train_mb`` (a host draw) decides whether the momentum network judges the Mix
        Block's mix (OpenMixup ``switch_off``); the mask loss of ``mask_mb`` is added either way."""
        size = x.shape[-2:]
        lam_mb, lam_mb_c, lam_bb, lam_bb_c, w_mask = dd.scalars.unbind()
        perm_mb, perm_bb = dd.perms.unbind()
        z = self.feature_map(x, stop_early=self.momentum_features == "early_stop")  # [N, C, h, w], no grad
        mask_mb = self.mix_block(z, lam_mb, perm_mb, size)  # [N, 2, H, W], keeps the graph
        mask_bb = self.mix_block(z, lam_bb, perm_bb, size).detach()  # [N, 2, H, W], no grad into the block
        if self.mask_adjust > 0:
            mask_bb = torch.where(dd.flags[1], self._adjust(mask_bb, lam_bb, lam_bb_c), mask_bb)
        if self.lam_margin >= 0:  # degenerate to plain input MixUp when λ_bb is within the margin
            plain = torch.stack([lam_bb, lam_bb_c]).view(1, 2, 1, 1).expand_as(mask_bb)  # [N, 2, H, W]
            mask_bb = torch.where(dd.flags[0], plain, mask_bb)
        loss_mask = mask_loss(mask_mb, lam_mb, self.mask_loss_mode, self.mask_loss_margin)
        if train_mb:
            x_mb = x * mask_mb[:, 0:1].to(x.dtype) + x[perm_mb] * mask_mb[:, 1:2].to(x.dtype)  # [N, C, H, W]
            logits_k = self.head_mix_k(self.backbone_k(x_mb))  # [N, K], frozen net, grad flows to x_mb
            loss_mix_k = _mixed_ce(logits_k, y, perm_mb, lam_mb, lam_mb_c)
        else:
            loss_mix_k = x.new_zeros((), dtype=torch.float32)
        x_bb = x * mask_bb[:, 0:1].to(x.dtype) + x[perm_bb] * mask_bb[:, 1:2].to(x.dtype)  # [N, C, H, W]
        f_one, f_mix = self._online_features(x, x_bb)  # [N, D] each
        loss_one_q = F.cross_entropy(self.head_one_q(f_one).float(), y)
        loss_mix_q = _mixed_ce(self.head_mix_q(f_mix), y, perm_bb, lam_bb, lam_bb_c)
        loss = loss_one_q + loss_mix_q + loss_mix_k + w_mask * loss_mask
        return {
            "loss": loss,
            "loss_one_q": loss_one_q, "loss_mix_q": loss_mix_q, "loss_mix_k": loss_mix_k, "loss_mask": loss_mask,
            "mask_mb": mask_mb.detach(), "perm_mb": perm_mb, "mask_bb": mask_bb, "perm_bb": perm_bb,
        }

    def momentum_at(self, step: int, total_steps: int) -> float:
        """Scheduled EMA momentum for ``step`` (docs/algorithm.md#momentum-schedule)."""
        return momentum_at(step, total_steps, self.momentum, self.end_momentum, self.momentum_scope)

    @torch.no_grad()
    def momentum_update(self, step: int, total_steps: int) -> float:
        """EMA of the online network into the momentum network, after the optimizer step. Returns m."""
        m = self.momentum_at(step, total_steps)
        if self.momentum >= 1:
            return 1.0
        for q, k in self._pairs():
            _ema_([p.data for p in k.parameters()], [p.data for p in q.parameters()], m)
            if self.ema_bn_buffers:
                bufs = [(bk, bq) for bk, bq in zip(k.buffers(), q.buffers()) if bk.is_floating_point()]
                _ema_([b[0] for b in bufs], [b[1] for b in bufs], m)
        return m

    # ------------------------------------------------------------------ inference
    def forward(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """Logits [N, K] from one head: "one_k" (OpenMixup's inference default), "mix_k", "one_q", "mix_q",
        or "ensemble" (upstream ``head_ensemble`` rule, docs/algorithm.md#inference-heads: the mean of the
        squared logits of the four heads). ``head=None`` means "ensemble" if ``head_ensemble`` else "one_k"."""
        head = head or ("ensemble" if self.head_ensemble else "one_k")
        if head == "ensemble":
            outs = self.forward_all(x)
            return torch.stack([o.float().pow(2) for o in outs.values()]).mean(0)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS + ('ensemble',)}, got {head!r}")
        backbone = self.backbone_k if head.endswith("_k") else self.backbone_q
        return getattr(self, f"head_{head}")(backbone(x))

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of all four heads, two backbone passes: {"one_k", "mix_k", "one_q", "mix_q"}."""
        fk, fq = self.backbone_k(x), self.backbone_q(x)  # [N, D] each
        return {"one_k": self.head_one_k(fk), "mix_k": self.head_mix_k(fk),
                "one_q": self.head_one_q(fq), "mix_q": self.head_mix_q(fq)}

    def as_mixer(self) -> "AutoMixAugment":
        """This model's Mix Block as a frozen mixer usable with ``mix(x, y, method=...)``."""
        return AutoMixAugment(self)


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

    model: AutoMix
    adjust: bool = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, alpha: float | None = None,
                 generator: torch.Generator | None = None, lam: float | None = None, **_) -> MixOutput:
        _check_batch(x, y, self.model.num_classes, self.model.in_chans)
        lam = sample_lam(self.model.alpha if alpha is None else alpha, generator) if lam is None else float(lam)
        perm = _to_device(sample_perm(x.shape[0], generator), x.device)
        mask = self.model.generate_mask(x, lam, perm)  # [N, 2, H, W]
        if self.adjust:
            mask = self.model._adjust(mask, lam)
        own = mask[:, 0:1]  # [N, 1, H, W]
        images = mix_images(x, own, perm)  # [N, C, H, W]
        return MixOutput(images=images, target_a=y, target_b=y[perm],
                         lam=torch.full((x.shape[0],), lam, dtype=torch.float32, device=x.device),
                         mask=own, perm=perm)
