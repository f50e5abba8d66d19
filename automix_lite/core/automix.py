"""AutoMix: online + momentum encoders, four heads, the Mix Block, and one training step written as the paper.

Paper: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022 Oral,
arXiv:2103.13027. Reference implementation: OpenMixup ``AutoMixup`` (the "V1plus" momentum pipeline),
described step by step in ``docs/algorithm.md``; ``docs/...#section`` references below point into ``docs/``.

One step (``AutoMix.training_step``, docs/algorithm.md#one-training-step), in the paper's notation:

* two independent draws (λ_mb, π_mb) and (λ_bb, π_bb), λ ~ Beta(α, α): "mb" trains the Mix Block, "bb" the
  backbone;
* z = f_k(x): the momentum encoder's feature map at ``feature_stage`` on the clean batch, no gradient;
* M_λ = MixBlock(z, λ, π) [N, 2, H, W]; the mixed batch x_mix = M_λ[:, 0]·x + M_λ[:, 1]·x[π];
* L_mix_k = λ_mb·CE(g_k(f_k(x_mb)), y) + (1 − λ_mb)·CE(·, y[π_mb]): the frozen momentum network judges the
  Mix Block's mix; its gradient reaches only the Mix Block, through the pixels of x_mb;
* the backbone's mask M_bb is detached (and replaced by the constant λ_bb mask when λ_bb is within
  ``lam_margin`` of 0 or 1); L_one_q = CE(g_q(f_q(x)), y), L_mix_q = the mixed CE of g_q(f_q(x_bb));
* L = L_one_q + L_mix_q + L_mix_k + w·L_mask; one backward; after the optimizer step
  θ_k ← m·θ_k + (1 − m)·θ_q (``momentum_update``, parameters only).

The speed machinery runs this same step differently and is proven equal to it by the tests:
``automix_lite.fast.step`` (draws as device tensors, the fallback as ``torch.where``, the fused online pass,
nothing that waits for the device) and ``automix_lite.fast.graphed`` (the whole step as one CUDA graph).

Deliberate differences from OpenMixup, all listed in docs/differences.md:
* the momentum parameters are never put in an optimizer group (OpenMixup includes them, gradient-free).
* ``mask_adjust`` rescales ``mask_bb`` towards **λ_bb**; OpenMixup compares with ``lam[0]`` = λ_mb (a bug).
  Irrelevant for every AutoMix recipe (``mask_adjust=0``).
* the upsampling factor is image size / feature size (OpenMixup: a rule on image width > 64 px).
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
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import AutoMixAugment
from .checks import check_batch
from .masks import _randint, _to_device, _uniform
from .mixblock import MixBlock, adjust_mask, mask_loss
from .models import LinearHead, check_image_size, create_backbone, default_feature_stage, feature_map, stage_channels
from .sampling import sample_lam, sample_perm
from .schedules import ema_, mask_loss_weight_at, momentum_at

__all__ = ["AutoMix", "AutoMixAugment", "StepAblation", "StepDraws", "momentum_at", "mask_loss_weight_at", "HEADS",
           "mixed_ce", "draw_pairing", "ema_tensors", "mask_mix"]

HEADS = ("one_k", "mix_k", "one_q", "mix_q")


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam, lam_c) -> torch.Tensor:
    """λ·CE(logits, y) + (1-λ)·CE(logits, y[perm]) with one scalar λ, each CE averaged over the batch, fp32.

    ``lam_c`` is 1 - λ, computed by the caller in float64 (a Python float or a float32 device scalar).
    ``mixing.mix_loss`` is the same quantity for a per-sample λ [N] (mean of λ_i·CE_i + ...); AutoMix keeps
    this form because it is the reference's order of operations (scalar λ times batch means), which the
    bitwise tests against the reference transcription pin."""
    logits = logits.float()  # [N, K]
    return lam * F.cross_entropy(logits, y) + lam_c * F.cross_entropy(logits, y[perm])


def mask_mix(x: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x̃ = M^own ⊙ x + M^partner ⊙ x[π] from a Mix Block mask [N, 2, H, W] (both channels, as the reference
    mixes; ``mixing.mix_images`` takes one own-weight channel and uses 1 − M instead): [N, C, H, W]."""
    return x * mask[:, 0:1].to(x.dtype) + x[perm] * mask[:, 1:2].to(x.dtype)


def draw_pairing(n: int, generator, no_repeat: bool, shift_on_failure: bool) -> torch.Tensor:
    """A random pairing π [N] (CPU). ``no_repeat`` (OpenMixup ``_no_repeat_shuffle_idx``): redraw up to 10
    times while some i == π[i]; if the last check still fails, ``shift_on_failure`` (the Mix Block's pairing)
    replaces it by a cyclic shift by a random amount in [1, N-2] (1 when N = 2), otherwise (the backbone's
    pairing, ``ignore_failure=True`` upstream) the last draw is kept, fixed points and all."""
    perm = sample_perm(n, generator)
    if not no_repeat:
        return perm
    for _ in range(10):
        if not bool((perm == torch.arange(n)).any()):  # host tensors: no device read
            return perm
        perm = sample_perm(n, generator)
    if not shift_on_failure:
        return perm
    shift = 1 + _randint(generator, n - 2) if n > 2 else 1
    return (torch.arange(n) + shift) % n


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _check_encoder_input(backbone: nn.Module, x: torch.Tensor) -> None:
    """The image size suits the backbone, and x has the weights' dtype (unless autocast converts it)."""
    check_image_size(backbone, x)
    weight = next(backbone.parameters(), None)
    if weight is not None and x.dtype != weight.dtype and not _autocast_on(x.device.type):
        raise TypeError(f"images are {x.dtype} but the model's weights are {weight.dtype}; convert with "
                        f"x.to({weight.dtype}) (or model.to(dtype))")


def _check_feature_size(z: torch.Tensor, x: torch.Tensor, stage: int) -> None:
    if z.shape[-2] * z.shape[-1] < 2:
        raise ValueError(f"feature stage {stage} maps {x.shape[-2]}x{x.shape[-1]} images to a "
                         f"{z.shape[-2]}x{z.shape[-1]} feature map: the Mix Block needs at least 2 positions "
                         "to place a mask. Use larger images (e.g. 32 px for the CIFAR ResNets) or an earlier "
                         "feature_stage")


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

    def record(self, w_mask: float) -> dict[str, torch.Tensor]:
        """What ``training_step`` logs about its draws (λs exact in float64)."""
        return {"lam_mb": torch.tensor(self.lam_mb, dtype=torch.float64),
                "lam_bb": torch.tensor(self.lam_bb, dtype=torch.float64),
                "mask_loss_weight": torch.tensor(w_mask), "fallback": torch.tensor(float(self.fallback)),
                "mb_trained": torch.tensor(float(self.train_mb))}


@dataclass(frozen=True)
class StepAblation:
    """One-factor changes of the step for the ablation study (benchmarks/ablations.py, notebook 02c); the
    default changes nothing. (No mask loss and no λ-margin fallback are the options ``mask_loss_weight=0`` and
    ``lam_margin=-1``.) ``detach_mask_bb=False``: L_mix_q's gradient reaches the Mix Block through M_bb;
    ``shared_lam``: λ_bb = λ_mb (both λs are still drawn: the same stream); ``judge="online"``: L_mix_k by the
    online encoder and its mix head (whose parameters its gradient then trains too) instead of the momentum ones."""

    detach_mask_bb: bool = True
    shared_lam: bool = False
    judge: str = "momentum"

    def __post_init__(self) -> None:
        if self.judge not in ("momentum", "online"):
            raise ValueError(f"judge must be 'momentum' or 'online', got {self.judge!r}")


def ema_tensors(model: "AutoMix") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(targets, sources) of the EMA θ_k ← m·θ_k + (1 − m)·θ_q: the momentum network's parameters (and, with
    ``ema_bn_buffers``, its float buffers) and the online ones they follow, in the same order."""
    targets, sources = [], []
    for q, k in ((model.backbone_q, model.backbone_k), (model.head_one_q, model.head_one_k),
                 (model.head_mix_q, model.head_mix_k)):
        targets += [p.data for p in k.parameters()]
        sources += [p.data for p in q.parameters()]
        if model.ema_bn_buffers:
            bufs = [(bk, bq) for bk, bq in zip(k.buffers(), q.buffers()) if bk.is_floating_point()]
            targets += [b[0] for b in bufs]
            sources += [b[1] for b in bufs]
    return targets, sources


def _check_options(num_classes, alpha, momentum, end_momentum, momentum_features) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (λ ~ Beta(alpha, alpha)), got {alpha}")
    if not 0 <= momentum <= 1 or not 0 <= end_momentum <= 1:
        raise ValueError(f"momentum and end_momentum must lie in [0, 1], got {momentum}, {end_momentum}")
    if momentum_features not in ("full", "early_stop"):
        raise ValueError(f"momentum_features must be 'full' or 'early_stop', got {momentum_features!r}")


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
        mask_loss_weight, mask_loss_mode, mask_loss_margin, mask_loss_schedule: the mask loss (0.1, "L1", 0.1;
            ``mixblock.mask_loss``) and its weight's schedule ("constant", "cosine", "upstream").
        lam_margin: if min(λ_bb, 1-λ_bb) <= margin the backbone step uses plain MixUp (0.08; < 0 disables).
        lam_concat, reduction, use_scale, upsample, att_norm: Mix Block options (``lam_concat``: ImageNet).
        mask_adjust: probability of rescaling ``mask_bb`` so its per-sample own area equals λ_bb (0).
        switch_off: ViT knob (0.8 there): the probability that the momentum network judges the Mix Block's
            mix in a step (0 = always); on the other steps only the mask loss trains the Mix Block.
        ema_bn_buffers: also EMA the float buffers (BN running stats); False = OpenMixup (k keeps its own stats).
        head_ensemble: ``forward(x, head="ensemble")`` becomes the default evaluation head.
        no_repeat_perm: avoid fixed points i == perm[i] (OpenMixup ``mix_shuffle_no_repeat``; see ``draw_pairing``).
        momentum_features: "full" (default, as OpenMixup): the whole momentum encoder runs on the clean batch,
            so its BatchNorm layers after the feature stage update twice per step. "early_stop": stop at the
            feature stage (faster; same losses, gradients and parameters, but those BatchNorm running statistics
            and so the eval logits of the ``one_k`` / ``mix_k`` heads change; docs/algorithm.md#options).
        in_chans: image channels. **backbone_kwargs: passed to ``create_backbone`` (e.g. ``img_size=32`` for a ViT).
    """

    def __init__(self, backbone: str | nn.Module, num_classes: int, *, feature_stage: int | None = None,
                 alpha: float = 2.0, momentum: float = 0.999, end_momentum: float = 0.999999,
                 momentum_scope: float = 0.1, mask_loss_weight: float = 0.1, mask_loss_mode: str = "L1",
                 mask_loss_margin: float = 0.1, mask_loss_schedule: str = "constant", lam_margin: float = 0.08,
                 lam_concat: bool = False, reduction: int = 2, use_scale: bool = True, upsample: str = "nearest",
                 att_norm: str | None = None, mask_adjust: float = 0.0, switch_off: float = 0.0,
                 ema_bn_buffers: bool = False, head_ensemble: bool = False, no_repeat_perm: bool = False,
                 momentum_features: str = "full", in_chans: int = 3, **backbone_kwargs):
        super().__init__()
        _check_options(num_classes, alpha, momentum, end_momentum, momentum_features)
        mask_loss_weight_at(0, 1, mask_loss_weight, mask_loss_schedule)  # validates the schedule name
        self.backbone_q = create_backbone(backbone, in_chans=in_chans, **backbone_kwargs)
        self.feature_stage = default_feature_stage(self.backbone_q) if feature_stage is None else feature_stage
        width = self.backbone_q.num_features
        self.head_one_q = LinearHead(width, num_classes)
        self.head_mix_q = LinearHead(width, num_classes)
        self.mix_block = MixBlock(stage_channels(self.backbone_q, self.feature_stage), reduction=reduction,
                                  lam_concat=lam_concat, use_scale=use_scale, upsample=upsample, att_norm=att_norm)
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
        self.momentum_features = momentum_features
        self.backbone_name = backbone if isinstance(backbone, str) else type(backbone).__name__

    # ------------------------------------------------------------------ parameter groups
    def online_parameters(self) -> list[nn.Parameter]:
        """Parameters of the online encoder and its two heads (the trainer's main group)."""
        mods = (self.backbone_q, self.head_one_q, self.head_mix_q)
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def mix_block_parameters(self) -> list[nn.Parameter]:
        """Parameters of the Mix Block (may get their own learning-rate schedule)."""
        return [p for p in self.mix_block.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ random draws (host side)
    def draw(self, n: int, generator: torch.Generator | None = None, shared_lam: bool = False) -> StepDraws:
        """Every random draw of one step (docs/algorithm.md#one-training-step), made on the host before any
        device work: λ_mb, λ_bb, the two pairings, whether the Mix Block branch runs (``switch_off``) and
        whether ``mask_adjust`` applies. The draw order is fixed, so one generator seed gives one step.
        ``shared_lam`` (an ablation, ``StepAblation``): λ_bb = λ_mb."""
        lam_mb, lam_bb = sample_lam(self.alpha, generator), sample_lam(self.alpha, generator)
        lam_bb = lam_mb if shared_lam else lam_bb
        perm_mb = draw_pairing(n, generator, self.no_repeat_perm, shift_on_failure=True)
        perm_bb = draw_pairing(n, generator, self.no_repeat_perm, shift_on_failure=False)
        # OpenMixup forward_k: skip the Mix Block branch when rand > switch_off (cos_annealing stays 1)
        train_mb = not (self.switch_off > 0 and _uniform(generator) > self.switch_off)
        adjust = self.mask_adjust > 0 and _uniform(generator) < self.mask_adjust
        fallback = self.lam_margin >= 0 and min(lam_bb, 1 - lam_bb) <= self.lam_margin
        return StepDraws(lam_mb, lam_bb, perm_mb, perm_bb, train_mb, adjust, fallback)

    # ------------------------------------------------------------------ masks
    def feature_map(self, x: torch.Tensor, *, stop_early: bool = True) -> torch.Tensor:
        """Momentum encoder's feature map z = f_k(x) at ``feature_stage``: [N, C, h, w] (no gradient).

        ``stop_early=False`` runs the whole momentum encoder (what a training step does by default, so the
        BatchNorm layers after the feature stage see the clean batch as in OpenMixup); the map is the same."""
        _check_encoder_input(self.backbone_k, x)
        with torch.no_grad():
            z = feature_map(self.backbone_k, x, self.feature_stage, stop_early=stop_early)  # [N, C, h, w]
        _check_feature_size(z, x, self.feature_stage)
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

    # ------------------------------------------------------------------ training
    def training_step(self, x: torch.Tensor, y: torch.Tensor, step: int = 0, total_steps: int = 1, *,
                      generator: torch.Generator | None = None, check_labels: bool = True,
                      ablation: StepAblation | None = None) -> dict[str, torch.Tensor]:
        """One AutoMix iteration (docs/algorithm.md#one-training-step): ``draw``, then ``losses``.

        Call ``loss.backward()``, the optimizer, then ``momentum_update``.

        Returns a dict: ``loss`` and its terms ``loss_one_q loss_mix_q loss_mix_k loss_mask`` (all keep their
        graph, so each term's gradient can be inspected; log them with ``.item()``), ``lam_mb lam_bb`` (the
        exact draws, float64), ``mask_loss_weight``, ``fallback`` (1 if λ_bb hit the margin), ``mb_trained``,
        and for callbacks ``mask_mb`` / ``mask_bb`` [N, 2, H, W] (detached) with ``perm_mb`` / ``perm_bb``.
        ``check_labels=False`` skips the label-range check (a device read; a trainer checks its labels once).
        ``ablation``: a ``StepAblation`` (None: the step above; only this readable step knows ablations).
        """
        check_batch(x, y, self.num_classes, self.in_chans, check_labels)
        d = self.draw(x.shape[0], generator, shared_lam=ablation is not None and ablation.shared_lam)
        w_mask = mask_loss_weight_at(step, total_steps, self.mask_loss_weight, self.mask_loss_schedule)
        return {**self.losses(x, y, d, w_mask, ablation), **d.record(w_mask)}

    def losses(self, x: torch.Tensor, y: torch.Tensor, d: StepDraws, w_mask: float,
               ablation: StepAblation | None = None) -> dict[str, torch.Tensor]:
        """The four losses of one step for the draws ``d`` (docs/algorithm.md#one-training-step, steps 2-8)."""
        ab, size = ablation or StepAblation(), x.shape[-2:]
        perm_mb, perm_bb = _to_device(d.perm_mb, x.device), _to_device(d.perm_bb, x.device)
        z = self.feature_map(x, stop_early=self.momentum_features == "early_stop")  # [N, C, h, w], no grad
        mask_mb = self.mix_block(z, d.lam_mb, perm_mb, size)  # [N, 2, H, W], keeps the graph
        mask_bb = self.mix_block(z, d.lam_bb, perm_bb, size)  # [N, 2, H, W]
        mask_bb = mask_bb.detach() if ab.detach_mask_bb else mask_bb  # detached: no grad into the block
        if d.adjust:  # λ_bb as float32 scalars: Python-float division would round differently in the last bit
            lam_bb = torch.tensor([d.lam_bb, 1 - d.lam_bb], dtype=torch.float32, device=x.device)
            mask_bb = adjust_mask(mask_bb, lam_bb[0], lam_bb[1])
        if d.fallback:  # λ_bb within lam_margin of 0 or 1: plain input MixUp for the backbone
            mask_bb = torch.cat([torch.full_like(mask_bb[:, :1], d.lam_bb),
                                 torch.full_like(mask_bb[:, :1], 1 - d.lam_bb)], dim=1)
        loss_mask = mask_loss(mask_mb, d.lam_mb, self.mask_loss_mode, self.mask_loss_margin)
        loss_mix_k = x.new_zeros((), dtype=torch.float32)
        if d.train_mb:  # the frozen momentum network judges the Mix Block's mix; grad flows to x_mb only
            x_mb = mask_mix(x, mask_mb, perm_mb)  # [N, C, H, W]
            judge, head = ((self.backbone_k, self.head_mix_k) if ab.judge == "momentum"
                           else (self.backbone_q, self.head_mix_q))
            loss_mix_k = mixed_ce(head(judge(x_mb)), y, perm_mb, d.lam_mb, 1 - d.lam_mb)
        x_bb = mask_mix(x, mask_bb, perm_bb)  # [N, C, H, W]
        loss_one_q = F.cross_entropy(self.head_one_q(self.backbone_q(x)).float(), y)
        loss_mix_q = mixed_ce(self.head_mix_q(self.backbone_q(x_bb)), y, perm_bb, d.lam_bb, 1 - d.lam_bb)
        return {"loss": loss_one_q + loss_mix_q + loss_mix_k + w_mask * loss_mask,
                "loss_one_q": loss_one_q, "loss_mix_q": loss_mix_q, "loss_mix_k": loss_mix_k, "loss_mask": loss_mask,
                "mask_mb": mask_mb.detach(), "perm_mb": perm_mb, "mask_bb": mask_bb.detach(), "perm_bb": perm_bb}

    def momentum_at(self, step: int, total_steps: int) -> float:
        """Scheduled EMA momentum for ``step`` (docs/algorithm.md#momentum-schedule)."""
        return momentum_at(step, total_steps, self.momentum, self.end_momentum, self.momentum_scope)

    @torch.no_grad()
    def momentum_update(self, step: int, total_steps: int) -> float:
        """θ_k ← m·θ_k + (1 − m)·θ_q after the optimizer step (parameters; buffers with ``ema_bn_buffers``).
        Returns m."""
        m = self.momentum_at(step, total_steps)
        if self.momentum >= 1:
            return 1.0
        ema_(*ema_tensors(self), m)
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

    def as_mixer(self) -> AutoMixAugment:
        """This model's Mix Block as a frozen mixer usable with ``mix(x, y, method=...)``."""
        return AutoMixAugment(self)
