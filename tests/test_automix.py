"""AutoMix training step: gradient routing, λ draws, fallback, momentum schedule and EMA (docs/algorithm.md)."""
import math

import pytest
import torch
import torch.nn.functional as F

from automix_lite.core.automix import HEADS, AutoMix, AutoMixAugment, mask_loss_weight_at, momentum_at
from automix_lite.core.mixblock import mask_loss
from automix_lite.core.mixing import mix
from automix_lite.fast.step import device_draws, step_losses


def _batch(n=6, c=3, size=16, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _model(**kw):
    torch.manual_seed(0)
    kw.setdefault("mask_loss_margin", 0.0)
    return AutoMix("resnet_tiny_cifar", 5, **kw)


def _grads(loss, params):
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return sum(0.0 if g is None else float(g.abs().sum()) for g in gs)


def _find_step(model, want, seed_range=range(200)):
    """A generator seed whose draw satisfies `want(out)` (e.g. λ_bb outside the fallback margin)."""
    x, y = _batch()
    for s in seed_range:
        out = model.training_step(x, y, 0, 100, generator=torch.Generator().manual_seed(s))
        if want(out):
            return out
    raise AssertionError("no seed satisfied the condition")


def test_gradient_routing_loss_by_loss():
    model = _model(lam_margin=-1)  # no fallback: mask_bb really comes from the Mix Block
    out = _find_step(model, lambda o: abs(1 - float(o["mask_mb"][:, 0].mean()) - float(o["lam_mb"])) > 0.05)
    mb, online = model.mix_block_parameters(), model.online_parameters()
    # Mix Block: from the momentum branch and the mask loss only
    assert _grads(out["loss_mix_k"], mb) > 0
    assert _grads(out["loss_mask"], mb) > 0
    assert _grads(out["loss_mix_q"], mb) == 0  # mask_bb is detached
    assert _grads(out["loss_one_q"], mb) == 0
    # online encoder + heads: from its own two losses only
    assert _grads(out["loss_one_q"], online) > 0
    assert _grads(out["loss_mix_q"], online) > 0
    assert _grads(out["loss_mix_k"], online) == 0
    assert _grads(out["loss_mask"], online) == 0
    # momentum encoder and heads: frozen, never trained by gradient
    frozen = [p for m in (model.backbone_k, model.head_one_k, model.head_mix_k) for p in m.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    out["loss"].backward()
    assert all(p.grad is None for p in frozen)
    ids = {id(p) for p in online + mb}
    assert not any(id(p) in ids for p in frozen)


def test_total_loss_is_the_documented_sum():
    model = _model(mask_loss_weight=0.3)
    x, y = _batch()
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(3))
    expect = out["loss_one_q"] + out["loss_mix_q"] + out["loss_mix_k"] + 0.3 * out["loss_mask"]
    assert torch.allclose(out["loss"], expect)


def test_two_independent_draws_and_masks_match_input():
    model = _model()
    x, y = _batch(n=8)
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(1))
    assert float(out["lam_mb"]) != float(out["lam_bb"])
    assert not torch.equal(out["perm_mb"], out["perm_bb"])
    for key in ("mask_mb", "mask_bb"):
        m = out[key]
        assert m.shape == (8, 2, 16, 16)
        assert torch.allclose(m.sum(1), torch.ones(8, 16, 16))
    # same generator seed -> same draws
    again = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(1))
    assert float(again["lam_mb"]) == float(out["lam_mb"]) and torch.equal(again["perm_bb"], out["perm_bb"])


def test_lambda_margin_fallback_gives_constant_mixup_masks():
    model = _model(lam_margin=0.5)  # every λ_bb falls inside the margin
    x, y = _batch()
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(0))
    lam = float(out["lam_bb"])
    assert float(out["fallback"]) == 1.0
    assert torch.allclose(out["mask_bb"][:, 0], torch.full((6, 16, 16), lam))
    assert torch.allclose(out["mask_bb"][:, 1], torch.full((6, 16, 16), 1 - lam))
    off = _model(lam_margin=-1).training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(0))
    assert float(off["fallback"]) == 0.0 and float(off["mask_bb"][:, 0].std()) > 0


def test_mask_adjust_uses_lambda_bb():
    model = _model(mask_adjust=1.0, lam_margin=-1)
    for p in model.mix_block.parameters():  # a non-trivial mask
        torch.nn.init.normal_(p, 0, 0.5)
    x, y = _batch()
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(5))
    area = out["mask_bb"][:, 0].mean(dim=(1, 2))
    assert torch.allclose(area, torch.full_like(area, float(out["lam_bb"])), atol=1e-5)


def test_switch_off_skips_the_k_branch_but_keeps_the_mask_loss():
    # reference: openmixup/models/classifiers/automix.py, AutoMixup.forward_k returns no loss_mix_k when
    # np.random.rand() > switch_off * cos_annealing, while pixel_mixup always adds mask_loss * mask loss
    model = _model(switch_off=1e-12, mask_loss_margin=0.0, mask_loss_weight=0.3)
    x, y = _batch()
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(0))
    assert float(out["mb_trained"]) == 0.0 and float(out["loss_mix_k"]) == 0.0
    mb = model.mix_block_parameters()
    assert _grads(out["loss_mask"], mb) > 0
    g_total = torch.autograd.grad(out["loss"], mb, retain_graph=True)
    g_mask = torch.autograd.grad(0.3 * out["loss_mask"], mb)
    assert all(torch.equal(a, b) for a, b in zip(g_total, g_mask))


def test_switch_off_probability_is_constant_over_training():
    # reference: AutoMixup.cos_annealing stays 1 (no AutoMix config sets it), so the k-branch runs with the
    # constant probability switch_off at every step (forward_k: skip iff rand > switch_off)
    model = _model(switch_off=0.8)
    g = torch.Generator().manual_seed(0)
    rate = sum(model.draw(4, g).train_mb for _ in range(2000)) / 2000
    assert abs(rate - 0.8) < 0.03  # binomial sd 0.009; a cosine decay would average 0.4
    assert all(_model(switch_off=0.0).draw(4, g).train_mb for _ in range(20))


def _reference_step(model, x, y, d, w_mask):
    """A plain transcription of OpenMixup AutoMixup.forward_train / pixel_mixup / forward_k / forward_q
    (openmixup/models/classifiers/automix.py) for given draws: Python floats and branches, the whole
    momentum encoder run on the clean batch (backbone_k(img)[0]), the Mix Block called for mb then bb."""
    size = x.shape[-2:]
    with torch.no_grad():
        z, = model.backbone_k.forward_intermediates(x, indices=[model.feature_stage], stop_early=False,
                                                    intermediates_only=False)[1]
    mask_mb = model.mix_block(z, d.lam_mb, d.perm_mb, size)
    mask_bb = model.mix_block(z, d.lam_bb, d.perm_bb, size).detach()
    if d.fallback:
        own, partner = torch.full_like(mask_bb[:, :1], d.lam_bb), torch.full_like(mask_bb[:, :1], 1 - d.lam_bb)
        mask_bb = torch.cat([own, partner], 1)
    loss_mask = mask_loss(mask_mb, d.lam_mb, model.mask_loss_mode, model.mask_loss_margin)
    x_mb = x * mask_mb[:, 0:1] + x[d.perm_mb] * mask_mb[:, 1:2]
    x_bb = x * mask_bb[:, 0:1] + x[d.perm_bb] * mask_bb[:, 1:2]
    loss_mix_k = torch.zeros(())
    if d.train_mb:
        lk = model.head_mix_k(model.backbone_k(x_mb)).float()
        loss_mix_k = d.lam_mb * F.cross_entropy(lk, y) + (1 - d.lam_mb) * F.cross_entropy(lk, y[d.perm_mb])
    loss_one_q = F.cross_entropy(model.head_one_q(model.backbone_q(x)).float(), y)
    lq = model.head_mix_q(model.backbone_q(x_bb)).float()
    loss_mix_q = d.lam_bb * F.cross_entropy(lq, y) + (1 - d.lam_bb) * F.cross_entropy(lq, y[d.perm_bb])
    return {"loss": loss_one_q + loss_mix_q + loss_mix_k + w_mask * loss_mask, "loss_one_q": loss_one_q,
            "loss_mix_q": loss_mix_q, "loss_mix_k": loss_mix_k, "loss_mask": loss_mask}


def _sgd_step(model, loss, lr=0.1):
    params = model.online_parameters() + model.mix_block_parameters()
    for p in params:
        p.grad = None
    loss.backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,kw", [("resnet_tiny_cifar", {"lam_margin": 0.3}),
                                     ("resnet18_cifar", {"switch_off": 0.5, "lam_concat": True})])
def test_step_equals_the_reference_transcription_bitwise(name, kw):
    """Default path (momentum_features="full"): the readable step (``AutoMix.losses``) and the device step
    (``fast.step.step_losses``) give losses, then every parameter and buffer (BN running stats of both
    encoders included, num_batches_tracked = 2 per step after the feature stage) after SGD + EMA steps,
    bitwise equal to the plain transcription of the reference."""
    import copy
    torch.manual_seed(0)
    core = AutoMix(name, 5, **kw)
    fast, ref = copy.deepcopy(core), copy.deepcopy(core)
    g = torch.Generator().manual_seed(1)
    passes_k, seen = 0, set()
    for step in range(3):
        x, y = _batch(n=6, size=32, seed=step)
        d = core.draw(6, g)
        passes_k += d.train_mb
        seen.add(d.fallback if "lam_margin" in kw else d.train_mb)
        outs = {"core": core.losses(x, y, d, 0.1),
                "fast": step_losses(fast, x, y, device_draws(d, x.device, 0.1), train_mb=d.train_mb)}
        want = _reference_step(ref, x, y, d, 0.1)
        for path, out in outs.items():
            for key in want:
                assert torch.equal(out[key], want[key]), (path, step, key)
        for model, out in ((core, outs["core"]), (fast, outs["fast"]), (ref, want)):
            _sgd_step(model, out["loss"])
            model.momentum_update(step, 10)
    want = _state(ref)
    for model in (core, fast):
        got = _state(model)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert int(core.backbone_k.layer4[0].bn1.num_batches_tracked) == 3 + passes_k  # clean batch + each mb mix
    assert seen == {False, True}  # both sides of the λ-margin fallback (tiny) / of switch_off (resnet18) ran


def test_core_and_device_steps_agree_bitwise_with_mask_adjust_and_fallback():
    """``mask_adjust`` (Python-float λ in the readable step, float32 device scalars in the fast step) and the
    fallback, both sides of each: the same losses and masks, bit for bit."""
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 5, mask_adjust=0.5, lam_margin=0.3)
    g = torch.Generator().manual_seed(3)
    seen = set()
    for step in range(8):
        x, y = _batch(n=6, size=16, seed=step)
        d = model.draw(6, g)
        seen.add((d.adjust, d.fallback))
        a = model.losses(x, y, d, 0.1)
        b = step_losses(model, x, y, device_draws(d, x.device, 0.1), train_mb=d.train_mb)
        for key in ("loss", "loss_one_q", "loss_mix_q", "loss_mix_k", "loss_mask", "mask_bb", "mask_mb"):
            assert torch.equal(a[key], b[key]), (step, key)
    assert {s[0] for s in seen} == {False, True} and {s[1] for s in seen} == {False, True}


def test_full_momentum_pass_updates_later_bn_twice_and_early_stop_once():
    # reference: AutoMixup.forward_train runs feature = self.backbone_k(img)[0], i.e. the whole momentum
    # encoder on the clean batch (its layer4 BN sees it), then forward_k runs it again on the mb mix
    torch.manual_seed(0)
    full = AutoMix("resnet_tiny_cifar", 5)
    early = AutoMix("resnet_tiny_cifar", 5, momentum_features="early_stop")
    early.load_state_dict(full.state_dict())
    outs = []
    for model in (full, early):
        g = torch.Generator().manual_seed(0)
        for step in range(3):
            x, y = _batch(n=6, size=16, seed=step)
            out = model.training_step(x, y, step, 10, generator=g)
            _sgd_step(model, out["loss"])
            model.momentum_update(step, 10)
        outs.append(out)
    steps_k = [int(full.backbone_k.layer4[0].bn1.num_batches_tracked),
               int(early.backbone_k.layer4[0].bn1.num_batches_tracked)]
    assert steps_k == [6, 3]
    assert int(full.backbone_k.layer2[0].bn1.num_batches_tracked) == 6  # before the tap: 2 in both modes
    assert int(early.backbone_k.layer2[0].bn1.num_batches_tracked) == 6
    # early stop changes only the later BN buffers of the momentum encoder, nothing the step computes
    assert torch.equal(outs[0]["loss"], outs[1]["loss"])
    a, b = _state(full), _state(early)
    differ = {k for k in a if not torch.equal(a[k], b[k])}
    assert differ and all(k.startswith("backbone_k.layer4") for k in differ)
    with pytest.raises(ValueError, match="momentum_features"):
        AutoMix("resnet_tiny_cifar", 5, momentum_features="half")


def test_lam_is_returned_exactly():
    from automix_lite.core.mixing import sample_lam
    model = _model()
    x, y = _batch()
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    lam_mb, lam_bb = sample_lam(2.0, g), sample_lam(2.0, g)
    assert out["lam_mb"].dtype == torch.float64 and out["lam_mb"].item() == lam_mb
    assert out["lam_bb"].item() == lam_bb


def test_no_repeat_fallback_shifts_only_the_mix_block_pairing(monkeypatch):
    # reference: AutoMixup._no_repeat_shuffle_idx (openmixup/models/classifiers/automix.py): 10 redraws, then
    # index_mb (ignore_failure=False) becomes a shift by np.random.randint(1, N-1), index_bb keeps its draw
    import automix_lite.core.automix as am
    calls = []

    def identity(n, generator=None):
        calls.append(n)
        return torch.arange(n)

    monkeypatch.setattr(am, "sample_perm", identity)
    model = _model(no_repeat_perm=True)
    g = torch.Generator().manual_seed(0)
    shifts = set()
    for _ in range(60):
        d = model.draw(6, g)
        shift = int(d.perm_mb[0])
        assert torch.equal(d.perm_mb, (torch.arange(6) + shift) % 6)
        assert torch.equal(d.perm_bb, torch.arange(6))  # kept, fixed points and all
        shifts.add(shift)
    assert shifts == {1, 2, 3, 4}  # random in [1, N-2]
    assert len(calls) == 60 * 2 * 11  # first draw + 10 redraws per pairing
    assert torch.equal(model.draw(2, g).perm_mb, torch.tensor([1, 0]))  # N = 2: the only derangement


def test_momentum_cut_off_is_an_integer_step():
    # reference: openmixup/core/hooks/momentum_hook.py, CosineScheduleHook.before_train_iter:
    # min_iter = int(max_iters * adjust_scope[0]); base momentum while cur_iter < min_iter
    total = 1005  # 0.1 * T = 100.5, int() = 100
    assert momentum_at(99, total) == 0.999
    assert momentum_at(100, total) == 0.999999 - (0.999999 - 0.999) * (math.cos(math.pi * 100 / total) + 1) / 2


@pytest.mark.parametrize("frac", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_momentum_schedule_matches_formula(frac):
    total = 1000
    t = int(frac * total)
    m = momentum_at(t, total, 0.999, 0.999999)
    expect = 0.999 if frac < 0.1 else 0.999999 - (0.999999 - 0.999) * (math.cos(math.pi * frac) + 1) / 2
    assert math.isclose(m, expect, rel_tol=0, abs_tol=1e-12)
    if frac == 0.1:
        assert math.isclose(m, 0.999024, abs_tol=1e-6)  # the upstream t/T jump
    if frac == 1.0:
        assert math.isclose(m, 0.999999, abs_tol=1e-12)


def test_momentum_update_equals_hand_computed_ema_and_skips_bn_buffers():
    model = _model()
    x, y = _batch()
    opt = torch.optim.SGD(model.online_parameters() + model.mix_block_parameters(), lr=0.5)
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    opt.step()
    q = {k: v.clone() for k, v in model.backbone_q.state_dict().items()}
    k_before = {k: v.clone() for k, v in model.backbone_k.state_dict().items()}
    m = model.momentum_update(50, 100)
    assert math.isclose(m, momentum_at(50, 100))
    k_after = model.backbone_k.state_dict()
    name = "conv1.weight"  # (block convs start with zero grads: timm zero-inits the last BN)
    assert not torch.equal(q[name], k_before[name])
    assert torch.allclose(k_after[name], m * k_before[name] + (1 - m) * q[name])
    assert torch.equal(k_after["bn1.running_mean"], k_before["bn1.running_mean"])  # OpenMixup: not averaged
    both = _model(ema_bn_buffers=True)
    bk = both.backbone_k.bn1.running_mean.clone()
    both.backbone_q.bn1.running_mean.fill_(1.0)
    both.momentum_update(50, 100)
    assert torch.allclose(both.backbone_k.bn1.running_mean, m * bk + (1 - m) * 1.0)


def test_heads_ema_and_no_ema_when_momentum_is_one():
    model = _model(momentum=1.0, end_momentum=1.0)
    with torch.no_grad():
        model.head_one_q.fc.weight.add_(1.0)
    before = model.head_one_k.fc.weight.clone()
    assert model.momentum_update(5, 10) == 1.0
    assert torch.equal(model.head_one_k.fc.weight, before)
    model = _model()
    with torch.no_grad():
        model.head_one_q.fc.weight.add_(1.0)
    before = model.head_one_k.fc.weight.clone()
    m = model.momentum_update(0, 10)
    assert torch.allclose(model.head_one_k.fc.weight, m * before + (1 - m) * model.head_one_q.fc.weight)


def test_every_head_and_ensemble_and_generate_mask():
    model = _model().eval()
    x, _ = _batch()
    for head in HEADS + ("ensemble",):
        assert model(x, head=head).shape == (6, 5)
    with pytest.raises(ValueError, match="one_k"):
        model(x, head="best")
    mask = model.generate_mask(x, 0.4, torch.arange(6).flip(0))
    assert mask.shape == (6, 2, 16, 16) and not mask.requires_grad


def test_frozen_mixer_through_mix():
    model = _model().eval()
    x, y = _batch()
    out = mix(x, y, AutoMixAugment(model, adjust=True), generator=torch.Generator().manual_seed(0))
    assert out.images.shape == x.shape and out.mask.shape == (6, 1, 16, 16)
    assert torch.allclose(out.mask.mean(dim=(1, 2, 3)), out.lam, atol=1e-5)
    assert torch.equal(out.target_b, y[out.perm])


def test_mask_loss_weight_schedules():
    assert mask_loss_weight_at(500, 1000, 0.1, "constant") == 0.1
    assert math.isclose(mask_loss_weight_at(1000, 1000, 0.1, "cosine"), 0.0, abs_tol=1e-12)
    assert math.isclose(mask_loss_weight_at(500, 1000, 0.1, "cosine"), 0.05)
    # upstream hook compounds (docs/algorithm.md#mask-loss): 5004 iters/epoch x 100 epochs -> ~0.066 after epoch 1,
    # ~0.0037 after epoch 2, ~1e-6 after epoch 3, while a true cosine is still ~0.1
    total = 5004 * 100
    assert abs(mask_loss_weight_at(5004, total, 0.1, "upstream") - 0.066) < 0.002
    assert abs(mask_loss_weight_at(2 * 5004, total, 0.1, "upstream") - 0.0037) < 0.0003
    assert mask_loss_weight_at(3 * 5004, total, 0.1, "upstream") < 2e-6
    assert mask_loss_weight_at(3 * 5004, total, 0.1, "cosine") > 0.099
    with pytest.raises(ValueError, match="constant"):
        mask_loss_weight_at(1, 10, 0.1, "linear")


def test_bad_inputs_give_clear_errors():
    model = _model()
    x, y = _batch()
    with pytest.raises(ValueError, match="at least 2"):
        model.training_step(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        model.training_step(x, y + 10)
    with pytest.raises(TypeError, match="integer"):
        model.training_step(x, y.float())
    with pytest.raises(ValueError, match="channels"):
        model.training_step(x[:, :1], y)
    with pytest.raises(ValueError, match="alpha"):
        AutoMix("resnet_tiny_cifar", 5, alpha=0)


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
def test_loss_decreases_on_real_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8]
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 10, in_chans=1)
    opt = torch.optim.SGD(model.online_parameters() + model.mix_block_parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    losses, total = [], 40
    for step in range(total):
        idx = torch.randint(0, len(y), (64,), generator=g)
        out = model.training_step(x[idx], y[idx], step, total, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.momentum_update(step, total)
        losses.append(out["loss_one_q"].item())
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8


@pytest.mark.parametrize("name,kwargs,size", [
    ("resnet18_cifar", {}, 32),
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 4}, 32),
    ("convnext_atto", {}, 64),
])
def test_backbones_construct_and_step(name, kwargs, size):
    torch.manual_seed(0)
    model = AutoMix(name, 4, **kwargs)
    x, y = _batch(n=4, size=size, classes=4)
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["mask_mb"].shape == (4, 2, size, size)
    assert any(p.grad is not None for p in model.mix_block_parameters())


@pytest.mark.parametrize("name,kwargs,size", [
    ("resnet_tiny_cifar", {}, 16),
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 4}, 32),
    ("convnext_atto", {}, 64),
])
def test_full_momentum_pass_gives_the_same_feature_map(name, kwargs, size):
    torch.manual_seed(0)
    model = AutoMix(name, 4, **kwargs).eval()
    x, _ = _batch(n=3, size=size)
    assert torch.equal(model.feature_map(x, stop_early=False), model.feature_map(x))


@pytest.mark.slow
def test_imagenet_resnet50_at_224_px():
    torch.manual_seed(0)
    model = AutoMix("resnet50", 10, lam_concat=True, end_momentum=0.99999)
    assert model.mix_block.in_channels == 1024 and model.mix_block.lam_concat
    x, y = _batch(n=2, size=224, classes=10)
    out = model.training_step(x, y, 0, 10, generator=torch.Generator().manual_seed(0))
    assert model.feature_map(x).shape == (2, 1024, 14, 14)
    assert out["mask_mb"].shape == (2, 2, 224, 224)
    out["loss"].backward()
