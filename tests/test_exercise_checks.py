"""The exercise checks of the course (notebooks/checks/) reject the wrong answers a learner writes, each with a
message that says what is wrong, and accept the reference solutions (notebooks/solutions/).

Every exercise of notebooks 01, 02, 02b and 05 is here: each check runs on the reference solution (it must pass)
and on a set of plausible mistakes (each must raise AssertionError, with a message matching what went wrong)."""
import importlib
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))

MODULES = ("mixing", "mix_block", "training_step", "scaling")  # notebooks 01, 02, 02b, 05
c01, c02, c02b, c05 = (importlib.import_module(f"checks.{m}") for m in MODULES)
s01, s02, s02b, s05 = (importlib.import_module(f"solutions.{m}") for m in MODULES)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core machine the step checks run ~30x faster (no OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fails(check, fn, match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        check(fn)


# ---------------------------------------------------------------- 01: mixing, the CutMix box
MIX_WRONG = {
    "inverse pairing": (lambda x, m, p: x * m + x[p.argsort()] * (1 - m), "inverse pairing"),
    "weights swapped": (lambda x, m, p: x * (1 - m) + x[p] * m, "weights swapped"),
    "partner weighted by mask": (lambda x, m, p: x * m + x[p] * m, "partner weighted by mask"),
    "mask detached": (lambda x, m, p: x * m.detach() + x[p] * (1 - m.detach()), "gradient with respect to mask"),
}


def _box(h, w, lam, cy, cx, side=lambda lam: math.sqrt(1 - lam), clip=True, rnd=int):
    sh, sw = rnd(h * side(lam)), rnd(w * side(lam))
    c = (lambda v, hi: min(max(v, 0), hi)) if clip else (lambda v, hi: v)
    return c(cy - sh // 2, h), c(cy + sh // 2, h), c(cx - sw // 2, w), c(cx + sw // 2, w)


BOX_WRONG = {
    "not clipped": lambda h, w, lam, cy, cx: _box(h, w, lam, cy, cx, clip=False),
    "sqrt(lam) for the sides": lambda h, w, lam, cy, cx: _box(h, w, lam, cy, cx, side=math.sqrt),
    "rounded sides": lambda h, w, lam, cy, cx: _box(h, w, lam, cy, cx, rnd=round),
    "h and w swapped": lambda h, w, lam, cy, cx: _box(w, h, lam, cy, cx),
}


@pytest.mark.parametrize("name", MIX_WRONG)
def test_01_mix_images_rejects(name):
    fn, match = MIX_WRONG[name]
    _fails(c01.check_mix_images, fn, match)


@pytest.mark.parametrize("name", BOX_WRONG)
def test_01_cutmix_box_rejects(name):
    _fails(c01.check_cutmix_box, BOX_WRONG[name], "clipped to")


# ---------------------------------------------------------------- 02: attention, L2+Variance, the Mix Block
def _att(q, k, tau, scale=True, dim=-1):
    d = q.shape[1]
    logits = q.flatten(2).transpose(1, 2) @ k.flatten(2) / (d ** 0.5 if scale else 1)
    return torch.softmax(logits / tau, dim=dim)


ATT_WRONG = {
    "tau ignored": (lambda q, k, tau: _att(q, k, 1.0), "τ ignored"),
    "tau multiplied": (lambda q, k, tau: _att(q, k, 1 / tau), "multiplied by τ"),
    "no sqrt(d)": (lambda q, k, tau: _att(q, k, tau, scale=False), "no 1/√d"),
    "softmax over the sample's positions": (lambda q, k, tau: _att(q, k, tau, dim=1), "dim 1"),
    "keys detached": (lambda q, k, tau: _att(q, k.detach(), tau), "gradient with respect to k"),
}


def _l2(mask, lam, margin, hinge=True, unbiased=False, square_margin=True, channel=0):
    m1 = mask[:, 1]
    area = mask[:, channel].mean()
    core = (area - lam) ** 2 - (margin ** 2 if square_margin else margin)
    return (core.clamp(min=0) if hinge else core) - 2 * m1.var(unbiased=unbiased)


L2_WRONG = {
    "hinge dropped": (lambda m, lam, e: _l2(m, lam, e, hinge=False), "hinge"),
    "unbiased variance": (lambda m, lam, e: _l2(m, lam, e, unbiased=True), "unbiased variance"),
    "margin not squared": (lambda m, lam, e: _l2(m, lam, e, square_margin=False), "margin not squared"),
    "wrong mask channel": (lambda m, lam, e: _l2(m, lam, e, channel=1), "partner's area"),
    "variance rewarded the wrong way": (lambda m, lam, e: _l2(m, lam, e) + 4 * m[:, 1].var(unbiased=False), "expected"),
}


def _block(block, z, lam, perm, size, key_from=None, value_from=None, swap=False, lam_swap=False, scale=True,
           dim=-1, joint_norm=False, no_grad_value=False, mode="nearest"):
    zp = z[perm]
    if block.lam_concat:
        lm = torch.full_like(z[:, :1], lam)
        z, zp = torch.cat([z, 1 - lm if lam_swap else lm], 1), torch.cat([zp, lm if lam_swap else 1 - lm], 1)
    if joint_norm:
        qk = block.query(torch.cat([z, zp]))
        q, k = qk[:z.shape[0]], qk[z.shape[0]:]
    else:
        q, k = block.query(z), block.query(key_from(z, zp) if key_from else zp)
    src = value_from(z, zp) if value_from else zp
    if no_grad_value:
        with torch.no_grad():
            v = block.value(src)
    else:
        v = block.value(src)
    n, _, h, w = q.shape
    u = (_att(q, k, 1.0, scale, dim) @ v.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, 1, h, w)
    part = torch.sigmoid(F.interpolate(u, size=size, mode=mode))
    return torch.cat([part, 1 - part] if swap else [1 - part, part], 1)


BLOCK_WRONG = {
    "mask channels swapped": (dict(swap=True), "channels swapped"),
    "inverse pairing": (dict(), "inverse pairing"),
    "key from the sample": (dict(key_from=lambda z, zp: z), "differs|off by"),
    "value from the sample": (dict(value_from=lambda z, zp: z), "off by"),
    "lambda channels swapped": (dict(lam_swap=True), "λ and 1 − λ swapped"),
    "no sqrt(d) scale": (dict(scale=False), "off by"),
    "softmax over the sample's positions": (dict(dim=1), "off by"),
    "one BatchNorm pass over sample and partner": (dict(joint_norm=True), "off by"),
    "value under no_grad": (dict(no_grad_value=True), "gradient with respect to"),
    "bilinear upsampling": (dict(mode="bilinear"), "nearest upsampling"),
}


@pytest.mark.parametrize("name", ATT_WRONG)
def test_02_attention_rejects(name):
    fn, match = ATT_WRONG[name]
    _fails(c02.check_attention, fn, match)


@pytest.mark.parametrize("name", L2_WRONG)
def test_02_l2_mask_loss_rejects(name):
    fn, match = L2_WRONG[name]
    _fails(c02.check_l2_mask_loss, fn, match)


@pytest.mark.parametrize("name", BLOCK_WRONG)
def test_02_mix_block_rejects(name):
    kw, match = BLOCK_WRONG[name]
    if name == "inverse pairing":
        def fn(block, z, lam, perm, size):
            return _block(block, z, lam, perm.argsort(), size)
    else:
        def fn(block, z, lam, perm, size):
            return _block(block, z, lam, perm, size, **kw)
    _fails(c02.check_mix_block, fn, match)


def test_02_the_wrong_block_helper_is_right_without_its_mistakes():
    """The mistakes above are single changes of a correct forward (else they would prove nothing)."""
    c02.check_mix_block(_block)


# ---------------------------------------------------------------- 02b: mixed CE, L1 mask loss, fallback, the step
def _ce(logits, y, perm, lam):
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


CE_WRONG = {
    "lambda swapped": (lambda lg, y, p, lam: _ce(lg, y, p, 1 - lam), "λ and 1 − λ swapped"),
    "inverse pairing": (lambda lg, y, p, lam: _ce(lg, y, p.argsort(), lam), "inverse pairing"),
    "partner's label dropped": (lambda lg, y, p, lam: lam * F.cross_entropy(lg, y), "expected"),
    "a Python float": (lambda lg, y, p, lam: _ce(lg, y, p, lam).item(), "return a torch tensor"),
    "logits detached": (lambda lg, y, p, lam: _ce(lg.detach(), y, p, lam), "gradient with respect to logits"),
}


def _l1(mask, lam, margin, per_sample=False, channel=0, hinge=True):
    own = mask[:, channel]
    dev = (own.mean((1, 2)) if per_sample else own.mean()) - lam
    out = dev.abs() - margin
    return (out.clamp(min=0) if hinge else out).mean()


L1_WRONG = {
    "per-sample hinge": (lambda m, lam, e: _l1(m, lam, e, per_sample=True), "hinge per sample"),
    "wrong mask channel": (lambda m, lam, e: _l1(m, lam, e, channel=1), "channel 1"),
    "hinge dropped": (lambda m, lam, e: _l1(m, lam, e, hinge=False), "hinge"),
    "margin added": (lambda m, lam, e: _l1(m, lam, -e), "expected"),
}


def _fb(mask, lam, margin, strict=False, one_side=False, swap=False):
    near = min(lam, 1 - lam) if not one_side else lam
    if (near < margin) if strict else (near <= margin):
        own = torch.full_like(mask[:, :1], 1 - lam if swap else lam)
        return torch.cat([own, 1 - own], 1)
    return mask


FB_WRONG = {
    "< instead of <=": (lambda m, lam, e: _fb(m, lam, e, strict=True), "the fallback left out"),
    "near 0 only": (lambda m, lam, e: _fb(m, lam, e, one_side=True), "fallback left out"),
    "channels swapped": (lambda m, lam, e: _fb(m, lam, e, swap=True), "channels swapped"),
    "never": (lambda m, lam, e: m, "fallback left out"),
    "always": (lambda m, lam, e: _fb(m, lam, 1.0), "firing when it should not"),
}


def _step(model, x, y, d, no_detach=False, swap_perms=False, lam_bb_for_mb=False, one_minus=False, online_judge=False,
          mask_loss_on_bb=False, no_fallback=False, mb_detached=False, no_weight=False, swapped_channels=False):
    size = x.shape[-2:]
    z = model.feature_map(x, stop_early=False)
    p_mb, p_bb = (d.perm_bb, d.perm_mb) if swap_perms else (d.perm_mb, d.perm_bb)
    l_mb = d.lam_bb if lam_bb_for_mb else d.lam_mb
    l_mb_label = 1 - l_mb if one_minus else l_mb
    mask_mb = model.mix_block(z, l_mb, p_mb, size)
    if mb_detached:
        mask_mb = mask_mb.detach()
    mask_bb = model.mix_block(z, d.lam_bb, p_bb, size)
    mask_bb = mask_bb if no_detach else mask_bb.detach()
    if not no_fallback:
        mask_bb = s02b.fallback(mask_bb, d.lam_bb, model.lam_margin)
    own, part = (1, 0) if swapped_channels else (0, 1)
    x_mb = x * mask_mb[:, own:own + 1] + x[p_mb] * mask_mb[:, part:part + 1]
    x_bb = x * mask_bb[:, 0:1] + x[p_bb] * mask_bb[:, 1:2]
    judge = (model.backbone_q, model.head_mix_q) if online_judge else (model.backbone_k, model.head_mix_k)
    mix_k = _ce(judge[1](judge[0](x_mb)), y, p_mb, l_mb_label)
    one_q = F.cross_entropy(model.head_one_q(model.backbone_q(x)), y)
    mix_q = _ce(model.head_mix_q(model.backbone_q(x_bb)), y, p_bb, d.lam_bb)
    mask = s02b.l1_mask_loss(mask_bb if mask_loss_on_bb else mask_mb, d.lam_mb, model.mask_loss_margin)
    w = 1.0 if no_weight else model.mask_loss_weight
    return {"loss": one_q + mix_q + mix_k + w * mask, "loss_one_q": one_q, "loss_mix_q": mix_q, "loss_mix_k": mix_k,
            "loss_mask": mask}


STEP_WRONG = {
    "M_bb not detached": (dict(no_detach=True), r"loss_mix_q: the gradient with respect to mix_block\..*Detach M_bb"),
    "pairings swapped": (dict(swap_perms=True), r"loss_mix_q: .*π_bb"),
    "lambda_bb for the Mix Block's mix": (dict(lam_bb_for_mb=True), "loss_mix_k"),
    "1 - lambda as the label weight": (dict(one_minus=True), r"loss_mix_k.*λ_mb"),
    "the online network judges": (dict(online_judge=True), r"loss_mix_k.*head_mix_k\(backbone_k"),
    "mask loss on M_bb": (dict(mask_loss_on_bb=True), r"loss_mask.*M_mb \(not M_bb\)"),
    "no fallback": (dict(no_fallback=True), r"fallback fires\), loss_mix_q"),
    "M_mb detached": (dict(mb_detached=True), r"yours does not reach it"),
    "mask-loss weight left out": (dict(no_weight=True), r"loss: .*mask_loss_weight"),
    "own and partner channels swapped": (dict(swapped_channels=True), "loss_mix_k"),
}


@pytest.mark.parametrize("name", CE_WRONG)
def test_02b_mixed_ce_rejects(name):
    fn, match = CE_WRONG[name]
    _fails(c02b.check_mixed_ce, fn, match)


@pytest.mark.parametrize("name", L1_WRONG)
def test_02b_mask_loss_rejects(name):
    fn, match = L1_WRONG[name]
    _fails(c02b.check_mask_loss, fn, match)


@pytest.mark.parametrize("name", FB_WRONG)
def test_02b_fallback_rejects(name):
    fn, match = FB_WRONG[name]
    _fails(c02b.check_fallback, fn, match)


@pytest.mark.parametrize("name", STEP_WRONG)
def test_02b_losses_rejects(name):
    kw, match = STEP_WRONG[name]
    _fails(c02b.check_losses, lambda model, x, y, d: _step(model, x, y, d, **kw), match)


def test_02b_the_wrong_step_helper_is_right_without_its_mistakes():
    c02b.check_losses(_step)


def test_02b_the_checks_fallback_is_the_librarys():
    """check_fallback's reference is what AutoMix.losses does with M_bb, on draws on both sides of the margin."""
    model = c02b._model(0)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 5, (6,))
    draws = c02b.step_draws(model, 6)
    assert {d.fallback for d in draws} == {True, False}
    for d in draws:
        out = model.losses(x, y, d, 0.1)
        z = model.feature_map(x, stop_early=False)
        mine = c02b.library_fallback(model.mix_block(z, d.lam_bb, d.perm_bb, (16, 16)).detach(), d.lam_bb, 0.08)
        torch.testing.assert_close(mine, out["mask_bb"])


# ---------------------------------------------------------------- 05: the momentum schedule, the weight, the update
def _mom(t, T, m0, m1, s, cut=lambda s, T: int(s * T), le=False, inside=False):
    c = cut(s, T)
    if (t <= c) if le else (t < c):
        return m0
    frac = (t - c) / (T - c) if inside else min(t, T) / T
    return m1 - (m1 - m0) * (math.cos(math.pi * frac) + 1) / 2


MOM_WRONG = {
    "<= at the cut-off": lambda t, T, m0, m1, s: _mom(t, T, m0, m1, s, le=True),
    "no floor on scope*T": lambda t, T, m0, m1, s: _mom(t, T, m0, m1, s, cut=lambda s, T: s * T),
    "position inside the scope": lambda t, T, m0, m1, s: _mom(t, T, m0, m1, s, inside=True),
    "m0 and m1 swapped": lambda t, T, m0, m1, s: _mom(t, T, m1, m0, s),
}


def _upstream(t, T, w0, last=1, compound=True):
    if not compound:
        return w0 * (math.cos(math.pi * t / T) + 1) / 2
    w = w0
    for i in range(1, t + last):
        w *= (math.cos(math.pi * i / T) + 1) / 2
    return w


UP_WRONG = {
    "a plain cosine": lambda t, T, w0: _upstream(t, T, w0, compound=False),
    "one factor too few": lambda t, T, w0: _upstream(t, T, w0, last=0),
}


def _update(model, step, total, swap=False, buffers=False, move_q=False, constant=False):
    m = model.momentum if constant else s05.momentum(step, total, model.momentum, model.end_momentum,
                                                     model.momentum_scope)
    pairs = [(model.backbone_q, model.backbone_k), (model.head_one_q, model.head_one_k),
             (model.head_mix_q, model.head_mix_k)]
    with torch.no_grad():
        for q, k in pairs:
            tensors = list(zip(q.parameters(), k.parameters()))
            if buffers:
                tensors += [(a, b) for a, b in zip(q.buffers(), k.buffers()) if b.is_floating_point()]
            for p_q, p_k in tensors:
                target, source = (p_q, p_k) if move_q else (p_k, p_q)
                new = (1 - m) * target + m * source if swap else m * target + (1 - m) * source
                target.copy_(new)
    return m


UPDATE_WRONG = {
    "weights swapped": (dict(swap=True), "weights are swapped"),
    "buffers averaged too": (dict(buffers=True), "buffer"),
    "the online network moved": (dict(move_q=True), "online network"),
    "constant momentum": (dict(constant=True), "return m"),
}


@pytest.mark.parametrize("name", MOM_WRONG)
def test_05_momentum_rejects(name):
    _fails(c05.check_momentum, MOM_WRONG[name], "cut-off")


@pytest.mark.parametrize("name", UP_WRONG)
def test_05_upstream_weight_rejects(name):
    _fails(c05.check_upstream_weight, UP_WRONG[name], "CURRENT")


@pytest.mark.parametrize("name", UPDATE_WRONG)
def test_05_momentum_update_rejects(name):
    kw, match = UPDATE_WRONG[name]
    _fails(c05.check_momentum_update, lambda model, step, total: _update(model, step, total, **kw), match)


def test_05_an_update_that_replaces_the_parameters_is_rejected():
    def replace(model, step, total):
        m = s05.momentum(step, total, model.momentum, model.end_momentum, model.momentum_scope)
        for q, k in ((model.backbone_q, model.backbone_k), (model.head_one_q, model.head_one_k),
                     (model.head_mix_q, model.head_mix_k)):
            for (name, p_k), p_q in zip(list(k.named_parameters()), q.parameters()):
                mod = k.get_submodule(name.rsplit(".", 1)[0]) if "." in name else k
                setattr(mod, name.rsplit(".", 1)[-1], torch.nn.Parameter(m * p_k + (1 - m) * p_q, requires_grad=False))
        return m
    _fails(c05.check_momentum_update, replace, "in place")


# ---------------------------------------------------------------- every reference solution passes its check
SOLVED = [(c01.check_mix_images, s01.mix_images), (c01.check_cutmix_box, s01.cutmix_box),
          (c02.check_attention, s02.attention), (c02.check_l2_mask_loss, s02.l2_variance_mask_loss),
          (c02.check_mix_block, s02.mix_block_forward), (c02b.check_mixed_ce, s02b.mixed_ce),
          (c02b.check_mask_loss, s02b.l1_mask_loss), (c02b.check_fallback, s02b.fallback),
          (c02b.check_losses, s02b.losses), (c05.check_momentum, s05.momentum),
          (c05.check_upstream_weight, s05.upstream_weight), (c05.check_momentum_update, s05.momentum_update)]


@pytest.mark.parametrize("check, solution", SOLVED, ids=[c.__name__ for c, _ in SOLVED])
def test_the_reference_solution_passes(check, solution, capsys):
    check(solution)
    assert "correct" in capsys.readouterr().out
