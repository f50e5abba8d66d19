"""MixTargets against timm.data.Mixup and torchvision.transforms.v2.MixUp / CutMix on the same λ, pairing and box."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import automix_lite.core.masks as masks
import automix_lite.core.mixing as mixing
from automix_lite import mix
from automix_lite.core.mixing import sample_pairs
from automix_lite.transforms import MixTargets

timm = pytest.importorskip("timm")  # before any use: the peers are optional for this file, not a hard import
timm_mixup = pytest.importorskip("timm.data.mixup")
v2 = pytest.importorskip("torchvision.transforms.v2")


def _batch(n=6, k=5, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, k, (n,), generator=g)


def _force(monkeypatch, lam, centre=None):
    """Our λ and box centre, forced to the peer's draws."""
    monkeypatch.setattr(mixing, "sample_lam", lambda alpha, generator=None: lam)
    if centre is not None:
        it = iter(centre)
        monkeypatch.setattr(masks, "_randint", lambda generator, high: next(it))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_equals_timm_mixup_with_flip_pairing(monkeypatch, smoothing):
    x, y = _batch()
    lam = 0.37
    peer = timm_mixup.Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=smoothing, num_classes=5)
    monkeypatch.setattr(peer, "_params_per_batch", lambda: (lam, False))
    want_x, want_t = peer(x.clone(), y)
    _force(monkeypatch, lam)
    got_x, got_t = MixTargets(5, "mixup", smoothing=smoothing, pairing="flip")(x, y)
    assert torch.equal(got_x, want_x)
    torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-6)


@pytest.mark.parametrize("lam", [0.75, 0.4375])  # cut sides 6 and 9 of 12: timm's box covers them in full
def test_cutmix_equals_timm_cutmix_when_the_cut_side_is_even(monkeypatch, lam):
    """timm >= 1.0.29 centres an odd cut as [c - s//2, c + (s+1)//2); OpenMixup, older timm and this library as
    [c - s//2, c + s//2) (one row/column less): equal whenever the side s = int(H * sqrt(1 - λ)) is even."""
    x, y = _batch()
    side = int(12 * (1 - lam) ** 0.5)
    cy, cx = 5, 2
    np.random.seed(0)
    peer = timm_mixup.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=5)
    monkeypatch.setattr(peer, "_params_per_batch", lambda: (lam, True))
    calls = iter([cy, cx])
    monkeypatch.setattr(timm_mixup.np.random, "randint", lambda lo, hi, size=None: next(calls))
    want_x, want_t = peer(x.clone(), y)
    _force(monkeypatch, lam, centre=[cy, cx])
    got_x, got_t = MixTargets(5, "cutmix", pairing="flip")(x, y)
    if side % 2 == 0:
        assert torch.equal(got_x, want_x)
        torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-6)
    else:  # odd side: timm >= 1.0.29 adds the row cy + s//2 and the column cx + s//2 (older timm: no difference)
        rows, cols = (got_x != want_x).any(dim=(0, 1)).nonzero(as_tuple=True)
        assert bool(((rows == cy + side // 2) | (cols == cx + side // 2)).all())  # nothing else differs
        timm_version = tuple(int(p) for p in timm.__version__.split(".")[:3])
        assert (len(rows) > 0) == (timm_version >= (1, 0, 29)), timm.__version__


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_and_mixup_equal_torchvision_with_roll_pairing(monkeypatch, seed):
    x, y = _batch(n=5, size=11, seed=seed)
    for name, peer_cls in (("cutmix", v2.CutMix), ("mixup", v2.MixUp)):
        peer = peer_cls(alpha=1.0, num_classes=5)
        torch.manual_seed(seed)  # replay the peer's draws: λ, then (for CutMix) the centre column and row
        lam = float(peer._dist.sample(()))
        r_x, r_y = (int(torch.randint(11, (1,))), int(torch.randint(11, (1,)))) if name == "cutmix" else (0, 0)
        torch.manual_seed(seed)
        want_x, want_t = peer(x.clone(), y)
        with monkeypatch.context() as m:
            _force(m, lam, centre=[r_y, r_x])
            got_x, got_t = MixTargets(5, name, pairing="roll")(x, y)
        assert torch.equal(got_x, want_x), name
        torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-6)


def test_pairings():
    assert sample_pairs(4, "flip").tolist() == [3, 2, 1, 0]
    assert sample_pairs(4, "roll").tolist() == [3, 0, 1, 2]
    assert sorted(sample_pairs(5, "random", torch.Generator().manual_seed(0)).tolist()) == list(range(5))
    with pytest.raises(ValueError, match="pairing"):
        sample_pairs(4, "shuffle")
    x, y = _batch()
    out = mix(x, y, "mixup", pairing="roll")
    assert out.perm.tolist() == [5, 0, 1, 2, 3, 4] and torch.equal(out.target_b, y.roll(1))


def test_default_pairing_is_unchanged():
    """pairing='random' is the draw the trainer always made, rebuilt here from the primitives: λ, then
    torch.randperm on the same generator, then the box centre. Catches a default that moved to 'flip' / 'roll'
    or a pairing drawn from another stream or in another order."""
    x, y = _batch()
    g = torch.Generator().manual_seed(3)
    lam = mixing.sample_lam(1.0, g)
    perm = torch.randperm(6, generator=g)
    keep = masks.box_mask(12, 12, masks.cutmix_box(12, 12, lam, g))  # [1, 1, 12, 12]: 1 = own pixel
    want = x * keep + x[perm] * (1 - keep)
    for out in (mix(x, y, "cutmix", generator=torch.Generator().manual_seed(3)),
                MixTargets(5, "cutmix", generator=torch.Generator().manual_seed(3)).mix_output(x, y)):
        assert torch.equal(out.perm, perm) and torch.equal(out.images, want)
        assert torch.equal(out.target_b, y[perm])


def test_prob_switch_prob_and_smoothing():
    x, y = _batch()
    never = MixTargets(5, "mixup", prob=0.0, smoothing=0.1)
    img, t = never(x, y)
    assert img is x and torch.allclose(t, F.one_hot(y, 5) * 0.9 + 0.02)
    g = torch.Generator().manual_seed(0)
    both = MixTargets(5, {"mixup": 1.0, "cutmix": 1.0}, switch_prob=1.0, generator=g)
    assert both.mix_output(x, y).method == "cutmix"
    both.switch_prob = 0.0
    assert both.mix_output(x, y).method == "mixup"
    rates = [MixTargets(5, "mixup", prob=0.3, generator=g).mix_output(x, y) is not None for _ in range(400)]
    assert 0.2 < sum(rates) / 400 < 0.4
    _, t = MixTargets(5, "cutmix", smoothing=0.2, generator=g)(x, y)
    torch.testing.assert_close(t.sum(1), torch.ones(6))
    assert (t >= 0.2 / 5 - 1e-6).all()


def test_collate_fn_in_a_dataloader_and_soft_target_loss():
    """collate mixes each batch the loader forms exactly as a direct call with the same generator stream would,
    and its targets are the λ-weighted labels that timm's / torchvision's soft-target CE expects: catches a
    collate that drops the mix, mixes the wrong samples or returns one-hot / unnormalised targets."""
    x, y = _batch(n=8)
    t = MixTargets(5, "cutmix", generator=torch.Generator().manual_seed(1))
    ref = MixTargets(5, "cutmix", generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(x, y), batch_size=4, collate_fn=t.collate)
    batches = list(loader)
    assert len(batches) == 2
    for i, (images, targets) in enumerate(batches):
        xb, yb = x[4 * i:4 * i + 4], y[4 * i:4 * i + 4]
        out = ref.mix_output(xb, yb)
        assert torch.equal(images, out.images) and not torch.equal(images, xb)  # mixed, as the direct call
        lam = out.lam[:, None]  # [4, 1]: the realised own area of each box
        want = lam * F.one_hot(yb, 5) + (1 - lam) * F.one_hot(yb[out.perm], 5)
        torch.testing.assert_close(targets, want, rtol=0, atol=1e-6)
        logits = torch.randn(4, 5, requires_grad=True)
        loss = F.cross_entropy(logits, targets)  # the soft-target CE timm and torchvision use
        loss.backward()
        torch.testing.assert_close(loss, -(targets * logits.log_softmax(1)).sum(1).mean())
        torch.testing.assert_close(logits.grad, (logits.softmax(1) - targets).detach() / 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        MixTargets(1)
    with pytest.raises(ValueError, match="unknown method"):
        MixTargets(5, "mixupp")
    with pytest.raises(ValueError, match="one or two"):
        MixTargets(5, {"mixup": 1, "cutmix": 1, "fmix": 1})
    with pytest.raises(ValueError, match="prob"):
        MixTargets(5, prob=1.5)
    with pytest.raises(ValueError, match="manifold"):
        MixTargets(5, "manifoldmix")
    with pytest.raises(ValueError, match="pairing"):
        MixTargets(5, lambda x, y, **k: None, pairing="flip")
