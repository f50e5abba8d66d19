"""The pieces a training run is built from: the model for a method, its optimizer groups and cosine learning
rate (docs/recipes.md#optimiser-and-learning-rates), the step as one ``forward`` (what DDP needs), evaluation of
every head (docs/evaluation.md) and the run summary. ``automix_lite.trainer.loop`` puts them together; each is usable on
its own.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..core.automix import HEADS, AutoMix
from ..core.mixing import manifold_forward, mix, mix_loss
from ..core.models import Classifier
from ..fast.step import training_step as fast_training_step
from ..fast.step import uses_fused
from .config import TrainConfig

__all__ = ["cosine_lr", "set_lr", "param_groups", "build_model", "StepModule", "head_names", "evaluate",
           "summarize", "check_compatible"]


def cosine_lr(base: float, final: float, progress: float, warmup: float = 0.0) -> float:
    """Cosine annealing from ``base`` to ``final`` (mmcv ``CosineAnnealingLrUpdaterHook``); ``progress`` in
    [0, 1]; optional linear warm-up over the first ``warmup`` fraction."""
    if warmup > 0 and progress < warmup:
        return base * (progress / warmup)
    p = (progress - warmup) / (1 - warmup) if warmup > 0 else progress
    return final + (base - final) * (1 + math.cos(math.pi * min(max(p, 0.0), 1.0))) / 2


def set_lr(optimizer, cfg: TrainConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> None:
    """Every group's learning rate at (epoch, batch): a pure function of the position, so resume needs no
    scheduler state (per epoch when ``cfg.sched_by_epoch``, as mmcv ``by_epoch``)."""
    if epoch < cfg.warmup_epochs:  # linear warm-up, per step even when the cosine is per epoch: never lr 0
        done = (epoch * steps_per_epoch + step_in_epoch + 1) / (cfg.warmup_epochs * steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * done
        return
    progress = (epoch if cfg.sched_by_epoch else epoch + step_in_epoch / steps_per_epoch) / cfg.epochs
    warmup = cfg.warmup_epochs / cfg.epochs
    for group in optimizer.param_groups:
        group["lr"] = cosine_lr(group["base_lr"], group["final_lr"], progress, warmup)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """SGD groups: AutoMix's online networks and its Mix Block (own lr / momentum, docs/recipes.md), else one group."""
    if isinstance(model, AutoMix):
        mb_momentum = cfg.momentum if cfg.mb_momentum is None else cfg.mb_momentum
        return [
            {"params": model.online_parameters(), "name": "online", "base_lr": cfg.lr, "final_lr": cfg.min_lr},
            {"params": model.mix_block_parameters(), "name": "mix_block", "momentum": mb_momentum,
             "base_lr": cfg.lr if cfg.mb_lr is None else cfg.mb_lr,
             "final_lr": cfg.min_lr if cfg.mb_min_lr is None else cfg.mb_min_lr},
        ]
    return [{"params": [p for p in model.parameters() if p.requires_grad], "name": "model",
             "base_lr": cfg.lr, "final_lr": cfg.min_lr}]


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    """``AutoMix`` for method 'automix', else a ``Classifier`` (backbone + one linear head)."""
    if cfg.method == "automix":
        return AutoMix(cfg.model, num_classes, feature_stage=cfg.feature_stage, alpha=cfg.alpha,
                       momentum=cfg.ema_momentum, end_momentum=cfg.ema_end_momentum,
                       momentum_scope=cfg.ema_scope_start, mask_loss_weight=cfg.mask_loss_weight,
                       mask_loss_mode=cfg.mask_loss_mode, mask_loss_margin=cfg.mask_loss_margin,
                       mask_loss_schedule=cfg.mask_loss_schedule, lam_margin=cfg.lam_margin,
                       lam_concat=cfg.lam_concat, reduction=cfg.reduction, upsample=cfg.upsample,
                       att_norm=cfg.att_norm, mask_adjust=cfg.mask_adjust, switch_off=cfg.switch_off,
                       ema_bn_buffers=cfg.ema_bn_buffers, in_chans=in_chans,
                       use_scale=cfg.use_scale, head_ensemble=cfg.head_ensemble, no_repeat_perm=cfg.no_repeat_perm,
                       momentum_features=cfg.momentum_features)
    return Classifier(cfg.model, num_classes, in_chans=in_chans)


class StepModule(nn.Module):
    """Wraps a model so one training step's forward is a ``forward`` call (what DDP needs to sync gradients).
    Returns ``(losses, mask, perm)``: the scalar losses (``loss`` is the one to minimise), the pixel mask and
    the permutation of the batch's mix (None for vanilla).

    ``check_labels``: range-check each batch's labels (a read of the device); the trainer turns it off once it
    has checked the whole dataset's labels (``run.check_labels``). ``online_pass``: what the fast-path check
    chose (``fastpaths.choose_online_pass``; default ``cfg.online_pass``)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, check_labels: bool = True, online_pass: str | None = None):
        super().__init__()
        self.model, self.cfg, self.check_labels = model, cfg, check_labels
        self.online_pass = cfg.online_pass if online_pass is None else online_pass  # after the fast-path check

    def forward(self, x, y, step: int, total_steps: int, generator: torch.Generator):
        check = self.check_labels
        if isinstance(self.model, AutoMix):
            if uses_fused(self.online_pass, x.device):  # the fused online pass (fast.step), same draws
                out = fast_training_step(self.model, x, y, step, total_steps, generator=generator,
                                         check_labels=check, online_pass=self.online_pass)
            else:  # the readable step of core.automix
                out = self.model.training_step(x, y, step, total_steps, generator=generator, check_labels=check)
            return out, out["mask_mb"], out["perm_mb"]
        if self.cfg.method == "vanilla":  # cross_entropy itself rejects out-of-range labels
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.smoothing)
            return {"loss": loss}, None, None
        mixed = mix(x, y, self.cfg.method, alpha=self.cfg.alpha, generator=generator, check_labels=check)
        if self.cfg.method == "manifoldmix":
            logits = manifold_forward(self.model, x, mixed)
        else:
            logits = self.model(mixed.images)
        return {"loss": mix_loss(logits, mixed, self.cfg.smoothing, check_labels=check)}, mixed.mask, mixed.perm


def head_names(model: nn.Module) -> tuple[str, ...]:
    return HEADS if isinstance(model, AutoMix) else ("top1",)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp_dtype=None, distributed: bool = False,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 (%) of every head on ``loader`` (all ranks' counts summed under DDP); one host read at the end."""
    was_training = model.training
    model.eval()
    names = head_names(model)
    correct = torch.zeros(len(names), dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outs = model.forward_all(x) if isinstance(model, AutoMix) else {"top1": model(x)}
        for i, name in enumerate(names):
            correct[i] += (outs[name].argmax(1) == y).sum()
        total += y.numel()
    if distributed:
        dist.all_reduce(correct)
        dist.all_reduce(total)
    model.train(was_training)
    return {name: float(100.0 * correct[i] / total.clamp_min(1)) for i, name in enumerate(names)}


def _median_last(history: list[dict], key: str, k: int) -> float | None:
    vals = [h["val"][key] for h in history if key in h.get("val", {})][-k:]
    return float(statistics.median(vals)) if vals else None


def summarize(history: list[dict], heads: Iterable[str], k: int) -> dict[str, Any]:
    """Final per-head top-1, per-head median of the last k epochs, and the best head by that median
    (OpenMixup's AutoMix summary: the max over heads of the medians, docs/evaluation.md)."""
    heads = list(heads)
    final = dict(history[-1]["val"]) if history else {}
    medians = {h: _median_last(history, h, k) for h in heads}
    valid = {h: m for h, m in medians.items() if m is not None}
    best = max(valid, key=valid.get) if valid else None
    return {"final_top1": final, "median_last_k": medians, "k": k, "best_head": best,
            "best_median_top1": valid.get(best) if best else None}


def check_compatible(ckpt: dict, cfg: TrainConfig, num_classes: int) -> None:
    """Refuse to resume a checkpoint written for another model / method / dataset, naming each mismatch."""
    old = ckpt.get("config", {})
    problems = [f"{k}: checkpoint {old.get(k)!r} vs config {getattr(cfg, k)!r}"
                for k in ("model", "method", "feature_stage", "lam_concat") if k in old and old[k] != getattr(cfg, k)]
    if ckpt.get("num_classes") not in (None, num_classes):
        problems.append(f"num_classes: checkpoint {ckpt['num_classes']} vs data {num_classes}")
    if problems:
        raise ValueError("the checkpoint does not match this run:\n  " + "\n  ".join(problems)
                         + "\nResume with the same model/method/dataset, or start a new run in another folder.")
