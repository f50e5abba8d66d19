"""Invariants of automix_lite.core.mixing: every mixer, the pure mask builders, the mixed loss, ManifoldMix hooks."""

import pytest
import torch
import torch.nn.functional as F

from automix_lite.core.mixing import (
    MIXERS,
    MixOutput,
    box_mask,
    cutmix_box,
    fmix_mask,
    grid_mask,
    manifold_forward,
    mix,
    mix_images,
    mix_loss,
    sample_lam,
    sample_perm,
    smooth_mask,
    soft_targets,
    spectral_residual_saliency,
)

ALL = list(MIXERS)
MASKED = [m for m in ALL if m != "manifoldmix"]
PAIRING = [m for m in ALL if m != "vanilla"]
BOX = ["vanilla", "cutmix", "resizemix", "saliencymix"]  # binary rectangular masks: lam is an exact area
N, K = 6, 5


def batch(n=N, c=3, h=24, w=40, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g).to(dtype), torch.randint(0, K, (n,), generator=g)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- every mixer

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ALL)
def test_shapes_dtypes_targets_and_input_untouched(method, dtype):
    x, y = batch(dtype=dtype)
    x0 = x.clone()
    out = mix(x, y, method, generator=gen())
    assert isinstance(out, MixOutput) and out.method == method
    assert out.images.shape == x.shape and out.images.dtype == dtype
    assert out.images.data_ptr() != x.data_ptr()
    assert torch.equal(x, x0)
    assert torch.equal(out.perm.sort().values, torch.arange(N)) and out.perm.dtype == torch.long
    assert torch.equal(out.target_a, y) and torch.equal(out.target_b, y[out.perm])
    assert out.lam.shape == (N,) and out.lam.dtype == torch.float32
    assert ((out.lam >= 0) & (out.lam <= 1)).all()
    if method == "manifoldmix":
        assert out.mask is None and out.stage in (0, 1, 2, 3) and torch.equal(out.images, x)
    else:
        assert out.mask.shape == (N, 1, 24, 40) and out.mask.dtype == torch.float32
        assert ((out.mask >= 0) & (out.mask <= 1)).all()


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("method", MASKED)
def test_lam_is_mask_mean_and_images_follow_mask(method, c):
    x, y = batch(c=c)
    for seed in range(3):
        out = mix(x, y, method, generator=gen(seed))
        torch.testing.assert_close(out.lam, out.mask.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
        if method != "resizemix":  # resizemix pastes a *resized* partner, not x[perm]
            torch.testing.assert_close(out.images, mix_images(x, out.mask, out.perm))


@pytest.mark.parametrize("method", BOX)
def test_box_methods_lam_is_exact_area(method):
    x, y = batch()
    for seed in range(4):
        out = mix(x, y, method, generator=gen(seed))
        m = out.mask
        assert ((m == 0) | (m == 1)).all()
        assert torch.equal(out.lam, (m.sum(dim=(1, 2, 3)) / (24 * 40)).float())
        for i in range(N):  # the partner region is one axis-aligned rectangle
            rows, cols = torch.nonzero(m[i, 0] == 0, as_tuple=True)
            if len(rows):
                area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert area == len(rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ALL)
def test_lam_one_is_identity(method, dtype):
    x, y = batch(dtype=dtype)
    out = mix(x, y, method, generator=gen(), lam=1.0)
    assert torch.equal(out.images, x)
    assert torch.equal(out.lam, torch.ones(N))
    if out.mask is not None:
        assert torch.equal(out.mask, torch.ones_like(out.mask))
    logits = torch.randn(N, K)
    torch.testing.assert_close(mix_loss(logits, out), F.cross_entropy(logits, y))


@pytest.mark.parametrize("method", ["mixup", "fmix", "smoothmix", "gridmix", "resizemix"])
def test_lam_zero_gives_the_partner(method):
    x, y = batch()
    out = mix(x, y, method, generator=gen(), lam=0.0)
    assert torch.equal(out.lam, torch.zeros(N))
    torch.testing.assert_close(out.images, x[out.perm], atol=1e-5, rtol=0)


@pytest.mark.parametrize("lam", [0.1, 0.37, 0.8])
def test_forced_lam_is_respected(lam):
    x, y = batch()
    g = gen()
    assert torch.allclose(mix(x, y, "mixup", generator=g, lam=lam).lam, torch.tensor(lam))
    assert torch.allclose(mix(x, y, "manifoldmix", generator=g, lam=lam).lam, torch.tensor(lam))
    assert (mix(x, y, "fmix", generator=g, lam=lam).lam - lam).abs().max() <= 0.5 / (24 * 40) + 1e-6
    assert (mix(x, y, "smoothmix", generator=g, lam=lam).lam - lam).abs().max() < 1e-4
    assert (mix(x, y, "resizemix", generator=g, lam=lam).lam - lam).abs().max() < 0.1  # rounded patch sides
    for method in ("cutmix", "saliencymix"):  # clipping only shrinks the box
        assert (mix(x, y, method, generator=g, lam=lam).lam >= lam - 1e-6).all()
    xs, ys = batch(n=64, h=16, w=16)
    realised = mix(xs, ys, "gridmix", generator=g, lam=lam, cells=8).lam.mean()
    assert abs(realised - lam) < 0.05  # 4096 Bernoulli(lam) cells


@pytest.mark.parametrize("method", ALL)
def test_same_seed_same_output_different_seed_different(method):
    x, y = batch()
    a, b, c = (mix(x, y, method, generator=gen(s)) for s in (7, 7, 8))
    for f in ("images", "lam", "perm", "mask", "stage"):
        va, vb = getattr(a, f), getattr(b, f)
        assert (va == vb) if not isinstance(va, torch.Tensor) else torch.equal(va, vb)
    if method == "vanilla":
        assert torch.equal(a.images, c.images)
    else:
        assert not (torch.equal(a.lam, c.lam) and torch.equal(a.perm, c.perm) and torch.equal(a.images, c.images))
        if method != "manifoldmix":
            assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("shape", [(1, 24, 40), (3, 40, 24), (3, 8, 8)])
def test_non_square_and_channels(method, shape):
    c, h, w = shape
    x, y = batch(c=c, h=h, w=w)
    out = mix(x, y, method, generator=gen(1))
    assert out.images.shape == x.shape
    if out.mask is not None:
        assert out.mask.shape == (N, 1, h, w)
        torch.testing.assert_close(out.lam, out.mask.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- loss and targets

def per_sample_lam_output():
    x, y = batch()
    out = mix(x, y, "gridmix", generator=gen(3))
    out.lam = torch.linspace(0.05, 0.95, N)  # distinct per-sample weights
    return out


def test_mix_loss_is_lambda_weighted_ce():
    out = per_sample_lam_output()
    logits = torch.randn(N, K)
    logp = logits.log_softmax(1)
    hand = torch.stack([-(out.lam[i] * logp[i, out.target_a[i]] + (1 - out.lam[i]) * logp[i, out.target_b[i]])
                        for i in range(N)]).mean()
    torch.testing.assert_close(mix_loss(logits, out), hand)


@pytest.mark.parametrize("s", [0.0, 0.1, 0.3])
def test_mix_loss_smoothing_matches_torch(s):
    out = per_sample_lam_output()
    logits = torch.randn(N, K)
    ce = lambda t: F.cross_entropy(logits, t, label_smoothing=s, reduction="none")  # noqa: E731
    expected = (out.lam * ce(out.target_a) + (1 - out.lam) * ce(out.target_b)).mean()
    torch.testing.assert_close(mix_loss(logits, out, smoothing=s), expected)
    soft = soft_targets(out, K, smoothing=s)
    torch.testing.assert_close(soft.sum(1), torch.ones(N))  # mixed targets weigh to 1
    torch.testing.assert_close(F.cross_entropy(logits, soft), mix_loss(logits, out, smoothing=s))


def test_mix_loss_bad_inputs():
    out = per_sample_lam_output()
    with pytest.raises(ValueError, match="logits"):
        mix_loss(torch.randn(N + 1, K), out)
    with pytest.raises(ValueError, match="smoothing"):
        mix_loss(torch.randn(N, K), out, smoothing=1.0)


# ----------------------------------------------------------------------------- errors and dispatch

@pytest.mark.parametrize("method", PAIRING)
def test_batch_of_one_is_a_clear_error(method):
    x, y = batch(n=1)
    with pytest.raises(ValueError, match="at least 2"):
        mix(x, y, method)


def test_vanilla_accepts_batch_of_one():
    x, y = batch(n=1)
    assert torch.equal(mix(x, y, "vanilla").images, x)


def test_unknown_method_suggests_closest():
    x, y = batch()
    with pytest.raises(ValueError, match="Did you mean 'cutmix'"):
        mix(x, y, "cutmx")
    with pytest.raises(ValueError, match="Did you mean 'saliencymix'"):
        mix(x, y, "salencymix")
    assert mix(x, y, "CutMix", generator=gen()).method == "cutmix"


def test_callable_method_and_bad_returns():
    x, y = batch()
    calls = []

    def frozen_mixer(x, y, *, alpha=1.0, generator=None, **kw):
        calls.append((alpha, kw))
        return MIXERS["mixup"](x, y, alpha=alpha, generator=generator, **kw)

    out = mix(x, y, frozen_mixer, alpha=0.5, generator=gen(), lam=0.25)
    assert calls == [(0.5, {"lam": 0.25})] and torch.allclose(out.lam, torch.tensor(0.25))
    with pytest.raises(TypeError, match="MixOutput"):
        mix(x, y, lambda x, y, **kw: x)
    with pytest.raises(TypeError, match="method"):
        mix(x, y, 3)
    with pytest.raises(TypeError, match="unexpected options"):
        mix(x, y, "cutmix", cells=4)


@pytest.mark.parametrize("bad, err, match", [
    (dict(x=torch.zeros(N, 3, 8, 8, dtype=torch.long)), TypeError, "floating-point"),
    (dict(x=torch.zeros(3, 8, 8)), ValueError, "4-D"),
    (dict(y=torch.zeros(N)), TypeError, "integer"),
    (dict(y=torch.zeros(N + 1, dtype=torch.long)), ValueError, "one label per image"),
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(lam=1.5), ValueError, "lam"),
    (dict(lam=-0.1), ValueError, "lam"),
])
@pytest.mark.parametrize("method", ["mixup", "cutmix", "fmix", "manifoldmix"])
def test_bad_inputs_are_clear_errors(method, bad, err, match):
    x, y = batch(h=8, w=8)
    args = dict(x=x, y=y, alpha=1.0) | {k: v for k, v in bad.items() if k != "lam"}
    kw = {"lam": bad["lam"]} if "lam" in bad else {}
    with pytest.raises(err, match=match):
        mix(args["x"], args["y"], method, alpha=args["alpha"], **kw)


# ----------------------------------------------------------------------------- building blocks

def test_sample_lam_and_perm():
    g = gen()
    lams = torch.tensor([sample_lam(2.0, g) for _ in range(2000)])
    assert ((lams > 0) & (lams < 1)).all()
    assert abs(lams.mean() - 0.5) < 0.03 and abs(lams.var() - 1 / 20) < 0.01  # Beta(2, 2): var 1/20
    small = torch.tensor([sample_lam(0.2, g) for _ in range(2000)])
    assert ((small < 0.1) | (small > 0.9)).float().mean() > 0.5  # U-shaped for alpha < 1
    assert sample_lam(1.0, gen(5)) == sample_lam(1.0, gen(5))
    with pytest.raises(ValueError):
        sample_lam(0.0)
    assert torch.equal(sample_perm(10, gen(1)), sample_perm(10, gen(1)))
    assert torch.equal(sample_perm(10, gen(1)).sort().values, torch.arange(10))
    with pytest.raises(ValueError, match="pairing needs a batch of at least 2"):
        sample_perm(1)


@pytest.mark.parametrize("h, w", [(24, 40), (32, 32), (7, 13)])
def test_cutmix_box_area_and_mask(h, w):
    g = gen()
    for lam in torch.linspace(0, 1, 21).tolist():
        y0, y1, x0, x1 = cutmix_box(h, w, lam, g)
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        area = (y1 - y0) * (x1 - x0)
        assert 1 - area / (h * w) >= lam - 1e-9  # clipping and rounding only shrink the box
        m = box_mask(h, w, (y0, y1, x0, x1))
        assert m.shape == (1, 1, h, w) and m.sum() == h * w - area
        assert (m[0, 0, y0:y1, x0:x1] == 0).all()
    y0, y1, x0, x1 = cutmix_box(h, w, 1.0, g)
    assert y0 == y1 and x0 == x1  # empty box at lam = 1
    unclipped = cutmix_box(h, w, 0.75, center=(h // 2, w // 2))
    assert unclipped == (h // 2 - int(h * 0.5) // 2, h // 2 + int(h * 0.5) // 2,
                         w // 2 - int(w * 0.5) // 2, w // 2 + int(w * 0.5) // 2)


def boundary_length(m):  # [n, 1, h, w] binary -> number of unequal neighbour pairs per mask
    return ((m[..., 1:, :] != m[..., :-1, :]).sum((1, 2, 3)) + (m[..., 1:] != m[..., :-1]).sum((1, 2, 3))).float()


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.93, 1.0])
def test_fmix_mask_exact_area_and_low_frequency(lam):
    n, h, w = 8, 32, 48
    m = fmix_mask(n, h, w, lam, gen())
    assert m.shape == (n, 1, h, w) and ((m == 0) | (m == 1)).all()
    assert (m.sum((1, 2, 3)) == round(lam * h * w)).all()
    if 0 < lam < 1:  # far fewer edges than a random mask of the same area
        shuffled = m.flatten(1)[:, torch.randperm(h * w, generator=gen(1))].reshape(m.shape)
        assert (boundary_length(m) < 0.3 * boundary_length(shuffled)).all()
    assert torch.equal(m, fmix_mask(n, h, w, lam, gen()))


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.5, 0.9, 1.0])
def test_smooth_mask_is_soft_with_mass_lam(lam):
    m = smooth_mask(8, 24, 40, lam, gen())
    assert ((m >= 0) & (m <= 1)).all()
    assert (m.mean((1, 2, 3)) - lam).abs().max() < 1e-4
    if 0 < lam < 1:
        assert ((m > 0.01) & (m < 0.99)).any()  # soft, not binary
        step = max((m[..., 1:, :] - m[..., :-1, :]).abs().max(), (m[..., 1:] - m[..., :-1]).abs().max())
        assert step < 0.6  # no hard edge anywhere (a box mask jumps by 1)


def test_grid_mask_cells_are_constant():
    m = grid_mask(5, 24, 40, 0.5, gen(), cells=4)
    assert ((m == 0) | (m == 1)).all()
    for i in range(4):  # rows 6i..6i+5, columns 10j..10j+9 form one cell
        for j in range(4):
            cell = m[:, 0, 6 * i:6 * i + 6, 10 * j:10 * j + 10]
            assert (cell == cell[:, :1, :1]).all()
    assert torch.equal(grid_mask(5, 24, 40, 1.0, gen()), torch.ones(5, 1, 24, 40))
    assert torch.equal(grid_mask(5, 24, 40, 0.0, gen()), torch.zeros(5, 1, 24, 40))


def blob_image(h, w, cy, cx, sigma=1.5, c=3):
    ys, xs = torch.arange(h)[:, None].float(), torch.arange(w)[None].float()
    img = 0.3 + 0.6 * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))
    return img.expand(c, h, w)


@pytest.mark.parametrize("h, w", [(24, 40), (32, 32), (64, 64)])
def test_spectral_residual_saliency_peaks_on_blob(h, w):
    centres = [(h // 4, w // 4), (h // 2, 3 * w // 4), (3 * h // 4, w // 3)]
    x = torch.stack([blob_image(h, w, cy, cx) for cy, cx in centres])
    sal = spectral_residual_saliency(x)
    assert sal.shape == (3, h, w) and sal.dtype == torch.float32
    assert (sal >= 0).all() and torch.allclose(sal.flatten(1).amax(1), torch.ones(3))
    for i, (cy, cx) in enumerate(centres):
        p = sal[i].argmax().item()
        assert abs(p // w - cy) <= 2 and abs(p % w - cx) <= 2


def test_saliencymix_box_centred_on_partner_peak():
    h, w = 32, 48
    centres = [(10, 14), (20, 30), (16, 24), (12, 34)]
    x = torch.stack([blob_image(h, w, cy, cx) for cy, cx in centres])
    y = torch.arange(4)
    for seed in range(3):
        out = mix(x, y, "saliencymix", generator=gen(seed), lam=0.9)  # small boxes: never clipped here
        for i in range(4):
            rows, cols = torch.nonzero(out.mask[i, 0] == 0, as_tuple=True)
            cy, cx = centres[out.perm[i]]
            assert abs(rows.float().mean() - cy) <= 1.5 and abs(cols.float().mean() - cx) <= 1.5


def test_resizemix_pastes_resized_partner():
    x, y = batch(h=24, w=40)
    out = mix(x, y, "resizemix", generator=gen(2), lam=0.75)
    rows, cols = torch.nonzero(out.mask[0, 0] == 0, as_tuple=True)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert (y1 - y0, x1 - x0) == (12, 20)  # scale sqrt(1 - 0.75) = 0.5
    patch = F.interpolate(x[out.perm], size=(12, 20), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out.images[:, :, y0:y1, x0:x1], patch)
    keep = out.mask.bool().expand_as(x)
    assert torch.equal(out.images[keep], x[keep])


# ----------------------------------------------------------------------------- ManifoldMix

@pytest.fixture(scope="module")
def resnet():
    import timm

    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=K).eval()


def _stage_modules(model):
    from automix_lite.core.models import stage_modules

    return stage_modules(model)


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("stage", [0, 1, 2, 3, 4])
def test_manifold_forward_mixes_the_chosen_stage(resnet, stage):
    names = ["act1", "layer1", "layer2", "layer3", "layer4"]
    consumers = ["maxpool", "layer2", "layer3", "layer4", "global_pool"]
    assert _stage_modules(resnet)[stage] is getattr(resnet, names[stage])  # contract: timm feature_info order
    x, y = batch(n=4, h=32, w=32)
    out = mix(x, y, "manifoldmix", generator=gen(stage))
    out.lam = torch.tensor([0.2, 0.5, 0.7, 0.9])  # per-sample weights broadcast over the feature map
    out.perm = torch.tensor([2, 0, 3, 1])  # no fixed point, so every sample really changes

    seen = {}
    clean_h = getattr(resnet, names[stage]).register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    fed = getattr(resnet, consumers[stage]).register_forward_pre_hook(lambda m, i: seen.__setitem__("in", i[0]))
    with torch.no_grad():
        clean_logits = resnet(x)
        h = seen["h"]
        mixed_logits = manifold_forward(resnet, out.images, out, stage=stage)
    clean_h.remove(), fed.remove()
    lam = out.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["in"], lam * h + (1 - lam) * h[out.perm])
    assert not torch.allclose(mixed_logits, clean_logits)
    assert _hook_count(resnet) == 0

    out.lam = torch.ones(4)  # lam = 1: the network is untouched
    with torch.no_grad():
        torch.testing.assert_close(manifold_forward(resnet, x, out, stage=stage), clean_logits)


def test_manifold_forward_stage_defaults_clipping_and_cleanup(resnet):
    x, y = batch(n=4, h=32, w=32)
    out = mix(x, y, "manifoldmix", generator=gen(), lam=0.5)
    with torch.no_grad():
        ref = manifold_forward(resnet, x, out, stage=out.stage)
        torch.testing.assert_close(manifold_forward(resnet, x, out), ref)  # default: out.stage
        out.stage = 99  # clipped to the last stage
        torch.testing.assert_close(manifold_forward(resnet, x, out), manifold_forward(resnet, x, out, stage=4))
    with pytest.raises(ValueError, match="stage"):
        manifold_forward(resnet, x, out, stage=5)
    out.stage = None
    with pytest.raises(ValueError, match="manifoldmix"):
        manifold_forward(resnet, x, out)
    with pytest.raises(RuntimeError):  # wrong input channels: the hook is still removed
        manifold_forward(resnet, x[:, :1], mix(x, y, "manifoldmix", generator=gen()), stage=0)
    assert _hook_count(resnet) == 0
    assert mix(x, y, "manifoldmix", generator=gen(), num_stages=2).stage in (0, 1)
