"""One ``train(cfg)`` for a notebook cell, the CLI and ``torchrun``.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) and every hand-crafted mixer share this loop:
SGD with the recipes' cosine schedules (per epoch, the Mix Block optionally on its own cosine:
docs/recipes.md#optimiser-and-learning-rates), AMP on GPUs (bf16 on compute capability >= 8, else fp16 with a
GradScaler; off on CPU), evaluation of every head each epoch (AutoMix has four, docs/evaluation.md),
``metrics.jsonl`` + ``metrics.json`` with the median top-1 of the last k epochs, atomic checkpoints every epoch
(last K kept) and on interruption, exact resume, and DDP under ``torchrun`` (gloo on CPU, nccl on GPU; detected
from ``RANK``/``WORLD_SIZE``).

Reliability: a non-finite loss skips the step entirely (no optimizer or EMA update, the BN statistics of that
forward pass restored) and is counted; ``max_nonfinite`` in a row stop the run with ``NonFiniteLossError`` while
the last good checkpoint stays intact. SIGTERM / a first Ctrl-C finish the current step, write a resumable
checkpoint (mid-epoch position, the epoch's running averages, every RNG state, the loader generator) and raise
``KeyboardInterrupt``; a second Ctrl-C stops at once without writing a possibly torn state. ``resume`` then
reproduces the uninterrupted run's per-step losses on CPU with ``workers=0`` (with workers > 0 the per-worker
augmentation RNG is not checkpointed, so a mid-epoch resume is statistically, not bitwise, the same). A new run
(no resume) in a folder holding an earlier run moves that run's files to ``previous_run/`` first.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .automix import HEADS, AutoMix
from .checkpoint import (atomic_json, check_out_dir, environment_info, find_resume_checkpoint, load_checkpoint,
                         rng_state, save_checkpoint, set_aside_previous_run, set_rng_state, versions_info)
from .config import TrainConfig
from .data import build_loaders, denormalize
from .mixing import manifold_forward, mix, mix_images, mix_loss
from .models import Classifier

__all__ = ["train", "TrainResult", "TrainState", "Callback", "NonFiniteLossError", "build_model",
           "cosine_lr", "evaluate", "resolve_amp"]


class NonFiniteLossError(RuntimeError):
    """Training stopped after too many consecutive non-finite losses."""


@dataclass
class TrainState:
    """What callbacks see. ``mask`` / ``images`` hold the latest training batch's mask and inputs."""

    cfg: TrainConfig
    model: nn.Module
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    images: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    perm: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


class Callback:
    """Base class: override ``on_step_end`` and/or ``on_epoch_end`` (both receive a ``TrainState``).
    Plain objects with either method also work."""

    def on_step_end(self, state: TrainState) -> None:  # pragma: no cover - interface
        pass

    def on_epoch_end(self, state: TrainState) -> None:  # pragma: no cover - interface
        pass


@dataclass
class TrainResult:
    """Returned by ``train``: the trained model (unwrapped), the metrics dict and the run folder."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    out: Path
    info: Any = None


# ------------------------------------------------------------------ pure helpers
def cosine_lr(base: float, final: float, progress: float, warmup: float = 0.0) -> float:
    """Cosine annealing from ``base`` to ``final`` (mmcv ``CosineAnnealingLrUpdaterHook``); ``progress`` in
    [0, 1]; optional linear warm-up over the first ``warmup`` fraction."""
    if warmup > 0 and progress < warmup:
        return base * (progress / warmup)
    p = (progress - warmup) / (1 - warmup) if warmup > 0 else progress
    return final + (base - final) * (1 + math.cos(math.pi * min(max(p, 0.0), 1.0))) / 2


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: None on CPU or with ``amp='off'``; 'auto' = bf16 on compute capability >= 8, else fp16."""
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    """``AutoMix`` for method 'automix', else a ``Classifier`` (backbone + one linear head)."""
    if cfg.method == "automix":
        return AutoMix(cfg.model, num_classes, feature_stage=cfg.feature_stage, alpha=cfg.alpha,
                       momentum=cfg.ema_momentum, end_momentum=cfg.ema_end_momentum,
                       momentum_scope=cfg.ema_scope_start, mask_loss_weight=cfg.mask_loss_weight,
                       mask_loss_mode=cfg.mask_loss_mode, mask_loss_margin=cfg.mask_loss_margin,
                       mask_loss_schedule=cfg.mask_loss_schedule, lam_margin=cfg.lam_margin,
                       lam_concat=cfg.lam_concat, reduction=cfg.reduction, upsample=cfg.upsample,
                       mask_adjust=cfg.mask_adjust, switch_off=cfg.switch_off,
                       ema_bn_buffers=cfg.ema_bn_buffers, in_chans=in_chans)
    return Classifier(cfg.model, num_classes, in_chans=in_chans)


def head_names(model: nn.Module) -> tuple[str, ...]:
    return HEADS if isinstance(model, AutoMix) else ("top1",)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp_dtype=None, distributed: bool = False,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 (%) of every head on ``loader`` (all ranks' counts summed under DDP)."""
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


class _StepModule(nn.Module):
    """Wraps a model so one training step is a ``forward`` call (what DDP needs to sync gradients)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, x, y, step: int, total_steps: int, generator: torch.Generator):
        if isinstance(self.model, AutoMix):
            out = self.model.training_step(x, y, step, total_steps, generator=generator)
            return out, out["mask_mb"], out["perm_mb"]
        if self.cfg.method == "vanilla":
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.smoothing)
            return {"loss": loss}, None, None
        mixed = mix(x, y, self.cfg.method, alpha=self.cfg.alpha, generator=generator)
        if self.cfg.method == "manifoldmix":
            logits = manifold_forward(self.model, x, mixed)
        else:
            logits = self.model(mixed.images)
        return {"loss": mix_loss(logits, mixed, self.cfg.smoothing)}, mixed.mask, mixed.perm


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
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


def _set_lr(optimizer, cfg: TrainConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> None:
    progress = (epoch if cfg.sched_by_epoch else epoch + step_in_epoch / steps_per_epoch) / cfg.epochs
    warmup = cfg.warmup_epochs / cfg.epochs
    for group in optimizer.param_groups:
        group["lr"] = cosine_lr(group["base_lr"], group["final_lr"], progress, warmup)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class _Interrupt:
    """Turns SIGTERM and the first Ctrl-C (SIGINT) into a flag checked between steps, so the step in flight
    finishes and the checkpoint is consistent; a second Ctrl-C raises ``KeyboardInterrupt`` at once."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading_main():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if signum == signal.SIGINT:
            print("\n[automix_lite] interrupt: finishing the current step, then writing a resumable checkpoint "
                  "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _call(callbacks, name: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(state)


# ------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train ``cfg.method`` on ``cfg.dataset``; returns a ``TrainResult``.

    Writes to ``cfg.out``: ``metrics.jsonl`` (one line per epoch), ``metrics.json`` (history, final top-1 of
    every head, medians of the last k epochs, best head, environment), ``checkpoint.pt`` (+ the last
    ``keep_checkpoints`` epoch files), and on rank 0 ``curves.png`` and, for AutoMix, ``masks.png``.
    A new run (``resume=None``) in a folder holding an earlier run moves that run's files to
    ``out/previous_run/`` first, so calling ``train`` twice (a re-run notebook cell) starts a clean history.

    Args:
        cfg: a ``TrainConfig`` (e.g. ``TrainConfig.preset("quick", epochs=2)``).
        callbacks: objects with ``on_step_end(state)`` and/or ``on_epoch_end(state)``.

    Raises:
        NonFiniteLossError: ``cfg.max_nonfinite`` non-finite losses in a row (checkpoints left as they were).
        KeyboardInterrupt: after SIGTERM / Ctrl-C, once a resumable ``checkpoint-interrupt-*.pt`` is written.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train() expects a TrainConfig, got {type(cfg).__name__}; use TrainConfig.preset(...)")
    cfg.validate()
    callbacks = list(callbacks)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world_size > 1
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    own_group = False
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own_group = True
    out = Path(cfg.out)
    if rank == 0:
        check_out_dir(out)
    try:
        return _train(cfg, callbacks, device, rank, world_size, distributed, out)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg, callbacks, device, rank, world_size, distributed, out: Path) -> TrainResult:
    from tqdm.auto import tqdm

    _seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    train_loader, val_loader, sampler, info = build_loaders(cfg, distributed=distributed, rank=rank,
                                                            world_size=world_size)
    num_classes = cfg.num_classes or info.num_classes
    model = build_model(cfg, num_classes, info.in_chans).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = _param_groups(model, cfg)
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)  # λ / permutation draws, per rank
    loader_gen = train_loader.generator  # draws the workers' base seed when an epoch's iterator starts
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    history: list[dict] = []
    epoch, start_batch, step, nonfinite_total, consecutive = 0, 0, 0, 0, 0
    partial: dict | None = None  # running sums of an epoch interrupted mid-way

    resume_path = find_resume_checkpoint(cfg.resume) if cfg.resume else None
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, cfg.resume)
        _check_compatible(ckpt, cfg, num_classes)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"the checkpoint {str(resume_path)!r} does not fit this model/optimizer: "
                             f"{str(e).splitlines()[0]}. Resume with the config it was written with (the CLI "
                             "reads it from the checkpoint when --preset is omitted).") from e
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        epoch, start_batch, step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        history, nonfinite_total = list(ckpt.get("history", [])), ckpt.get("nonfinite_total", 0)
        consecutive, partial = ckpt.get("consecutive_nonfinite", 0), ckpt.get("partial_epoch")
        set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"], generator)
        if ckpt.get("loader_generator") is not None and loader_gen is not None:
            loader_gen.set_state(ckpt["loader_generator"])
        if rank == 0:
            print(f"[automix_lite] resumed from {resume_path} at epoch {epoch} batch {start_batch} step {step}")
    if rank == 0:
        resume_dir = None if resume_path is None else resume_path.parent
        if resume_dir is None or resume_dir.resolve() != out.resolve():
            set_aside_previous_run(out)
        # metrics.jsonl always equals the history this run continues (a fallback to an older checkpoint
        # drops the lines of the epochs after it)
        with open(out / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in history)

    step_module = _StepModule(model, cfg)
    runner = step_module
    if distributed:
        runner = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.switch_off > 0 or cfg.method == "manifoldmix")
    if cfg.compile:
        backbones = [model.backbone_q, model.backbone_k] if isinstance(model, AutoMix) else [model.backbone]
        for b in backbones:
            b.compile()
    state = TrainState(cfg=cfg, model=model, total_steps=total_steps, history=history)
    show = rank == 0 and sys.stderr.isatty()
    t_start = time.time()
    buffers = list(model.buffers())  # BN statistics: restored when a step is skipped
    saved_buffers = [b.clone() for b in buffers]
    sums: dict[str, float] = {}
    count = nonfinite_epoch = 0
    t_epoch, t_before = time.time(), 0.0
    loader_state = None

    def snapshot(ep: int, batch_in_epoch: int) -> dict:
        rng = rng_state(generator)
        if distributed:
            gathered = [None] * world_size
            dist.all_gather_object(gathered, rng)
            rng = gathered
        mid = 0 < batch_in_epoch
        return {"format": 2, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                # the learning rate is a pure function of (epoch, batch): cosine_lr, no scheduler object
                "scheduler": {"kind": cfg.sched, "by_epoch": cfg.sched_by_epoch,
                              "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}},
                "epoch": ep, "batch_in_epoch": batch_in_epoch, "step": step, "history": history, "rng": rng,
                "loader_generator": None if loader_gen is None else (loader_state if mid else loader_gen.get_state()),
                "partial_epoch": {"sums": dict(sums), "count": count, "nonfinite": nonfinite_epoch,
                                  "time": t_before + time.time() - t_epoch} if mid else None,
                "nonfinite_total": nonfinite_total, "consecutive_nonfinite": consecutive,
                "config": cfg.to_dict(), "num_classes": num_classes, "model_class": type(model).__name__,
                "versions": versions_info(), "environment": environment_info(device, world_size)}

    def save(ep: int, batch_in_epoch: int, tag: str) -> None:
        snap = snapshot(ep, batch_in_epoch)  # collective under DDP: every rank calls it
        if rank == 0:
            save_checkpoint(snap, out, tag=tag, keep=cfg.keep_checkpoints)

    model.train()
    batch_idx, torn = start_batch, False
    with _Interrupt() as interrupt:
        try:
            while epoch < cfg.epochs:
                if sampler is not None:
                    sampler.set_epoch(epoch)
                    sampler.set_start(start_batch * train_loader.batch_size)
                sums, count, nonfinite_epoch, t_epoch, t_before = {}, 0, 0, time.time(), 0.0
                if partial:  # resumed mid-epoch: continue the interrupted epoch's averages
                    sums, count = dict(partial["sums"]), partial["count"]
                    nonfinite_epoch, t_before, partial = partial["nonfinite"], partial["time"], None
                if loader_gen is not None:
                    loader_state = loader_gen.get_state()  # before this epoch's iterator draws from it
                bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           disable=not show, leave=False, dynamic_ncols=True)
                batches = iter(train_loader)
                batch_idx = start_batch
                while True:
                    torn = True  # a KeyboardInterrupt from here to the end of the step leaves torn state
                    try:
                        x, y = next(batches)
                    except StopIteration:
                        break
                    _set_lr(optimizer, cfg, epoch, batch_idx, steps_per_epoch)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                        enabled=amp_dtype is not None):
                        losses, mask, perm = runner(x, y, step, total_steps, generator)
                    loss = losses["loss"]
                    optimizer.zero_grad(set_to_none=True)
                    finite = bool(torch.isfinite(loss.detach()))
                    stop = False
                    if distributed:  # every rank must agree to skip and to stop, or DDP deadlocks
                        flags = torch.tensor([float(not finite), float(interrupt.requested)], device=device)
                        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                        finite, stop = not bool(flags[0] > 0), bool(flags[1] > 0)
                    if finite:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        if isinstance(model, AutoMix):
                            state.metrics["ema_momentum"] = model.momentum_update(step, total_steps)
                        consecutive = 0
                        if buffers:
                            torch._foreach_copy_(saved_buffers, buffers)
                    else:
                        # skip the step entirely: no update, and the BN statistics of this forward undone
                        if buffers:
                            torch._foreach_copy_(buffers, saved_buffers)
                        consecutive += 1
                        nonfinite_epoch += 1
                        nonfinite_total += 1
                        if rank == 0:
                            print(f"[automix_lite] non-finite loss at step {step}: optimizer step skipped "
                                  f"({consecutive} in a row, limit {cfg.max_nonfinite})", file=sys.stderr)
                        if consecutive >= max(cfg.max_nonfinite, 1):
                            torn = False
                            raise NonFiniteLossError(
                                f"{consecutive} consecutive non-finite losses (last at step {step}); training "
                                f"stopped. The last good checkpoint in {str(out)!r} is intact: lower lr, use "
                                "amp='off' or check the data, then resume from it.")
                    step += 1
                    batch_idx += 1
                    logged = {k: float(v.detach()) for k, v in losses.items()
                              if torch.is_tensor(v) and v.ndim == 0}
                    if finite:
                        for k, v in logged.items():
                            sums[k] = sums.get(k, 0.0) + v
                        count += 1
                    torn = False
                    state.epoch, state.step, state.losses = epoch, step, logged
                    state.images, state.mask, state.perm = x.detach(), mask, perm
                    bar.update(1)
                    if show and step % cfg.log_every == 0:
                        bar.set_postfix(loss=f"{logged.get('loss', float('nan')):.3f}")
                    _call(callbacks, "on_step_end", state)
                    if stop or (interrupt.requested and not distributed):
                        raise KeyboardInterrupt("SIGTERM or Ctrl-C")
                bar.close()
                torn = True  # until this epoch's checkpoint is written
                start_batch = 0
                epoch += 1
                record = {"epoch": epoch, "step": step, "time": t_before + time.time() - t_epoch,
                          "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                          "train": {k: v / max(count, 1) for k, v in sums.items()},
                          "nonfinite": nonfinite_epoch}
                if isinstance(model, AutoMix):
                    record["ema_momentum"] = model.momentum_at(step, total_steps)
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                    record["val"] = evaluate(model, val_loader, device, amp_dtype, distributed,
                                             cfg.channels_last)
                history.append(record)
                if rank == 0:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    if "val" in record:
                        vals = " ".join(f"{k}={v:.2f}" for k, v in record["val"].items())
                        print(f"[automix_lite] epoch {epoch}/{cfg.epochs} loss={record['train'].get('loss', 0):.4f}"
                              f" val top-1: {vals} ({record['time']:.1f}s)", flush=True)
                save(epoch, 0, tag=f"epoch{epoch:04d}")
                batch_idx, torn = 0, False
                state.metrics.update(record)
                _call(callbacks, "on_epoch_end", state)
        except KeyboardInterrupt:
            if torn:  # a second Ctrl-C inside a step: the model may be half-updated, do not save it
                if rank == 0:
                    print(f"[automix_lite] stopped inside step {step}; no checkpoint written for it. Resume from "
                          f"the last epoch checkpoint: resume={str(out)!r}.", file=sys.stderr, flush=True)
                raise
            # a resumable checkpoint at the current position (mid-epoch), every RNG state included
            save(epoch, batch_idx, tag=f"interrupt-step{step:07d}")
            if rank == 0:
                print(f"[automix_lite] interrupted at step {step}; resumable checkpoint written to {out}. "
                      f"Resume with resume={str(out)!r} (CLI: --resume {out}).", file=sys.stderr, flush=True)
            raise
    metrics = {"config": cfg.to_dict(), "history": history, "nonfinite_total": nonfinite_total,
               "wall_time_s": time.time() - t_start, "environment": environment_info(device, world_size),
               "method": cfg.method, "num_classes": num_classes,
               **summarize(history, head_names(model), cfg.median_last_k)}
    if rank == 0:
        atomic_json(out / "metrics.json", metrics)
        _figures(model, cfg, val_loader, info, history, out, device, generator)
    return TrainResult(model=model, metrics=metrics, history=history, out=out, info=info)


def _check_compatible(ckpt: dict, cfg: TrainConfig, num_classes: int) -> None:
    old = ckpt.get("config", {})
    problems = [f"{k}: checkpoint {old.get(k)!r} vs config {getattr(cfg, k)!r}"
                for k in ("model", "method", "feature_stage", "lam_concat") if k in old and old[k] != getattr(cfg, k)]
    if ckpt.get("num_classes") not in (None, num_classes):
        problems.append(f"num_classes: checkpoint {ckpt['num_classes']} vs data {num_classes}")
    if problems:
        raise ValueError("the checkpoint does not match this run:\n  " + "\n  ".join(problems)
                         + "\nResume with the same model/method/dataset, or start a new run in another folder.")


def _figures(model, cfg, val_loader, info, history, out: Path, device, generator) -> None:
    """curves.png always; masks.png for every method with a pixel mask: real validation images, their partners,
    the masks (AutoMix: the trained Mix Block at λ = 0.5, partner = the next image) and the mixes."""
    import matplotlib.pyplot as plt

    from . import viz

    plt.close(viz.plot_curves(history, path=out / "curves.png"))
    x, y = next(iter(val_loader))
    x, y = x[:8].to(device), y[:8].to(device)
    if x.shape[0] < 2 or cfg.method in ("vanilla", "manifoldmix"):  # nothing mixed in pixel space
        return
    if isinstance(model, AutoMix):
        perm = torch.roll(torch.arange(x.shape[0], device=device), 1)
        own = model.generate_mask(x, 0.5, perm)[:, :1]  # [n, 1, H, W], eval mode inside
        title = "AutoMix"
    else:
        mixed = mix(x, y, cfg.method, alpha=cfg.alpha, generator=torch.Generator().manual_seed(cfg.seed))
        own, perm = mixed.mask, mixed.perm  # [n, 1, H, W], [n]
        title = cfg.method
    images = mix_images(x, own, perm)  # [n, C, H, W]
    plt.close(viz.plot_automix_masks(denormalize(x.cpu(), info), own.cpu(), denormalize(images.cpu(), info),
                                     perm=perm.cpu(), path=out / "masks.png", title=title))
