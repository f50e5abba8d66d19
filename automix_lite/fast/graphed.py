"""The whole training step — forward, backward, optimizer step, EMA update — as one CUDA graph.

At CIFAR sizes a GPU spends an AutoMix step launching ~1,300 small kernels, not computing. A CUDA graph
records the kernels of one step once and replays them with a single launch. Everything that changes from
step to step is a tensor the graph reads: the batch is copied into static input buffers, and the random draws
(λ, pairings, coin flips; see docs/algorithm.md#one-training-step) are made on the host from the run's CPU
generator, exactly as the eager step draws them, and copied into static device buffers. The step's device
code is ``fast.step.step_losses``, which has no host read and no branch on data (the λ-margin fallback and
``mask_adjust`` are ``torch.where`` selections), plus an EMA whose momentum is a device scalar.

API (the trainer's ``TrainConfig.cuda_graph`` wires it)::

    step = GraphedStep(model, optimizer, total_steps=T, method="automix", amp_dtype=torch.bfloat16)
    out = step(x, y, i, generator)      # one full step: forward, backward, optimizer.step(), EMA (AutoMix)
    out["loss"]                          # device tensor, overwritten by the next call (clone to keep)

* ``model``: an ``AutoMix`` (``method="automix"``) or a classifier (``method`` = "vanilla" or a pixel mixer
  name from ``MIXERS``; the mixing itself runs eagerly before the graph, the network step is captured).
* ``optimizer``: any ``torch.optim`` optimizer over the trained parameters (SGD in every recipe). Its
  hyperparameters (lr, momentum, weight decay) are recorded into the graph: when they change (a new epoch
  of a per-epoch schedule) the step is captured again, which costs about one eager step.
* CPU (or ``use_graph=False``): the same code runs eagerly, step after step — the CPU twin the tests compare
  with ``AutoMix.training_step`` + ``optimizer.step()`` + ``momentum_update``.
* ``graphed_step(model, optimizer, x, y, *, method, total_steps)``: a fixed-batch ``step(i)`` for benchmarks.

Limits: static shapes (``drop_last=True``: every batch has the same shape, dtype and memory format); one
GPU (no DDP); bf16 autocast or fp32 (no fp16 GradScaler); no ManifoldMix (its mixing stage is drawn per step);
a non-finite loss is not skipped (the update is already applied when the host could see it: check
``out["loss"]`` and stop). With ``switch_off`` two graphs are captured (Mix Block branch on / off), each
with its own memory. ``p.grad`` holds the gradients of the last captured graph, not necessarily of the last
step. The first ``warmup`` calls run eagerly (real training steps) to initialise optimizer state and
library workspaces before the capture, and so does the first call of every graph key (with ``switch_off`` the
branch without the Mix Block may first come after the warm-up): no branch is captured before it ran eagerly.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.automix import AutoMix, ema_tensors
from ..core.mixing import MIXERS, MixOutput, mix, mix_loss
from ..core.schedules import mask_loss_weight_at
from .runtime import resolve_amp
from .step import DeviceDraws, host_tensors, step_losses, uses_fused

__all__ = ["GraphedStep", "graphed_step", "graph_blockers"]


def graph_blockers(model: nn.Module) -> list[str]:
    """Layers a captured step cannot hold: BatchNorm with ``momentum=None`` reads its update count on the host."""
    return [f"{name or type(model).__name__}: {type(m).__name__}(momentum=None) (a cumulative average reads "
            "num_batches_tracked on the host; give it a momentum)"
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None and m.track_running_stats]


def _copy_in(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Queue ``dst.copy_(src)`` without making the host wait (a host source goes through pinned memory)."""
    if dst.device.type == "cuda" and src.device.type == "cpu":
        src = src.pin_memory()
    dst.copy_(src, non_blocking=True)


@torch.no_grad()
def _ema_tensor_(targets: list[torch.Tensor], sources: list[torch.Tensor], m: torch.Tensor) -> None:
    """targets <- m[0] * targets + m[1] * sources with the momentum as device scalars (m[1] = 1 - m[0]).

    ``core.schedules.ema_`` computes the same update from a Python float (``alpha=1 - m``); a captured step
    cannot take a new host float each step, so here m lives in a device buffer the graph reads."""
    if targets:
        torch._foreach_mul_(targets, m[0])
        torch._foreach_add_(targets, torch._foreach_mul(sources, m[1]))


class GraphedStep:
    """One training step as a CUDA graph on CUDA, the same code eagerly elsewhere (see the module docstring).

    Args:
        model: an ``AutoMix`` for ``method="automix"``, else a classifier returning logits.
        optimizer: the optimizer of the trained parameters.
        total_steps: horizon of AutoMix's momentum and mask-loss schedules.
        method: "automix", "vanilla" or a pixel mixer in ``MIXERS`` (not "manifoldmix").
        alpha: Beta(α, α) of the hand-crafted mixers (AutoMix uses its own ``model.alpha``).
        smoothing: label smoothing of the classifier losses.
        amp_dtype: autocast dtype (``torch.bfloat16``) or None for fp32; fp16 is refused (needs GradScaler).
        warmup: eager steps before the capture (CUDA only).
        use_graph: capture a CUDA graph (default: when the model is on CUDA).
        online_pass: AutoMix's online pass, "auto" (fused on CUDA), "fused" or "separate" (``fast.step``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, total_steps: int,
                 method: str = "automix", alpha: float = 1.0, smoothing: float = 0.0,
                 amp_dtype: torch.dtype | None = None, warmup: int = 3, use_graph: bool | None = None,
                 online_pass: str = "auto"):
        if (method == "automix") != isinstance(model, AutoMix):
            raise TypeError("method='automix' needs an AutoMix model, and an AutoMix model needs method='automix'")
        if method != "automix" and method != "vanilla" and method not in MIXERS:
            raise ValueError(f"unknown method {method!r}; expected 'automix', 'vanilla' or one of {sorted(MIXERS)}")
        if method == "manifoldmix":
            raise NotImplementedError("manifoldmix draws its mixing stage per step; it has no graphed step")
        if amp_dtype == torch.float16:
            raise NotImplementedError("fp16 needs a GradScaler, which the graphed step does not support; "
                                      "use bf16 or fp32")
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.model, self.optimizer, self.total_steps, self.method = model, optimizer, total_steps, method
        self.alpha, self.smoothing, self.amp_dtype, self.warmup = alpha, smoothing, amp_dtype, warmup
        device = next(model.parameters()).device
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and device.type != "cuda":
            raise ValueError("use_graph=True needs the model on a CUDA device")
        blockers = graph_blockers(model) if self.use_graph else []
        if blockers:
            raise ValueError("this model cannot be captured in a CUDA graph: " + "; ".join(blockers))
        if self.use_graph and warmup < 1:  # e.g. SGD creates its momentum buffers on its first step
            raise ValueError("a captured step needs warmup >= 1 eager steps to create the optimizer's state")
        self.device, self.calls = device, 0
        self.fused = uses_fused(online_pass, device)
        self._static: dict[str, torch.Tensor] | None = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict]] = {}
        self._hyper: tuple | None = None
        self._warm: set[tuple] = set()  # graph keys that have run eagerly at least once

    # ------------------------------------------------------------------ host side of a step
    def _buffers(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Static device buffers, allocated on the first call (their addresses are what the graph reads)."""
        n, dev = x.shape[0], self.device
        s = {"x": torch.empty_like(x, device=dev), "y": torch.empty_like(y, device=dev)}
        if self.method == "automix":
            s.update(scalars=torch.zeros(5, device=dev), flags=torch.zeros(2, dtype=torch.bool, device=dev),
                     perms=torch.zeros(2, n, dtype=torch.long, device=dev), ema=torch.zeros(2, device=dev))
        elif self.method != "vanilla":
            s.update(target_b=torch.empty_like(s["y"]), lam=torch.zeros(n, device=dev),
                     perm=torch.zeros(n, dtype=torch.long, device=dev))
        return s

    def _load(self, x, y, step: int, generator) -> tuple[tuple, dict]:
        """Draw on the host and queue the copies into the static buffers; returns (graph key, host info)."""
        s = self._static
        if self.method == "automix":
            model: AutoMix = self.model
            d = model.draw(x.shape[0], generator)
            w = mask_loss_weight_at(step, self.total_steps, model.mask_loss_weight, model.mask_loss_schedule)
            m = model.momentum_at(step, self.total_steps)
            _copy_in(s["x"], x)
            _copy_in(s["y"], y)
            for key, src in zip(("scalars", "flags", "perms"), host_tensors(d, w)):
                _copy_in(s[key], src)
            _copy_in(s["ema"], torch.tensor([m, 1 - m], dtype=torch.float32))
            info = {"lam_mb": d.lam_mb, "lam_bb": d.lam_bb, "fallback": d.fallback, "mb_trained": d.train_mb,
                    "ema_momentum": m, "mask_loss_weight": w}
            return (d.train_mb,), info
        if self.method == "vanilla":
            _copy_in(s["x"], x)
            _copy_in(s["y"], y)
            return (), {}
        out = mix(x, y, self.method, alpha=self.alpha, generator=generator, check_labels=False)  # eager mixing
        for key, src in (("x", out.images), ("y", out.target_a), ("target_b", out.target_b), ("lam", out.lam),
                         ("perm", out.perm)):
            _copy_in(s[key], src)
        return (), {"lam": out.lam, "mask": out.mask}

    # ------------------------------------------------------------------ device side of a step
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)

    def _body(self, train_mb: bool = True) -> dict[str, torch.Tensor]:
        """Forward, backward, optimizer step and (AutoMix) EMA on the static buffers: what the graph records."""
        s = self._static
        with self._autocast():
            if self.method == "automix":
                out = step_losses(self.model, s["x"], s["y"], DeviceDraws(s["scalars"], s["flags"], s["perms"]),
                                  train_mb=train_mb, fused=self.fused)
            elif self.method == "vanilla":
                out = {"loss": F.cross_entropy(self.model(s["x"]).float(), s["y"], label_smoothing=self.smoothing)}
            else:
                mixed = MixOutput(s["x"], s["y"], s["target_b"], s["lam"], None, s["perm"])
                out = {"loss": mix_loss(self.model(s["x"]), mixed, self.smoothing, check_labels=False)}
        out["loss"].backward()
        self.optimizer.step()
        if self.method == "automix" and self.model.momentum < 1:
            _ema_tensor_(*ema_tensors(self.model), s["ema"])
        return {k: v.detach() for k, v in out.items() if torch.is_tensor(v)}

    def _note_recapture(self) -> None:
        """Warn once when the optimizer's hyperparameters change on consecutive calls (a per-step schedule): each
        change captures the graph again, about one eager step each time, so the graph stops paying."""
        self._recaptures = getattr(self, "_recaptures", []) + [self.calls]
        last = self._recaptures[-4:]
        if len(last) == 4 and last[-1] - last[0] == 3 and not getattr(self, "_warned", False):
            self._warned = True
            warnings.warn("the optimizer's learning rate (or momentum / weight decay) changed on every one of the "
                          "last 4 steps: each change re-captures the CUDA graph (about one eager step). Use a "
                          "per-epoch schedule with cuda_graph=True, or the eager step.", RuntimeWarning, stacklevel=4)

    def _hyperparameters(self) -> tuple:
        return tuple(tuple((k, v) for k, v in sorted(g.items()) if isinstance(v, (int, float, bool)))
                     for g in self.optimizer.param_groups)

    def _capture(self, train_mb: bool) -> tuple[torch.cuda.CUDAGraph, dict]:
        self.optimizer.zero_grad(set_to_none=True)  # backward allocates the grads inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may keep working while this thread captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._body(train_mb)
        return graph, out

    # ------------------------------------------------------------------ one step
    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int, generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """One training step on the batch (x, y): returns the losses (device tensors) and the host draws."""
        if self._static is None:
            self._static = self._buffers(x, y)
        elif x.shape != self._static["x"].shape or x.dtype != self._static["x"].dtype:
            raise ValueError(f"a graphed step needs static shapes: got {tuple(x.shape)} {x.dtype}, captured "
                             f"{tuple(self._static['x'].shape)} {self._static['x'].dtype} (use drop_last=True)")
        key, info = self._load(x, y, step, generator)
        self.calls += 1
        if not self.use_graph or self.calls <= self.warmup or key not in self._warm:
            out = self._eager(key)
            self._warm.add(key)  # this branch's kernels and library plans now exist outside any capture
        else:
            out = self._replay(key)
        return {**out, **info}

    def _eager(self, key: tuple) -> dict[str, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        if not self.use_graph:
            return self._body(*key)
        side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graph requires
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self._body(*key)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _replay(self, key: tuple) -> dict[str, torch.Tensor]:
        hyper = self._hyperparameters()
        if hyper != self._hyper:  # new lr / momentum / weight decay: recorded constants, capture again
            self._graphs.clear()
            self._hyper = hyper
            self._note_recapture()
        if key not in self._graphs:
            self._graphs[key] = self._capture(*key)
        graph, out = self._graphs[key]
        graph.replay()
        return out


def graphed_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 method: str, total_steps: int, amp_dtype: torch.dtype | str | None = "auto", seed: int = 0):
    """A ``step(i)`` running ``GraphedStep`` on the fixed batch (x, y) with its own generator (benchmarks).

    ``amp_dtype="auto"``: the trainer's policy (``runtime.resolve_amp``): bf16 where the GPU has bf16 tensor cores,
    fp32 off CUDA; where "auto" means fp16 (a T4) it raises ``NotImplementedError``: the graph cannot run fp16,
    and fp16 eager beats an fp32 graph there (time the eager step instead).
    """
    if amp_dtype == "auto":
        amp_dtype = resolve_amp("auto", next(model.parameters()).device)
    runner = GraphedStep(model, optimizer, total_steps=total_steps, method=method, amp_dtype=amp_dtype)
    generator = torch.Generator().manual_seed(seed)

    def step(i: int) -> dict[str, torch.Tensor]:
        return runner(x, y, i, generator)

    return step
