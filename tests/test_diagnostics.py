"""diagnostics: mask structure / diversity and curve stability, by hand and on real runs."""
import math

import pytest
import torch

from automix_lite import AutoMix
from automix_lite.trainer import diagnostics as D


def _hist(*vals, heads=("one_k", "one_q")):
    """history records: vals[e] is a tuple of top-1s, one per head (None = epoch not evaluated)."""
    return [{"epoch": e + 1, **({"val": dict(zip(heads, v))} if v is not None else {})} for e, v in enumerate(vals)]


def test_mask_structure_by_hand():
    flat = torch.full((3, 1, 4, 4), 0.7)
    assert D.mask_structure(flat) == pytest.approx(0.0, abs=1e-12)
    half = torch.zeros(2, 1, 4, 4)
    half[:, :, :, :2] = 1.0  # binary half/half: std 0.5
    assert D.mask_structure(half) == pytest.approx(0.5)
    # per-mask population std, then the mean over masks: [0.25, 0.75] -> 0.25, flat -> 0
    two = torch.tensor([[[[0.25, 0.75]]], [[[0.6, 0.6]]]])  # [2, 1, 1, 2]
    assert D.mask_structure(two) == pytest.approx(0.125)
    # a Mix Block output [N, 2, H, W]: channel 0 (own weight) is measured, [N, H, W] works too
    assert D.mask_structure(torch.cat([two, 1 - two], 1)) == pytest.approx(0.125)
    assert D.mask_structure(two[:, 0]) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="masks must be"):
        D.mask_structure(torch.zeros(4, 4))


def test_mask_diversity_sees_shapes_not_areas():
    base = torch.zeros(1, 1, 4, 4)
    base[..., :2] = 1.0  # left half
    # the same pattern at three different areas (offsets): identical shapes -> 0
    same = torch.cat([base * 0.5, base * 0.5 + 0.2, base * 0.5 + 0.4])
    assert D.mask_diversity(same) == pytest.approx(0.0, abs=1e-6)  # float32 inputs
    # left half vs right half: centred values ±0.5 of opposite sign -> std across the pair 0.5 at every pixel
    assert D.mask_diversity(torch.cat([base, base.flip(-1)])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two masks"):
        D.mask_diversity(base)


def test_max_top1_drop():
    rising = _hist((10, 20), (30, 40), (50, 60))
    assert D.max_top1_drop(rising) == {"max_drop": 0.0, "head": None, "epoch": None}
    # one_q falls 44 -> 10 at epoch 3 (the old quick preset's collapse), one_k dips 2 points at epoch 4
    hist = _hist((20, 30), (25, 44), (30, 10), (28, 50))
    assert D.max_top1_drop(hist) == {"max_drop": 34.0, "head": "one_q", "epoch": 3}
    assert D.max_top1_drop(hist, heads=["one_k"]) == {"max_drop": 2.0, "head": "one_k", "epoch": 4}
    # epochs without evaluation are skipped: consecutive *evaluations* are compared
    assert D.max_top1_drop(_hist((50, 50), None, (45, 52)))["max_drop"] == 5.0
    assert D.max_top1_drop([])["max_drop"] == 0.0


def test_run_diagnostics_flags_collapse_and_flatness():
    flat = torch.full((8, 1, 4, 4), 0.6)
    d = D.run_diagnostics(_hist((20, 30), (25, 44), (30, 10)), flat)
    assert d["collapse"] and d["max_top1_drop"] == 34.0 and d["max_drop_head"] == "one_q"
    assert not d["structured"] and d["mask_std"] == pytest.approx(0.0, abs=1e-12)
    assert d["mask_area"] == [0.6] * D.FIGURE_ROWS  # only the pairs the figure draws
    blobs = torch.zeros(8, 1, 4, 4)
    for i in range(8):
        blobs[i, 0, i % 4, :] = 1.0  # a different row per pair
    d = D.run_diagnostics(_hist((20, 30), (24, 31)), blobs)
    assert not d["collapse"] and d["structured"] and d["mask_diversity"] > 0.1
    assert "mask_std" not in D.run_diagnostics(_hist((1, 2)))  # no masks: stability only
    line = D.format_diagnostics(d)
    assert "structured" in line and "no collapse" in line


def test_figure_masks_are_the_figure_pairs():
    perm = D.figure_pairs(5)
    assert perm.tolist() == [4, 0, 1, 2, 3] and not bool((perm == torch.arange(5)).any())
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 10).eval()
    x = torch.randn(4, 3, 32, 32)
    own, p = D.figure_masks(model, x)
    assert own.shape == (4, 1, 32, 32) and torch.equal(p, torch.roll(torch.arange(4), 1))
    torch.testing.assert_close(own, model.generate_mask(x, 0.5, p)[:, :1], rtol=0, atol=0)
    # an untrained Mix Block (N(0, 0.01) convs): uniform attention, flat masks -> below the threshold
    assert D.mask_structure(own) < 0.01 < D.STRUCTURE_MIN
    assert not math.isnan(D.mask_diversity(own))


# The main job itself (the quick preset, seed 0, as typed) is checked for structured masks, no collapse and
# figure/metric agreement in tests/test_main_job.py.
