"""Which fast paths a run uses, each one trusted only after it proves itself (or forced by the user).

A fast path chosen by ``"auto"`` runs a short check on its first use in a run, against the readable path from
the same state and the same draws; on any exception or mismatch the run warns once (what failed, how to force it
or report it) and continues on the readable path, losing no step. What ran is printed at start-up and recorded in
``metrics.json`` under ``fast_paths`` ("on", or "off: why"). An explicit request (``online_pass="fused"``,
``data_on_device=True``, ``cuda_graph=True``) is not checked and still raises on failure.

* ``online_pass="auto"`` picks the fused online pass on CUDA. Its check (``check_fused_pass``): one AutoMix step
  on a synthetic batch through the fused pass and through the two separate passes, each on its own copy of the
  model, with the same draws; the losses, the gradient and the parameters after one SGD step must agree within
  ``FUSED_TOLERANCE`` of the dtype the run computes in. Cost, once per run: two steps at batch <= 8 and two
  model copies, about one training step at batch 32 (``python benchmarks/check_cost.py`` on the 2-core CPU:
  0.8x-1.3x of a step for ``resnet_tiny_cifar`` / ``resnet18_cifar``).
* ``data_on_device="auto"`` decodes the data onto the GPU when it fits. Decoding errors (out of memory included)
  fall back to the ``DataLoader``; the check (``check_device_images``) compares the first validation images with
  the dataset's own (``trainer.data``).
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from ..core.automix import AutoMix
from ..fast.fused import fused_blockers
from ..fast.step import training_step as fast_training_step
from ..fast.step import uses_fused

__all__ = ["FUSED_TOLERANCE", "FastPathWarning", "check_fused_pass", "choose_online_pass", "check_device_images",
           "fallback_warning"]

# relative tolerance of the fused-vs-separate check per compute dtype; float32 allows for TF32 convolutions
# (on by default for cuDNN on Ampere and newer: a 10-bit mantissa, ~1e-3 relative per product)
FUSED_TOLERANCE = {torch.float32: 5e-3, torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float64: 1e-9}
_REPORT = "report it with the message above at the project's issue tracker"


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


def _one_step(model: AutoMix, x: torch.Tensor, y: torch.Tensor, mode: str, amp_dtype) -> tuple:
    """(losses [5], gradient, parameters after an SGD step of lr 0.1) of one step on ``model`` (a copy)."""
    params = model.online_parameters() + model.mix_block_parameters()
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        out = fast_training_step(model, x, y, 0, 2, generator=torch.Generator().manual_seed(0), check_labels=False,
                                 online_pass=mode)
    out["loss"].backward()
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float() for p in params])
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.1)
    losses = torch.stack([out[k].detach().float() for k in ("loss", "loss_one_q", "loss_mix_q", "loss_mix_k")])
    return losses, grad, torch.cat([p.detach().flatten().float() for p in params])


def check_fused_pass(model: AutoMix, x: torch.Tensor, y: torch.Tensor, amp_dtype=None) -> str | None:
    """None when the fused online pass agrees with the separate passes on (x, y), else what differed.

    Runs on copies of ``model`` (the run's model, its BatchNorm statistics and the RNG streams are untouched)."""
    tol = FUSED_TOLERANCE[amp_dtype or next(model.parameters()).dtype]
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # each step starts from the same global RNG state
        fused = _one_step(copy.deepcopy(model), x, y, "fused", amp_dtype)
    with torch.random.fork_rng(devices=devices):
        plain = _one_step(copy.deepcopy(model), x, y, "separate", amp_dtype)
    for name, a, b in zip(("losses", "gradient", "parameters after one step"), fused, plain):
        if not bool(torch.isfinite(a).all()):
            return f"non-finite {name}"
        if _rel(a, b) > tol:
            return f"{name} differ by {_rel(a, b):.2e} (relative), more than {tol:g}"
    return None


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
    except Exception as e:  # noqa: BLE001 - any failure of the fast path means: do not use it
        reason = f"{type(e).__name__}: {e}"
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
