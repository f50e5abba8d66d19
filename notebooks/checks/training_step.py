"""Checks of the exercises of notebooks/02b_the_training_step.ipynb, graded against automix_lite on random trials:
the mixed cross-entropy, the L1 mask loss, the λ-margin fallback and the four losses of one step, values and
gradients (every parameter's, per loss)."""
from __future__ import annotations

import torch

from automix_lite import AutoMix, mask_loss
from automix_lite.core.automix import StepDraws, mixed_ce

from ._common import assert_close, assert_same_gradients, derangement

TERMS = ("loss", "loss_one_q", "loss_mix_q", "loss_mix_k", "loss_mask")


def check_mixed_ce(fn, trials: int = 4) -> None:
    """``fn(logits, y, perm, lam)`` equals the library's mixed cross-entropy, λ from 0 to 1."""
    for seed in range(trials):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(7, 5, generator=g).requires_grad_()
        y, perm = torch.randint(0, 5, (7,), generator=g), derangement(7, g)
        for lam in (0.0, 0.23, 0.5, 0.81, 1.0):
            want = mixed_ce(logits, y, perm, lam, 1 - lam)
            mistakes = {"λ and 1 − λ swapped": mixed_ce(logits, y, perm, 1 - lam, lam),
                        "the inverse pairing y[perm.argsort()]": mixed_ce(logits, y, perm.argsort(), lam, 1 - lam)}
            got = fn(logits, y, perm, lam)
            what = f"seed {seed}, lam={lam}"
            assert_close(got, want, what, "λ·CE(logits, y) + (1 − λ)·CE(logits, y[perm]), each averaged over the "
                         "batch; one scalar.", mistakes)
            assert_same_gradients(got, want, {"logits": logits}, what)
    print(f"Exercise 2: correct on {trials} random batches, λ from 0 to 1 (values and gradients)")


def check_mask_loss(fn, margin: float = 0.1, trials: int = 4) -> None:
    """``fn(mask, lam, margin)`` equals ``mask_loss(mask, lam, "L1", margin)`` on batches whose per-sample areas
    straddle λ, with λ inside and outside the margin of the batch's area."""
    for seed in range(trials):
        g = torch.Generator().manual_seed(seed)
        area = torch.linspace(0.15, 0.85, 6).view(6, 1, 1)[torch.randperm(6, generator=g)]  # [N, 1, 1]
        partner = (1 - area + 0.1 * torch.randn(6, 5, 5, generator=g)).clamp(0, 1).requires_grad_()
        mask = torch.stack([1 - partner, partner], 1)  # [N, 2, H, W]
        own = float(mask[:, 0].detach().mean())
        for lam in (own + margin / 2, own - margin / 2, own + 2 * margin, own - 2 * margin):
            want = mask_loss(mask, lam, "L1", margin)
            per_sample = ((mask[:, 0].mean((1, 2)) - lam).abs() - margin).clamp(min=0).mean()
            mistakes = {"a hinge per sample, then averaged (the library takes the batch's area first)": per_sample,
                        "channel 1 (the partner's weight) taken as the own area": ((mask[:, 1].mean() - lam).abs()
                                                                                    - margin).clamp(min=0),
                        "the hinge max(0, ·) left out": (mask[:, 0].mean() - lam).abs() - margin}
            got = fn(mask, lam, margin)
            what = f"seed {seed}, batch own area {own:.3f}, lam {lam:.3f}"
            assert_close(got, want, what, "max(0, |own area − λ| − margin) with the own area (channel 0) averaged "
                         "over every pixel of every sample.", mistakes)
            assert_same_gradients(got, want, {"the mask": partner}, what)
    print("Exercise 3: correct inside and outside the margin, on batches whose areas straddle λ")


def library_fallback(mask_bb: torch.Tensor, lam_bb: float, lam_margin: float) -> torch.Tensor:
    """What ``AutoMix.draw`` decides and ``AutoMix.losses`` does with M_bb (tests/test_exercise_checks.py proves
    this equals the library's step)."""
    if lam_margin >= 0 and min(lam_bb, 1 - lam_bb) <= lam_margin:
        return torch.cat([torch.full_like(mask_bb[:, :1], lam_bb), torch.full_like(mask_bb[:, :1], 1 - lam_bb)], 1)
    return mask_bb


def check_fallback(fn, lam_margin: float = 0.08) -> None:
    """``fn(mask_bb, lam_bb, lam_margin)`` equals the library's fallback on both sides of the margin, near 0 and
    near 1, and exactly at it."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(4, 1, 6, 6, generator=g)
    mask_bb = torch.cat([1 - p, p], 1)
    for lam in (0.0, 0.03, lam_margin, lam_margin + 1e-3, 0.3, 0.5, 0.7, 1 - lam_margin - 1e-3, 1 - lam_margin,
                0.97, 1.0):
        want = library_fallback(mask_bb, lam, lam_margin)
        got = fn(mask_bb.clone(), lam, lam_margin)
        fires = want is not mask_bb
        const = torch.cat([torch.full_like(p, lam), torch.full_like(p, 1 - lam)], 1)
        mistakes = {"the constant mask's channels swapped (channel 0, the own weight, is λ)": const.flip(1),
                    "the fallback left out": mask_bb, "the fallback firing when it should not": const}
        what = f"lam_bb={lam:.4f} (the fallback {'fires' if fires else 'does not fire'})"
        assert_close(got, want, what, f"When min(λ, 1 − λ) <= lam_margin ({lam_margin}: the margin itself counts) "
                     "M_bb becomes the constant MixUp mask [λ, 1 − λ]; otherwise it is returned unchanged.", mistakes)
    print("Exercise 1: correct near 0, near 1, exactly at the margin and away from it")


def _model(seed: int) -> AutoMix:
    """A tiny AutoMix whose Mix Block makes structured masks (weights N(0, 0.5)) and whose momentum network
    differs from the online one (as after some training), so that every routing mistake changes a number."""
    torch.manual_seed(seed)
    model = AutoMix("resnet_tiny_cifar", num_classes=5, feature_stage=2, att_norm="bn", lam_margin=0.08,
                    mask_loss_weight=0.1, mask_loss_margin=0.1)
    with torch.no_grad():
        for conv in (model.mix_block.query.conv, model.mix_block.value):
            conv.weight.normal_(0, 0.5)
        for m in (model.backbone_k, model.head_one_k, model.head_mix_k):
            for p in m.parameters():
                p.add_(0.1 * p.std().nan_to_num() * torch.randn_like(p) + 0.01 * torch.randn_like(p))
    return model.train()


def step_draws(model: AutoMix, n: int) -> list[StepDraws]:
    """Draws of the library (``AutoMix.draw``): two ordinary steps and one where the fallback fires, each with
    pairings that are not their own inverse and differ between the two draws, λ_mb and λ_bb far apart."""
    found, fallback, seed = [], None, 0
    while len(found) < 2 or fallback is None:
        d = model.draw(n, torch.Generator().manual_seed(seed))
        seed += 1
        perms = (d.perm_mb, d.perm_bb)
        if any(torch.equal(p.argsort(), p) for p in perms) or torch.equal(*perms) or abs(d.lam_mb - d.lam_bb) < 0.1:
            continue
        if d.fallback and fallback is None:
            fallback = d
        elif not d.fallback and len(found) < 2 and 0.1 < abs(d.lam_mb - 0.5) < 0.35:
            found.append(d)
    return found + [fallback]


HINTS = {
    "loss_one_q": "The CE of head_one_q(backbone_q(x)) with y, on the clean batch.",
    "loss_mix_q": "The mixed CE of head_mix_q(backbone_q(x_bb)) with y, π_bb and λ_bb; x_bb is mixed with the "
                  "DETACHED mask of (λ_bb, π_bb), or the constant mask when the λ-margin fallback fires.",
    "loss_mix_k": "The mixed CE of head_mix_k(backbone_k(x_mb)) with y, π_mb and λ_mb; x_mb is mixed with the "
                  "mask of (λ_mb, π_mb), which keeps its graph to the Mix Block.",
    "loss_mask": "The L1 mask loss of M_mb (not M_bb) against λ_mb.",
    "loss": "The sum loss_one_q + loss_mix_q + loss_mix_k + model.mask_loss_weight * loss_mask.",
}
ROUTES = {  # what must not reach which group, and why (the momentum network is frozen: nothing reaches it)
    ("loss_mix_q", "mix_block"): "Detach M_bb: the backbone's loss must not steer the Mix Block",
    ("loss_mix_k", "online"): "x_mb goes through the momentum network (backbone_k, head_mix_k), not the online one",
    ("loss_mask", "online"): "The mask loss depends on the Mix Block only",
    ("loss_one_q", "mix_block"): "The clean batch has no mask",
}


def _group(name: str) -> str:
    return "mix_block" if name.startswith("mix_block") else "online"  # the frozen momentum network has no gradient


def _compare_gradients(got: dict, want: dict, model: AutoMix, what: str) -> None:
    """The gradient of every trainable parameter equals the library's: first of a random combination of the four
    terms (one backward each), then, if that differs, term by term to say which loss goes where it should not."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    r = torch.rand(4, generator=torch.Generator().manual_seed(1)) + 0.5
    mix_got = sum(w * got[t].float() for w, t in zip(r, TERMS[1:]))
    mix_want = sum(w * want[t].float() for w, t in zip(r, TERMS[1:]))
    try:
        assert_same_gradients(mix_got, mix_want, params, what)
        return
    except AssertionError:
        pass
    for term in TERMS[1:]:
        def explain(name, term=term):
            route = ROUTES.get((term, _group(name)))
            return f"{route}. " if route else ""
        assert_same_gradients(got[term], want[term], params, f"{what}, {term}", HINTS[term], explain=explain)
    raise AssertionError(f"{what}: the gradients of the four losses together differ from the library's")


def check_losses(fn, models: int = 1) -> None:
    """``fn(model, x, y, draws)`` returns the dict of ``TERMS``, equal to ``AutoMix.losses(x, y, draws,
    model.mask_loss_weight)`` on the same weights: every loss and, per loss, every parameter's gradient; on
    random models and batches, for ordinary draws and one where the λ-margin fallback fires."""
    for seed in range(models):
        model = _model(seed)
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(6, 3, 16, 16, generator=g), torch.randint(0, 5, (6,), generator=g)
        for d in step_draws(model, 6):
            want = model.losses(x, y, d, model.mask_loss_weight)  # train mode: batch statistics, so the order
            got = fn(model, x, y, d)  # of the two forward passes does not matter
            what = (f"model {seed}, λ_mb={d.lam_mb:.3f}, λ_bb={d.lam_bb:.3f}"
                    + (" (λ_bb within the margin: the fallback fires)" if d.fallback else ""))
            if not isinstance(got, dict) or set(TERMS) - set(got):
                raise AssertionError(f"return a dict with the keys {TERMS}, got {type(got).__name__} "
                                     f"{sorted(got) if isinstance(got, dict) else ''}")
            for term in TERMS[1:] + TERMS[:1]:  # the terms first: their hints say more than the total's
                assert_close(got[term], want[term], f"{what}, {term}", HINTS[term], atol=1e-5)
            _compare_gradients(got, want, model, what)
    print("Exercise 4: correct. Your step equals AutoMix.losses: every loss and every parameter's gradient, on "
          f"{models} random model(s) and three draws, with and without the fallback")
