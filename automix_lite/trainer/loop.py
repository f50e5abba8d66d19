"""The training loop in named parts, read top-down: ``setup_run`` (``trainer.run``: data, model, optimizer, resume) ->
``fit`` (epochs until done; an interrupt writes a resumable checkpoint) -> ``run_epoch`` -> ``train_step``, with
``end_epoch`` (record, evaluation, checkpoint), ``snapshot`` / ``save`` and ``finish`` (the summary).

Host synchronisation: the non-finite guard does not read the device after each step. Its skip is applied on the
device (``_guarded_update``: the update of a non-finite step is undone by ``torch.where`` on a device flag, which
leaves a finite step's numbers untouched) and its counters live on the device; the host reads them every
``log_every`` steps, at the end of an epoch and before an interrupt's checkpoint (``_settle``), then prints what
was skipped and stops the run once ``max_nonfinite`` had come in a row. The host therefore queues the next step
while the device computes this one. Exceptions that keep one read per step: DDP (the skip and stop flags of all
ranks, reduced together), fp16's GradScaler (its ``step`` reads its own inf flag) and a run's first step (the
optimizer state does not exist yet). The losses are summed on the device and read at the end of the epoch, when a
checkpoint is written, or when a callback (the progress bar every ``log_every`` steps) reads ``TrainState.losses``.
Labels are range-checked once per dataset here, not per batch.

``cfg.cuda_graph``: the step goes through ``graphed.GraphedStep`` (AutoMix's forward, backward, SGD and EMA as one
CUDA graph; the same code eagerly off CUDA), which updates before the loss is seen: a non-finite loss then stops
the run instead of being skipped.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from ..core.automix import AutoMix
from ..fast.runtime import Interrupt, LazyScalars, read_scalars
from .callbacks import CallbackList, TrainState
from .checkpoint import atomic_json, environment_info
from .diagnostics import diagnose
from .engine import evaluate, head_names, set_lr, summarize
from .run import NonFiniteLossError, Run, check_labels, save, setup_run, snapshot  # noqa: F401  (re-exported)

__all__ = ["Run", "StepResult", "NonFiniteLossError", "setup_run", "fit", "run_epoch", "train_step", "end_epoch",
           "snapshot", "save", "finish", "check_labels"]



# ------------------------------------------------------------------ the loop
def fit(run: Run, callbacks: CallbackList, state: TrainState) -> None:
    """Epochs until ``cfg.epochs``. SIGTERM / a first Ctrl-C: finish the step, write a resumable checkpoint at the
    current position, re-raise ``KeyboardInterrupt``; an interrupt inside a step (torn state) writes nothing."""
    run.model.train()
    with Interrupt() as interrupt:
        try:
            while run.epoch < run.cfg.epochs:
                run_epoch(run, callbacks, state, interrupt)
                end_epoch(run, callbacks, state)
        except KeyboardInterrupt:
            if run.torn:
                if run.rank == 0:
                    print(f"[automix_lite] stopped inside step {run.step}; no checkpoint written for it. Resume "
                          f"from the last epoch checkpoint: resume={str(run.out)!r}.", file=sys.stderr, flush=True)
                raise
            _settle(run)  # the skipped steps' counts into the checkpoint (raises if the limit had been reached)
            save(run, tag=f"interrupt-step{run.step:07d}")  # mid-epoch, every RNG state included
            if run.rank == 0:
                print(f"[automix_lite] interrupted at step {run.step}; resumable checkpoint written to {run.out}. "
                      f"Resume with resume={str(run.out)!r} (CLI: --resume {run.out}).", file=sys.stderr, flush=True)
            raise


def _begin_epoch(run: Run) -> None:
    if run.sampler is not None:
        run.sampler.set_epoch(run.epoch)
        run.sampler.set_start(run.batch * run.train_loader.batch_size)
    run.sums, run.count, run.nonfinite_epoch, run.t_epoch, run.t_before = {}, 0, 0, time.time(), 0.0
    if run.partial:  # resumed mid-epoch: continue the interrupted epoch's averages
        p, run.partial = run.partial, None
        run.sums, run.count, run.nonfinite_epoch, run.t_before = dict(p["sums"]), p["count"], p["nonfinite"], p["time"]
    if run.loader_gen is not None:
        run.loader_state = run.loader_gen.get_state()  # before this epoch's iterator draws from it


def run_epoch(run: Run, callbacks: CallbackList, state: TrainState, interrupt: Interrupt) -> None:
    """The steps of one epoch (from ``run.batch`` when resumed mid-epoch); callbacks after each step."""
    _begin_epoch(run)
    state.epoch, state.batch_in_epoch = run.epoch, run.batch
    callbacks("on_epoch_start", state)
    batches = iter(run.train_loader)
    while True:
        run.torn = True  # a KeyboardInterrupt from here to the end of the step leaves torn state
        try:
            x, y = next(batches)
        except StopIteration:
            break
        out = train_step(run, x, y, interrupt.requested)
        run.torn = False
        state.step, state.batch_in_epoch, state.losses = run.step, run.batch, LazyScalars(out.losses)
        state.images, state.mask, state.perm = out.images, out.mask, out.perm
        if run.ema_momentum is not None:
            state.metrics["ema_momentum"] = run.ema_momentum
        callbacks("on_step_end", state)
        if out.stop or (interrupt.requested and not run.distributed):
            raise KeyboardInterrupt("SIGTERM or Ctrl-C")
    run.torn = True  # until this epoch's checkpoint is written
    _settle(run)


class StepResult(NamedTuple):
    """One step's outputs: scalar losses (detached, still on the device), the batch on the device, its pixel
    mask and permutation (None without a pixel mix), and whether all ranks agreed to stop."""

    losses: dict[str, torch.Tensor]
    images: torch.Tensor
    mask: torch.Tensor | None
    perm: torch.Tensor | None
    stop: bool


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, stop_requested: bool) -> StepResult:
    """One optimisation step on a batch (forward, the finite check, backward, optimizer, EMA).
    A non-finite loss skips the step entirely (no update, BN statistics restored) and counts it."""
    cfg, device = run.cfg, run.device
    set_lr(run.optimizer, cfg, run.epoch, run.batch, run.steps_per_epoch)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if run.graphed is not None:
        losses, mask, perm, finite, stop = _graphed_update(run, x, y)
    else:
        with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
            out, mask, perm = run.runner(x, y, run.step, run.total_steps, run.generator)
        loss = out["loss"]
        run.optimizer.zero_grad(set_to_none=True)
        losses = {k: v.detach() for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}
        if _deferred(run):
            finite, stop = _guarded_update(run, loss), False  # a device flag: no host read
        else:
            finite, stop = _agree(run, loss, stop_requested)
            if finite:
                _update(run, loss)
            else:
                _skip(run)
    _add_sums(run, losses, finite)
    run.step += 1
    run.batch += 1
    if run.guard is not None and ((run.step % run.cfg.log_every == 0) or run.batch >= run.steps_per_epoch):
        _settle(run)
    return StepResult(losses, x.detach(), mask, perm, stop)


def _add_sums(run: Run, losses: dict[str, torch.Tensor], finite: bool | torch.Tensor) -> None:
    """A finite step's losses into the epoch's sums, on the device (float64, as Python floats would be); a device
    ``finite`` flag adds 0 for a skipped step (counted off at ``_settle``)."""
    if finite is False:
        return
    for k, v in losses.items():
        v = v.to(torch.float64)
        if torch.is_tensor(finite):
            v = torch.where(finite, v, torch.zeros((), dtype=torch.float64, device=v.device))
        run.sums[k] = run.sums.get(k, 0.0) + v
    run.count += 1


_GRAPHED_DRAWS = ("lam_mb", "lam_bb", "mask_loss_weight", "fallback", "mb_trained")  # as training_step logs them


def _graphed_update(run: Run, x: torch.Tensor, y: torch.Tensor):
    """The whole step through ``run.graphed``; the update is applied before the loss can be seen, so a non-finite
    loss cannot be skipped: it stops the run (the last epoch checkpoint stays intact). The host looks at the
    losses every ``log_every`` steps and at the end of an epoch, not after every replay (which would idle the
    GPU between replays): a flag on the device collects the non-finite ones in between."""
    try:
        out = run.graphed(x, y, run.step, run.generator)
    except Exception as e:  # capture or replay failed: cuda_graph=True was explicit, so stop, resumable
        run.torn = False
        raise GraphStepError(
            f"the CUDA-graph step failed at step {run.step} ({type(e).__name__}: {e}). cuda_graph=True was asked for "
            f"explicitly, so the run stops instead of changing path; the last epoch checkpoint in {str(run.out)!r} "
            "is intact: resume from it with cuda_graph=False (the eager step: the same algorithm and numbers), and "
            "please report the error.") from e
    losses = {k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}  # graph outputs
    losses.update({k: torch.tensor(out[k], dtype=torch.float64 if k.startswith("lam") else torch.float32)
                   for k in _GRAPHED_DRAWS})  # are overwritten by the next replay: keep copies
    bad = ~torch.isfinite(losses["loss"])
    run.graph_bad = bad if run.graph_bad is None else run.graph_bad | bad
    if (run.step + 1) % run.cfg.log_every == 0 or run.batch + 1 >= run.steps_per_epoch:
        if _read_flag(run.graph_bad):
            run.torn = False
            raise NonFiniteLossError(
                f"non-finite loss in the steps up to {run.step} with cuda_graph=True: the graphed step had already "
                f"updated the weights, so it cannot be skipped; training stopped. The last epoch checkpoint in "
                f"{str(run.out)!r} is intact: resume from it with cuda_graph=False (which skips such steps), a lower "
                "lr or amp='off'.")
        run.graph_bad = None
    run.consecutive, run.ema_momentum = 0, out["ema_momentum"]
    return losses, out["mask_mb"], out["perm_mb"], True, False


class GraphStepError(RuntimeError):
    """The CUDA-graph step (``cuda_graph=True``) raised; the run stopped with its last epoch checkpoint intact."""


def _read_flag(flag: torch.Tensor) -> bool:
    """The one host read of the graphed path (every ``log_every`` steps)."""
    return bool(flag)


def _agree(run: Run, loss: torch.Tensor, stop_requested: bool) -> tuple[bool, bool]:
    """(finite, stop) with one host read; under DDP every rank must agree to skip and to stop, or DDP deadlocks."""
    if not run.distributed:
        return bool(torch.isfinite(loss.detach())), False
    flags = torch.stack([(~torch.isfinite(loss.detach())).float(),
                         torch.full((), float(stop_requested), device=loss.device)])
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, stop = flags.tolist()
    return not bad > 0, stop > 0


def _update(run: Run, loss: torch.Tensor, keep_buffers: bool = True) -> None:
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if isinstance(run.model, AutoMix):
        run.ema_momentum = run.model.momentum_update(run.step, run.total_steps)
    run.consecutive = 0
    if run.buffers and keep_buffers:
        torch._foreach_copy_(run.saved_buffers, run.buffers)


def _skip(run: Run) -> None:
    """Skip the step entirely: no update, and the BN statistics of this forward undone; stop after too many."""
    if run.buffers:
        torch._foreach_copy_(run.buffers, run.saved_buffers)
    run.consecutive += 1
    run.nonfinite_epoch += 1
    run.nonfinite_total += 1
    cfg = run.cfg
    if run.rank == 0:
        print(f"[automix_lite] non-finite loss at step {run.step}: optimizer step skipped "
              f"({run.consecutive} in a row, limit {cfg.max_nonfinite})", file=sys.stderr)
    if run.consecutive >= max(cfg.max_nonfinite, 1):
        run.torn = False
        raise NonFiniteLossError(
            f"{run.consecutive} consecutive non-finite losses (last at step {run.step}); training stopped. The last "
            f"good checkpoint in {str(run.out)!r} is intact: lower lr, use amp='off' or check the data, then resume "
            "from it.")


# ------------------------------------------------------------------ the guard without a per-step host read
def _deferred(run: Run) -> bool:
    """Whether this step's non-finite guard runs on the device (see the module docstring for the exceptions)."""
    return not run.distributed and not run.scaler.is_enabled() and bool(run.optimizer.state)


def _live_tensors(run: Run, ok: torch.Tensor) -> list[torch.Tensor]:
    """What a step changes besides the buffers: every parameter (EMA targets included) and the optimizer's state
    tensors on the device (e.g. SGD's momentum buffers)."""
    state = [t for st in run.optimizer.state.values() for t in st.values()
             if torch.is_tensor(t) and t.device == ok.device and t.is_floating_point()]
    return [p.data for p in run.model.parameters()] + state


def _guarded_update(run: Run, loss: torch.Tensor) -> torch.Tensor:
    """``_update`` whose effect is undone on the device when the loss is not finite (``_skip``'s result without a
    host read): parameters, optimizer state and EMA targets are restored with ``torch.where`` from copies taken
    before the step, the BN statistics from ``saved_buffers``. A finite step's numbers are untouched (``where``
    selects them bit for bit). Optimizer state first created in a skipped step is zeroed (SGD without dampening
    then behaves as if it had not been created). Returns the device flag ``finite``."""
    ok = torch.isfinite(loss.detach())
    if run.guard is None:  # [skipped since the last read, in a row now, longest in a row since the last read]
        c = run.consecutive
        run.guard = {"counts": torch.tensor([0, c, c], device=ok.device), "saved": [], "pending": False}
    live = _live_tensors(run, ok)
    if len(run.guard["saved"]) != len(live) or any(a.shape != b.shape for a, b in zip(run.guard["saved"], live)):
        run.guard["saved"] = [t.clone() for t in live]
    else:
        torch._foreach_copy_(run.guard["saved"], live)
    known = {t.data_ptr() for t in live}
    consecutive = run.consecutive
    _update(run, loss, keep_buffers=False)
    run.consecutive = consecutive  # the host mirror is set by _settle
    with torch.no_grad():
        for t, old in zip(live, run.guard["saved"]):
            torch.where(ok, t, old, out=t)
        for t in _live_tensors(run, ok):
            if t.data_ptr() not in known:
                torch.where(ok, t, torch.zeros((), dtype=t.dtype, device=t.device), out=t)
        for b, old in zip(run.buffers, run.saved_buffers):
            torch.where(ok, b, old, out=b)
        if run.buffers:
            torch._foreach_copy_(run.saved_buffers, run.buffers)
    g, bad = run.guard, (~ok).long()
    g["counts"][0] += bad  # skipped since the last read
    g["counts"][1] = (g["counts"][1] + 1) * bad  # in a row now
    g["counts"][2] = torch.maximum(g["counts"][2], g["counts"][1])  # longest run in a row since the last read
    g["pending"] = True
    return ok


def _settle(run: Run) -> None:
    """The guard's one host read: count the skipped steps, report them, stop once ``max_nonfinite`` came in a row."""
    g = run.guard
    if g is None or not g["pending"]:
        return
    skipped, in_row, longest = (int(v) for v in g["counts"].tolist())
    g["counts"].copy_(torch.tensor([0, in_row, in_row]))
    g["pending"] = False
    run.consecutive, run.count = in_row, run.count - skipped
    run.nonfinite_epoch += skipped
    run.nonfinite_total += skipped
    limit = max(run.cfg.max_nonfinite, 1)
    if skipped and run.rank == 0:
        print(f"[automix_lite] non-finite loss in {skipped} of the steps up to step {run.step - 1}: optimizer steps "
              f"skipped ({longest} in a row at most, limit {run.cfg.max_nonfinite})", file=sys.stderr)
    if longest >= limit:
        run.torn = False
        raise NonFiniteLossError(
            f"{limit} consecutive non-finite losses (in the steps up to {run.step - 1}; the steps after the limit "
            f"were skipped too, changing nothing); training stopped. The last good checkpoint in {str(run.out)!r} "
            "is intact: lower lr, use amp='off' or check the data, then resume from it.")


# ------------------------------------------------------------------ end of an epoch, checkpoints, summary
def end_epoch(run: Run, callbacks: CallbackList, state: TrainState) -> None:
    """The epoch's record (mean losses, lr, EMA momentum, top-1 of every head when due), ``metrics.jsonl``, the
    epoch checkpoint, then ``on_epoch_end``."""
    cfg = run.cfg
    run.batch = 0
    run.epoch += 1
    record = {"epoch": run.epoch, "step": run.step, "time": run.t_before + time.time() - run.t_epoch,
              "lr": {g["name"]: g["lr"] for g in run.optimizer.param_groups},
              "train": {k: v / max(run.count, 1) for k, v in read_scalars(run.sums).items()},
              "nonfinite": run.nonfinite_epoch}
    if isinstance(run.model, AutoMix):
        record["ema_momentum"] = run.model.momentum_at(run.step, run.total_steps)
    if run.epoch % cfg.eval_every == 0 or run.epoch == cfg.epochs:
        record["val"] = evaluate(run.model, run.val_loader, run.device, run.amp_dtype, run.distributed,
                                 cfg.channels_last)
    run.history.append(record)
    if run.rank == 0:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if "val" in record:
            vals = " ".join(f"{k}={v:.2f}" for k, v in record["val"].items())
            print(f"[automix_lite] epoch {run.epoch}/{cfg.epochs} loss={record['train'].get('loss', 0):.4f}"
                  f" val top-1: {vals} ({record['time']:.1f}s)", flush=True)
    save(run, tag=f"epoch{run.epoch:04d}")
    run.torn = False
    state.metrics.update(record)
    callbacks("on_epoch_end", state)


def finish(run: Run, wall_time_s: float) -> dict[str, Any]:
    """The run's summary (``metrics.json``, written on rank 0): history, medians of the last k epochs per head,
    the best head, environment, and ``diagnostics`` (mask structure of ``masks.png``, largest top-1 drop)."""
    cfg = run.cfg
    metrics = {"config": cfg.to_dict(), "history": run.history, "nonfinite_total": run.nonfinite_total,
               "wall_time_s": wall_time_s, "environment": environment_info(run.device, run.world_size),
               "method": cfg.method, "num_classes": run.num_classes, "fast_paths": run.fast_paths,
               **summarize(run.history, head_names(run.model), cfg.median_last_k)}
    metrics["diagnostics"] = diagnose(run.model, run.history, run.val_loader, run.device)  # masks.png std, drops
    if run.rank == 0:
        atomic_json(run.out / "metrics.json", metrics)
    return metrics
