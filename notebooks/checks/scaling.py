"""Checks of the exercises of notebooks/05_scale_to_imagenet.ipynb, graded against automix_lite: the momentum
schedule (both sides of its cut-off), the compounding mask-loss weight, and the momentum update itself."""
from __future__ import annotations

import copy
import math

import torch

from automix_lite import AutoMix, mask_loss_weight_at, momentum_at


def check_momentum(fn) -> None:
    """``fn(t, T, m0, m1, scope)`` equals ``momentum_at`` on both sides of the cut-off ⌊scope·T⌋ (with a scope·T
    that is not a whole number), in the middle and at the end, for several (T, m0, m1)."""
    for T, m0, m1, scope in ((500_000, 0.999, 0.99999, 0.1), (1005, 0.9, 0.99, 0.1), (333, 0.95, 0.999, 0.25)):
        cut = int(scope * T)
        for t in (0, cut - 1, cut, cut + 1, T // 3, T // 2, T - 1, T):
            want, got = momentum_at(t, T, m0, m1, scope), fn(t, T, m0, m1, scope)
            assert isinstance(got, (float, int)) or torch.is_tensor(got), f"return a number, got {got!r}"
            assert math.isclose(float(got), want, rel_tol=0, abs_tol=1e-12), (
                f"T={T}, m0={m0}, m1={m1}, scope={scope}, t={t} (cut-off ⌊scope·T⌋ = {cut}): got {float(got)!r}, "
                f"expected {want!r}. m0 while t < ⌊scope·T⌋ (an integer cut-off), then m1 − (m1 − m0)·(cos(πt/T) "
                "+ 1)/2 with t/T over the whole run, not the position inside the scope.")
    print("Exercise 1: correct on both sides of the cut-off for three schedules")


def check_upstream_weight(fn) -> None:
    """``fn(t, T, w0)`` equals ``mask_loss_weight_at(t, T, w0, "upstream")`` for two run lengths."""
    for T, w0 in ((10_000, 0.1), (777, 1.0)):
        for t in (0, 1, 2, 10, T // 30, T // 2, T - 1, T):
            want, got = mask_loss_weight_at(t, T, w0, "upstream"), fn(t, T, w0)
            assert math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-300), (
                f"T={T}, t={t}: got {float(got)!r}, expected {want!r}. Each step i = 1..t multiplies the CURRENT "
                "weight by (cos(πi/T) + 1)/2; at t = 0 it is w0.")
    print("Exercise 2: correct for two run lengths")


def _model(seed: int) -> AutoMix:
    """A tiny AutoMix whose online network has moved away from the momentum one (parameters AND BatchNorm
    statistics: a forward in train mode), as after an optimizer step."""
    torch.manual_seed(seed)
    model = AutoMix("resnet_tiny_cifar", num_classes=4, momentum=0.9, end_momentum=0.99, momentum_scope=0.1)
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.backbone_q(torch.randn(4, 3, 16, 16))  # the online BatchNorm statistics move, the momentum ones not
    return model


def _state(model: AutoMix) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_momentum_update(fn) -> None:
    """``fn(model, step, total_steps)`` does what ``AutoMix.momentum_update`` does: θ_k ← m·θ_k + (1 − m)·θ_q for
    the momentum network's parameters (not its buffers: BatchNorm statistics stay its own), in place, with m
    from the model's schedule, and returns m. Steps on both sides of the schedule's cut-off and at the end."""
    total = 1005
    for seed, step in enumerate((0, int(0.1 * total) - 1, int(0.1 * total), total // 2, total)):
        model = _model(seed)
        lib = copy.deepcopy(model)
        m_want = lib.momentum_update(step, total)
        ids = {k: id(p) for k, p in model.named_parameters()}
        m_got = fn(model, step, total)
        what = f"step {step} of {total}"
        assert m_got is not None and math.isclose(float(m_got), m_want, abs_tol=1e-12), (
            f"{what}: return m = {m_want!r} (model.momentum → model.end_momentum, scope model.momentum_scope), "
            f"got {m_got!r}")
        got, want, before = _state(model), _state(lib), _state(_model(seed))
        assert {k: id(p) for k, p in model.named_parameters()} == ids, (
            f"{what}: update the tensors in place (p.data.mul_(m).add_(...) or p.mul_/add_ under torch.no_grad()): "
            "an optimizer and the trainer hold the parameter objects")
        for key in want:
            if torch.equal(got[key], want[key]) or (want[key].is_floating_point() and torch.allclose(
                    got[key], want[key], rtol=1e-6, atol=1e-7)):  # m·θ_k + (1 − m)·θ_q rounds as it is written
                continue
            if "_q." in key or key.startswith("mix_block"):
                raise AssertionError(f"{what}: {key} changed; the online network and the Mix Block are the "
                                     "source of the average, only the momentum network (the _k modules) moves")
            if torch.equal(want[key], before[key]):
                raise AssertionError(f"{what}: {key} is a buffer (BatchNorm statistics): the update averages the "
                                     "parameters only; model.backbone_k keeps its own statistics")
            swapped = lib_state_swapped(before, key, m_want)
            hint = (" It equals (1 − m)·θ_k + m·θ_q: the two weights are swapped." if swapped is not None
                    and torch.allclose(got[key], swapped, atol=1e-6) else "")
            raise AssertionError(f"{what}: {key} is not m·θ_k + (1 − m)·θ_q with m = {m_want:.6f}.{hint}")
    print("Exercise 3: correct. Your momentum update equals AutoMix.momentum_update (parameters only, in place) on "
          "both sides of the schedule's cut-off")


def lib_state_swapped(before: dict, key: str, m: float):
    """(1 − m)·θ_k + m·θ_q for the momentum tensor ``key``: the update with its weights swapped."""
    source = key.replace("_k.", "_q.", 1)
    if source == key or source not in before or not before[key].is_floating_point():
        return None
    return (1 - m) * before[key] + m * before[source]
