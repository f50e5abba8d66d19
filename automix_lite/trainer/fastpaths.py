"""Which fast paths a run uses, each one trusted only after it proves itself (or forced by the user).

A fast path chosen by ``"auto"`` runs a short check on its first use in a run, against the readable path from
the same state and the same draws; on any exception or mismatch the run warns once (what failed, how to force it
or report it) and continues on the readable path, losing no step. What ran is printed at start-up and recorded in
``metrics.json`` under ``fast_paths`` ("on", or "off: why"). An explicit request (``online_pass="fused"``,
``data_on_device=True``, ``cuda_graph=True``) is not checked and still raises on failure.

* ``online_pass="auto"`` picks the fused online pass on CUDA. Its check (``check_fused_pass``): one AutoMix step
  on a synthetic batch through the fused pass and through the two separate passes, each on its own copy of the
  model, with the same draws, in float32 with TF32 off whatever dtype the run uses; the losses, the gradient and
  the update of one SGD step (parameters and BatchNorm statistics) must each agree within ``FUSED_TOLERANCE``. Cost, once per run: two steps at batch <= 8 and two
  model copies, about one training step at batch 32 (``python benchmarks/check_cost.py`` on the 2-core CPU:
  0.8x-1.3x of a step for ``resnet_tiny_cifar`` / ``resnet18_cifar``).
* ``data_on_device="auto"`` decodes the data onto the GPU when it fits. Decoding errors (out of memory included)
  fall back to the ``DataLoader``; a device fault (``is_device_error``: an illegal memory access, a device-side
  assert) is re-raised with its own message in both checks, since every later CUDA call would fail too; the check (``check_device_images``) compares the first validation images with
  the dataset's own (``trainer.data``).
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.nn as nn

from ..core.automix import AutoMix
from ..fast.fused import fused_blockers
from ..fast.step import training_step as fast_training_step
from ..fast.step import uses_fused

__all__ = ["FUSED_TOLERANCE", "FastPathWarning", "check_fused_pass", "fused_pass_differences", "choose_online_pass",
           "check_device_images", "fallback_warning", "fallback_reason", "is_device_error"]

# relative tolerance of each comparison of the fused-vs-separate check. The probe always computes in float32 with
# TF32 off, whatever dtype the run uses (the check tests the fused pass's logic, not a dtype's rounding). Measured on
# the 2-core CPU (resnet_tiny_cifar 16 px and resnet18_cifar 32 px, batch 8, 3 seeds each): the sound fused pass
# differs by 0 (losses), <= 4e-7 (gradient), <= 3e-8 (update); pooled BatchNorm (the bug the check exists for) by
# >= 3.2e-4, >= 0.27, >= 0.47. Each tolerance sits >= 6x under the pooled mutant and far above float32 noise.
FUSED_TOLERANCE = {"losses": 5e-5, "gradient": 1e-2, "update": 1e-2}
_REPORT = "report it with the message above at the project's issue tracker"
# a CUDA error that leaves the context unusable: every later CUDA call fails too, so a fallback cannot help
_STICKY_DEVICE_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                         "illegal instruction", "misaligned address", "illegal address", "launch timed out",
                         "uncorrectable ECC", "hardware stack error")


def is_device_error(e: BaseException) -> bool:
    """Whether ``e`` is a device fault (``torch.AcceleratorError`` on recent torch, or a sticky CUDA error such as an
    illegal memory access or a device-side assert), not an error a fast path can cause and step aside from (out of
    memory, an unsupported operation, a failed comparison)."""
    msg = str(e)
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg:
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(e, accelerator_error):
        return True
    return isinstance(e, RuntimeError) and any(w in msg for w in _STICKY_DEVICE_ERRORS)


def fallback_reason(e: Exception) -> str:
    """Why a fast path that raised ``e`` steps aside; a device fault is re-raised unchanged (its original message
    and traceback) instead. Out of memory first returns the cached blocks to the device (``empty_cache``)."""
    if is_device_error(e):
        raise e
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e):
        torch.cuda.empty_cache()  # a no-op without CUDA
    return f"{type(e).__name__}: {e}"


class FastPathWarning(RuntimeWarning):
    """A fast path failed its check or raised; the run continues on the readable path."""


def fallback_warning(path: str, reason: str, force: str) -> None:
    """The one warning a fallen-back fast path gives."""
    warnings.warn(f"{path} failed its first-use check and is off for this run ({reason}); training continues on "
                  f"the readable path, with the same algorithm. To force it: {force}. To help fix it: {_REPORT}.",
                  FastPathWarning, stacklevel=3)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _one_step(model: AutoMix, x: torch.Tensor, y: torch.Tensor, mode: str) -> tuple:
    """(losses [4], gradient, update) of one float32 step on ``model`` (a copy): the update is every online and Mix
    Block parameter's change under SGD at lr 0.1 and every floating buffer's change (BatchNorm running statistics)."""
    params = model.online_parameters() + model.mix_block_parameters()
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    before = [t.detach().clone() for t in params + buffers]
    out = fast_training_step(model, x, y, 0, 2, generator=torch.Generator().manual_seed(0), check_labels=False,
                             online_pass=mode)
    out["loss"].backward()
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float() for p in params])
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.1)
    losses = torch.stack([out[k].detach().float() for k in ("loss", "loss_one_q", "loss_mix_q", "loss_mix_k")])
    update = torch.cat([(t.detach() - t0).flatten().float() for t, t0 in zip(params + buffers, before)])
    return losses, grad, update


@contextlib.contextmanager
def _exact_float32():
    """TF32 off for CUDA matmuls and convolutions within the block (restored after)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fused_pass_differences(model: AutoMix, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Relative differences {losses, gradient, update} of one step through the fused pass vs the separate passes,
    each on a float32 copy of ``model`` with the same draws and TF32 off (the run's model, its BatchNorm
    statistics and the RNG streams are untouched); a non-finite result counts as ``inf``."""
    devices = [x.device] if x.device.type == "cuda" else []
    results = []
    with _exact_float32():
        for mode in ("fused", "separate"):
            with torch.random.fork_rng(devices=devices):  # each step starts from the same global RNG state
                results.append(_one_step(copy.deepcopy(model).float(), x.float(), y, mode))
    return {name: (_rel(a, b) if bool(torch.isfinite(a).all()) else float("inf"))
            for name, a, b in zip(FUSED_TOLERANCE, *results)}


def check_fused_pass(model: AutoMix, x: torch.Tensor, y: torch.Tensor, amp_dtype=None) -> str | None:
    """None when the fused online pass agrees with the separate passes on (x, y), else every comparison that
    differed. The probe is float32 whatever ``amp_dtype`` the run uses (kept for the callers; see
    ``FUSED_TOLERANCE``): a bf16 or fp16 pass differs from itself by more than pooled BatchNorm's error."""
    diffs = fused_pass_differences(model, x, y)
    bad = [f"{name} differ by {d:.2e} (relative), more than {FUSED_TOLERANCE[name]:g}"
           for name, d in diffs.items() if not d <= FUSED_TOLERANCE[name]]
    return "; ".join(bad) or None


def _probe_batch(model: AutoMix, shape: tuple[int, int, int], n: int, device: torch.device):
    g = torch.Generator().manual_seed(12345)
    x = torch.randn(max(n, 2), *shape, generator=g).to(device)
    return x, torch.randint(0, model.num_classes, (x.shape[0],), generator=g).to(device)


def choose_online_pass(requested: str, model: nn.Module, device: torch.device, image_shape: tuple[int, int, int],
                       batch: int, amp_dtype=None) -> tuple[str, str]:
    """(the online pass the run uses, its ``fast_paths`` entry). "auto" on CUDA checks the fused pass first."""
    if not isinstance(model, AutoMix):
        return "separate", "off: one online pass (not AutoMix)"
    blockers = fused_blockers(model.backbone_q)
    if requested == "fused" and blockers:
        raise ValueError("online_pass='fused' cannot split these layers over the two halves of its batch: "
                         + "; ".join(blockers) + ". Use online_pass='separate'.")
    if requested != "auto":
        return requested, ("on (online_pass='fused', unchecked)" if requested == "fused"
                           else "off: online_pass='separate'")
    if not uses_fused("auto", device):
        return "separate", f"off: auto on {device.type} (the fused pass pays where kernel launches dominate)"
    if blockers:
        return "separate", "off: layers the fused pass cannot split: " + "; ".join(blockers)
    try:
        reason = check_fused_pass(model, *_probe_batch(model, image_shape, min(batch, 8), device), amp_dtype)
    except Exception as e:  # noqa: BLE001 - what the fast path can cause steps aside; a device fault re-raises
        reason = fallback_reason(e)
    if reason is None:
        return "fused", "on (checked against the separate passes)"
    fallback_warning("the fused online pass (online_pass='auto')", reason, "online_pass='fused'")
    return "separate", f"off: check failed ({reason})"


def check_device_images(device_images, dataset, k: int = 8) -> str | None:
    """None when the first ``k`` images decoded on the device equal ``dataset``'s own items, else what differed."""
    k = min(k, len(dataset))
    index = torch.arange(k, device=device_images.device)
    ours = device_images.batch(index, None).float().cpu()  # [k, C, H, W]; validation data: no augmentation
    want = torch.stack([dataset[i][0] for i in range(k)]).float()
    if ours.shape != want.shape:
        return f"shape {tuple(ours.shape)} instead of {tuple(want.shape)}"
    err = float((ours - want).abs().max()) if k else 0.0
    return None if err <= 1e-5 else f"the first {k} validation images differ by up to {err:.3g}"
