"""One run's state and how it is set up, saved and restored: ``Run`` (what ``setup_run`` builds, the position,
the counters), ``setup_run`` (data, model, optimizer, AMP, resume), ``restore`` / ``snapshot`` / ``save``.

``trainer.loop`` drives a ``Run`` through its epochs.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..core.automix import AutoMix
from ..core.checks import check_label_range
from ..fast.runtime import read_scalars, resolve_amp, seed_everything
from .checkpoint import (
    environment_info,
    find_resume_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_aside_previous_run,
    set_rng_state,
    versions_info,
)
from .config import TrainConfig
from .data import build_loaders, per_rank_batch_size
from .engine import StepModule, build_model, check_compatible, param_groups
from .fastpaths import choose_online_pass

__all__ = ["Run", "NonFiniteLossError", "setup_run", "make_graphed_step", "check_labels", "restore", "snapshot",
           "save"]


class NonFiniteLossError(RuntimeError):
    """Training stopped after too many consecutive non-finite losses."""


@dataclass
class Run:
    """Everything one run holds: what ``setup_run`` built, the position (epoch, batch, step), the reliability
    counters, and the running sums of the current epoch (device tensors, read at the epoch's end)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    out: Path
    train_loader: Any
    val_loader: Any
    sampler: Any
    info: Any
    num_classes: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    generator: torch.Generator  # λ / permutation draws, one stream per rank
    steps_per_epoch: int = 0  # a full epoch's batches, fixed at set-up (a resumed sampler's length is shorter)
    runner: nn.Module | None = None  # the StepModule, DDP-wrapped under torchrun
    graphed: Any = None  # cfg.cuda_graph: a graphed.GraphedStep (CUDA graph on CUDA, its eager twin elsewhere)
    labels_checked: bool = False
    epoch: int = 0
    batch: int = 0  # position inside the epoch
    step: int = 0
    history: list[dict] = field(default_factory=list)
    nonfinite_total: int = 0
    consecutive: int = 0
    partial: dict | None = None  # the running sums of an epoch interrupted mid-way (from a checkpoint)
    sums: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    nonfinite_epoch: int = 0
    t_epoch: float = 0.0
    t_before: float = 0.0
    loader_state: torch.Tensor | None = None
    ema_momentum: float | None = None  # AutoMix: the momentum of the last EMA update
    torn: bool = False  # a KeyboardInterrupt now would leave a half-updated model: write no checkpoint
    buffers: list[torch.Tensor] = field(default_factory=list)  # BN statistics, restored when a step is skipped
    saved_buffers: list[torch.Tensor] = field(default_factory=list)
    graph_bad: torch.Tensor | None = None  # cuda_graph: a non-finite loss since the last host check (device flag)
    guard: dict | None = None  # the non-finite guard's device counters and copies (loop._guarded_update)
    fast_paths: dict[str, str] = field(default_factory=dict)  # name -> "on ..." / "off: why" (metrics.json)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    @property
    def loader_gen(self) -> torch.Generator | None:
        return self.train_loader.generator  # draws the workers' base seed when an epoch's iterator starts


# ------------------------------------------------------------------ setup
def setup_run(cfg: TrainConfig, device: torch.device, rank: int, world_size: int, out: Path) -> Run:
    """Data, model, optimizer, AMP and generators, then the resume state; identical weights on every rank."""
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    train_loader, val_loader, sampler, info = build_loaders(cfg, distributed=world_size > 1, rank=rank,
                                                            world_size=world_size, device=device)
    num_classes = cfg.num_classes or info.num_classes
    model = build_model(cfg, num_classes, info.in_chans).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    amp_dtype = resolve_amp(cfg.amp, device)
    run = Run(cfg=cfg, device=device, rank=rank, world_size=world_size, out=out, train_loader=train_loader,
              val_loader=val_loader, sampler=sampler, info=info, num_classes=num_classes, model=model,
              optimizer=optimizer, amp_dtype=amp_dtype, steps_per_epoch=len(train_loader),
              scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
              generator=torch.Generator().manual_seed(cfg.seed * 1000 + rank))
    run.labels_checked = all([check_labels(train_loader.dataset, num_classes, "train"),
                              check_labels(val_loader.dataset, num_classes, "validation")])
    resume_path = find_resume_checkpoint(cfg.resume) if cfg.resume else None
    if resume_path is not None:
        restore(run, resume_path)
    if rank == 0:
        _start_run_folder(run, resume_path)
    online_pass = _choose_fast_paths(run)
    run.runner = StepModule(model, cfg, check_labels=not run.labels_checked, online_pass=online_pass)
    if run.distributed:
        run.runner = nn.parallel.DistributedDataParallel(
            run.runner, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.switch_off > 0 or cfg.method == "manifoldmix")
    if cfg.compile:
        for b in [model.backbone_q, model.backbone_k] if isinstance(model, AutoMix) else [model.backbone]:
            b.compile()
    run.buffers = list(model.buffers())
    run.saved_buffers = [b.clone() for b in run.buffers]
    run.fast_paths["cuda_graph"] = "off: cuda_graph=False"
    if cfg.cuda_graph:
        run.graphed, run.fast_paths["cuda_graph"] = make_graphed_step(run, online_pass)
    if rank == 0:
        print("[automix_lite] fast paths: " + "; ".join(f"{k} {v}" for k, v in run.fast_paths.items()), flush=True)
    return run


def _choose_fast_paths(run: Run) -> str:
    """Record what the loaders chose and check the fused online pass ("auto" on CUDA); returns the online pass."""
    info, cfg = run.info, run.cfg
    run.fast_paths["data_on_device"] = info.data_on_device
    run.fast_paths["amp"] = str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off (float32)"
    batch = per_rank_batch_size(cfg.batch_size, run.world_size)
    online_pass, run.fast_paths["online_pass"] = choose_online_pass(
        cfg.online_pass, run.model, run.device, (info.in_chans, info.img_size, info.img_size), batch, run.amp_dtype)
    return online_pass


def make_graphed_step(run: Run, online_pass: str = "separate"):
    """``cfg.cuda_graph``: forward, backward, optimizer step and EMA of AutoMix as one CUDA graph on CUDA (its
    eager twin, the same code and numbers, on other devices); ``(GraphedStep or None, fast_paths entry)``.

    Refuses what the graph cannot do. Where amp='auto' resolved to fp16 (no bf16 tensor cores: a T4), the graph is
    skipped with a warning: it cannot run fp16 (GradScaler), and fp16 eager is faster there than an fp32 graph."""
    from ..fast.graphed import GraphedStep

    if run.distributed:
        raise ValueError("cuda_graph=True runs on one GPU (no DDP under torchrun); set cuda_graph=False.")
    if run.amp_dtype == torch.float16:
        why = ("amp='auto' resolved to fp16 on this GPU (no bf16 tensor cores); the graph runs bf16 or fp32 only, "
               "and fp16 eager is faster here than an fp32 graph")
        warnings.warn(f"cuda_graph=True skipped: {why}. Training runs the eager fp16 step (same algorithm); "
                      "amp='off' forces an fp32 graph.", RuntimeWarning, stacklevel=3)
        return None, f"off: {why}"
    graphed = GraphedStep(run.model, run.optimizer, total_steps=run.total_steps, method=run.cfg.method,
                          alpha=run.cfg.alpha, smoothing=run.cfg.smoothing, amp_dtype=run.amp_dtype,
                          online_pass=online_pass)
    return graphed, "on (a CUDA graph)" if graphed.use_graph else "on (its eager twin: no CUDA device)"


def check_labels(dataset, num_classes: int, split: str) -> bool:
    """Range-check a dataset's labels once (``dataset.targets``), so no batch needs a check that reads the
    device. Returns False when the dataset exposes no ``targets`` (then the per-batch checks stay on)."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return False
    check_label_range(torch.as_tensor(targets), num_classes, f"{split} labels",
                      "; set num_classes to the dataset's number of classes (or None = from the data).")
    return True


def restore(run: Run, path: Path) -> None:
    """Load weights, optimizer, scaler, position, history, counters and every RNG state from a checkpoint."""
    cfg, rank = run.cfg, run.rank
    ckpt = load_checkpoint(path, cfg.resume)
    check_compatible(ckpt, cfg, run.num_classes)
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"the checkpoint {str(path)!r} does not fit this model/optimizer: "
                         f"{str(e).splitlines()[0]}. Resume with the config it was written with (the CLI "
                         "reads it from the checkpoint when --preset is omitted).") from e
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.epoch, run.batch, run.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
    run.history, run.nonfinite_total = list(ckpt.get("history", [])), ckpt.get("nonfinite_total", 0)
    run.consecutive, run.partial = ckpt.get("consecutive_nonfinite", 0), ckpt.get("partial_epoch")
    set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"], run.generator)
    if ckpt.get("loader_generator") is not None and run.loader_gen is not None:
        run.loader_gen.set_state(ckpt["loader_generator"])
    if rank == 0:
        print(f"[automix_lite] resumed from {path} at epoch {run.epoch} batch {run.batch} step {run.step}")


def _start_run_folder(run: Run, resume_path: Path | None) -> None:
    """A new run sets an earlier run's files aside; ``metrics.jsonl`` always equals the history this run continues
    (a fallback to an older checkpoint drops the lines of the epochs after it)."""
    if resume_path is None or resume_path.parent.resolve() != run.out.resolve():
        set_aside_previous_run(run.out)
    with open(run.out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in run.history)


def snapshot(run: Run) -> dict:
    """Everything an exact resume needs at the current position (a collective under DDP: every rank calls it)."""
    rng = rng_state(run.generator)
    if run.distributed:
        gathered = [None] * run.world_size
        dist.all_gather_object(gathered, rng)
        rng = gathered
    mid = 0 < run.batch
    loader_gen = run.loader_gen
    return {"format": 2, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            # the learning rate is a pure function of (epoch, batch): cosine_lr, no scheduler object
            "scheduler": {"kind": run.cfg.sched, "by_epoch": run.cfg.sched_by_epoch,
                          "lr": {g["name"]: g["lr"] for g in run.optimizer.param_groups}},
            "epoch": run.epoch, "batch_in_epoch": run.batch, "step": run.step, "history": run.history, "rng": rng,
            "loader_generator": None if loader_gen is None else (run.loader_state if mid else loader_gen.get_state()),
            "partial_epoch": {"sums": read_scalars(run.sums), "count": run.count, "nonfinite": run.nonfinite_epoch,
                              "time": run.t_before + time.time() - run.t_epoch} if mid else None,
            "nonfinite_total": run.nonfinite_total, "consecutive_nonfinite": run.consecutive,
            "config": run.cfg.to_dict(), "num_classes": run.num_classes, "in_chans": run.info.in_chans,
            "model_class": type(run.model).__name__,
            "versions": versions_info(), "environment": environment_info(run.device, run.world_size)}


def save(run: Run, tag: str) -> None:
    snap = snapshot(run)  # collective under DDP
    if run.rank == 0:
        save_checkpoint(snap, run.out, tag=tag, keep=run.cfg.keep_checkpoints)
