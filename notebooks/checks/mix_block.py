"""Checks of the exercises of notebooks/02_mix_block.ipynb, graded against automix_lite's MixBlock on random
trials (several seeds, pairings that are not their own inverse, both sides of the mask loss's margin)."""
from __future__ import annotations

import torch

from automix_lite import MixBlock, mask_loss
from automix_lite.core.mixblock import attention_mask_logits

from ._common import assert_close, assert_same_gradients, derangement


def _library_attention(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax(qᵀk / (τ√d)): the library's attention (τ = 1) with the queries divided by τ."""
    v = torch.zeros(q.shape[0], 1, *q.shape[2:])
    return attention_mask_logits(q / tau, k, v)[1]


def check_attention(fn, trials: int = 3) -> None:
    """``fn(q, k, tau)`` -> [N, hw, hw] equals the library's attention at several temperatures."""
    for seed in range(trials):
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(3, 8, 3, 4, generator=g).requires_grad_()  # h != w: a transposed flatten shows
        k = torch.randn(3, 8, 3, 4, generator=g).requires_grad_()
        for tau in (0.05, 0.4, 1.0, 2.5):
            want = _library_attention(q, k, tau)
            got = fn(q, k, tau)
            mistakes = {"τ ignored": _library_attention(q, k, 1.0),
                        "multiplied by τ": _library_attention(q, k, 1 / tau),
                        "no 1/√d": _library_attention(q, k, tau / 8 ** 0.5),
                        "softmax over the sample's positions (dim 1)": _library_attention(k, q, tau).transpose(1, 2)}
            what = f"seed {seed}, tau={tau}"
            assert_close(got, want, what, "P = softmax(qᵀk / (τ√d)) with rows = the sample's positions, softmax over "
                         "the partner's positions (the last dimension).", mistakes, atol=1e-5)
            assert_same_gradients(got, want, {"q": q, "k": k}, what)
    print(f"Exercise 1: correct at τ = 0.05, 0.4, 1 and 2.5 on {trials} random q, k (values and gradients)")


def _masks(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partner weights, mask [N, 2, H, W]) with different areas per sample; the mask is differentiable."""
    g = torch.Generator().manual_seed(seed)
    area = torch.rand(5, 1, 1, generator=g) * 0.8 + 0.1  # [N, 1, 1] partner areas 0.1..0.9
    partner = (area + 0.2 * torch.randn(5, 6, 6, generator=g)).clamp(0, 1).requires_grad_()
    return partner, torch.stack([1 - partner, partner], 1)


def check_l2_mask_loss(fn, margin: float = 0.1, trials: int = 4) -> None:
    """``fn(mask, lam, margin)`` equals ``mask_loss(mask, lam, "L2+Variance", margin)``, λ on both sides of the
    margin (a zero hinge and a positive one)."""
    for seed in range(trials):
        partner, mask = _masks(seed)
        own = float(mask[:, 0].detach().mean())
        for lam in (own - margin / 2, own + margin / 2, own - 2.5 * margin, own + 2.5 * margin):
            want = mask_loss(mask, lam, "L2+Variance", margin)
            got = fn(mask, lam, margin)
            m1 = mask[:, 1]
            dev = 1 - m1.mean() - lam
            mistakes = {"the hinge max(0, ·) left out": dev ** 2 - margin ** 2 - 2 * m1.var(unbiased=False),
                        "the unbiased variance": (dev ** 2 - margin ** 2).clamp(min=0) - 2 * m1.var(),
                        "the margin not squared": (dev ** 2 - margin).clamp(min=0) - 2 * m1.var(unbiased=False),
                        "the partner's area compared with λ": ((m1.mean() - lam) ** 2 - margin ** 2).clamp(min=0)
                        - 2 * m1.var(unbiased=False)}
            what = f"seed {seed}, own area {own:.3f}, lam {lam:.3f}"
            assert_close(got, want, what, "Hint: the own area (channel 0) over all pixels and samples, the margin "
                         "squared, the hinge, and the population variance (unbiased=False).", mistakes)
            assert_same_gradients(got, want, {"the partner weights": partner}, what)
    print("Exercise 2: correct inside and outside the margin (values and gradients)")


def _blocks(channels: int):
    """Random Mix Blocks: with and without λ concatenation and the query/key BatchNorm, weights large enough
    (init_std 0.5) that the attention and the mask are far from uniform."""
    for seed, (lam_concat, att_norm) in enumerate([(False, None), (False, "bn"), (True, None), (True, "bn")]):
        torch.manual_seed(seed)
        yield seed, MixBlock(channels, lam_concat=lam_concat, att_norm=att_norm, init_std=0.5).train()


def check_mix_block(fn, channels: int = 8) -> None:
    """``fn(block, z, lam, perm, out_size)`` -> [N, 2, H, W] equals ``block(z, lam, perm, out_size)`` on the same
    weights: four blocks (λ concatenation on/off, BatchNorm on/off), random features, λ and pairings; the mask
    and its gradients with respect to z and every weight of the block."""
    for seed, block in _blocks(channels):
        g = torch.Generator().manual_seed(100 + seed)
        z = torch.randn(5, channels, 3, 4, generator=g).requires_grad_()  # h != w
        lam, perm, size = float(torch.rand((), generator=g)) * 0.8 + 0.1, derangement(5, g), (9, 12)
        want = block(z, lam, perm, size)
        got = fn(block, z, lam, perm, size)
        mistakes = {"the two channels swapped (channel 0 is the sample's OWN weight, 1 − σ(u))": want.flip(1),
                    "the inverse pairing z[perm.argsort()]": block(z, lam, perm.argsort(), size)}
        if block.lam_concat:
            mistakes["λ and 1 − λ swapped (λ goes with the sample, 1 − λ with the partner)"] = block(z, 1 - lam, perm,
                                                                                                   size)
        what = (f"block {seed} (lam_concat={block.lam_concat}, norm={type(block.query.norm).__name__}), "
                f"lam={lam:.3f}, perm={perm.tolist()}")
        assert_close(got, want, what, "Check: q from z, k and v from z[perm] (k with the same block.query), "
                     "softmax over the partner's positions scaled by 1/√d, u = P v, nearest upsampling, then "
                     "[1 − σ(u), σ(u)].", mistakes, atol=1e-5)
        params = dict(block.named_parameters())
        assert_same_gradients(got, want, {"z": z, **{f"block.{n}": p for n, p in params.items()}}, what)
    print("Exercise 3: correct. Your Mix Block equals MixBlock.forward on four random blocks (mask and every gradient)")
