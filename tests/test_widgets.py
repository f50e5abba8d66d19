"""The mask explorer's plain functions (driven headlessly) and the notebook helpers in viz.py."""
import numpy as np
import pytest
import torch

from automix_lite import MIXERS, AutoMix
from automix_lite.views.viz import MaskSnapshots, plot_mask_evolution, plot_panels, real_photos
from automix_lite.views.widgets import AUTOMIX_METHODS, build_explorer, explore, explorer_methods

SIZE = 32


@pytest.fixture(scope="module")
def photos():
    return real_photos(SIZE)  # [4, 3, 32, 32]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AutoMix("resnet_tiny_cifar", 4)


def test_real_photos_are_distinct_rgb_in_unit_range(photos):
    assert photos.shape == (4, 3, SIZE, SIZE)
    assert 0 <= float(photos.min()) and float(photos.max()) <= 1
    flat = photos.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1e9).min() > 1.0  # four different photos


@pytest.mark.parametrize("method", explorer_methods())
def test_explore_shapes_ranges_and_lam_one_identity(photos, model, method):
    res = explore(photos, 0, 1, 0.6, method, model)
    assert res["mixed"].shape == (SIZE, SIZE, 3) and res["mask"].shape == (SIZE, SIZE)
    assert res["attention"].shape == (SIZE, SIZE)
    for key in ("mixed", "mask", "attention"):
        assert np.isfinite(res[key]).all() and res[key].min() >= 0 and res[key].max() <= 1
    assert res["attention"].max() == pytest.approx(1.0)  # scaled to max 1
    own, partner = photos[0].permute(1, 2, 0).numpy(), photos[1].permute(1, 2, 0).numpy()
    if method not in ("resizemix", "manifoldmix"):  # pixel-mask methods: mixed = m x_i + (1 - m) x_j
        m = res["mask"][..., None]
        np.testing.assert_allclose(res["mixed"], m * own + (1 - m) * partner, atol=1e-5)
    if method != "automix":  # λ = 1 keeps image i (raw AutoMix masks ignore λ without lam_concat)
        one = explore(photos, 0, 1, 1.0, method, model)
        np.testing.assert_allclose(one["mixed"], own, atol=1e-6)


@pytest.mark.parametrize("method", [m for m in MIXERS if m not in ("vanilla", "manifoldmix", "gridmix")])
def test_mask_methods_mask_mean_equals_label_lam(photos, method):
    res = explore(photos, 2, 3, 0.4, method)
    assert float(res["mask"].mean()) == pytest.approx(float(res["lam"]), abs=1e-5)
    assert 0 < float(res["lam"]) < 1  # really mixed with the partner


def test_automix_adjusted_area_is_lam(photos, model):
    for lam in (0.2, 0.5, 0.8):
        res = explore(photos, 0, 2, lam, "automix_adjusted", model)
        assert float(res["mask"].mean()) == pytest.approx(lam, abs=1e-3)


def test_explore_is_deterministic_and_method_changes_output(photos):
    a = explore(photos, 0, 1, 0.5, "cutmix", seed=3)
    b = explore(photos, 0, 1, 0.5, "cutmix", seed=3)
    np.testing.assert_array_equal(a["mixed"], b["mixed"])
    c = explore(photos, 0, 1, 0.5, "mixup")
    assert np.abs(a["mixed"] - c["mixed"]).max() > 0.05
    assert np.abs(a["mask"] - c["mask"]).max() > 0.4  # binary box vs constant 0.5


def test_explore_attention_moves_with_the_query(photos, model):
    a = explore(photos, 0, 1, 0.5, "mixup", model, query=(0.0, 0.0))["attention"]
    b = explore(photos, 0, 1, 0.5, "mixup", model, query=(0.99, 0.99))["attention"]
    assert not np.allclose(a, b)
    assert not explore(photos, 0, 1, 0.5, "mixup")["attention"].any()  # no model: no attention


def test_explore_does_not_touch_the_model_or_the_images(photos, model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = photos.clone()
    model.train()
    explore(images, 0, 1, 0.5, "automix", model)
    assert model.training and model.backbone_k.training  # modes restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    assert torch.equal(images, photos)


def test_explore_rejects_bad_input(photos):
    with pytest.raises(ValueError, match="needs a trained AutoMix"):
        explore(photos, 0, 1, 0.5, "automix")
    with pytest.raises(ValueError, match="unknown method"):
        explore(photos, 0, 1, 0.5, "cutmixx")
    with pytest.raises(ValueError, match="image index"):
        explore(photos, 0, 4, 0.5, "mixup")
    with pytest.raises(ValueError, match="lam must lie"):
        explore(photos, 0, 1, 1.5, "mixup")


def test_build_explorer_headless_controls_drive_the_result(photos, model):
    ipywidgets = pytest.importorskip("ipywidgets")
    box = build_explorer(photos, model, names=["a", "b", "c", "d"], show=False)
    assert isinstance(box, ipywidgets.VBox)
    c = box.controls
    assert set(c) == {"i", "j", "lam", "method", "qy", "qx"}
    assert list(c["method"].options) == explorer_methods()
    assert box.state["result"] is not None  # drawn once at construction
    c["method"].value, c["lam"].value = "mixup", 0.25
    assert float(box.state["result"]["lam"]) == pytest.approx(0.25)
    first = box.state["result"]["mixed"]
    c["j"].value = 3
    assert np.abs(box.state["result"]["mixed"] - first).max() > 0.01  # another partner, another image
    c["method"].value = "cutmix"
    assert set(np.unique(box.state["result"]["mask"])) <= {0.0, 1.0}
    c["lam"].value = 1.0
    np.testing.assert_allclose(box.state["result"]["mixed"], photos[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_build_explorer_without_model_hides_automix(photos):
    pytest.importorskip("ipywidgets")
    box = build_explorer(photos, show=True)  # figure path runs headlessly too
    assert not set(AUTOMIX_METHODS) & set(box.controls["method"].options)
    assert box.state["error"] is None and box.state["result"] is not None


def test_mask_snapshots_record_masks_and_plot(photos, model):
    import matplotlib.pyplot as plt

    snap = MaskSnapshots(photos, mean=(0.5,), std=(0.25,))
    snap.record(model, 1)
    assert snap.masks[1].shape == (4, 1, SIZE, SIZE)
    assert 0 <= float(snap.masks[1].min()) and float(snap.masks[1].max()) <= 1
    mixed = snap.mixed(1)
    m = snap.masks[1]
    torch.testing.assert_close(mixed, photos * m + photos[snap.perm] * (1 - m))
    assert sorted(snap.perm.tolist()) == [0, 1, 2, 3]
    fig = plot_mask_evolution(snap)
    assert len(fig.axes) == 4 * 3
    plt.close(fig)
    fig = plot_panels({"a": photos[0], "m": m[0, 0]})
    assert len(fig.axes) == 2 + 1  # two panels and the colour bar of the mask's [0, 1] scale
    assert "weight" in fig.axes[-1].get_ylabel()
    plt.close(fig)
    with pytest.raises(ValueError, match="no masks recorded"):
        plot_mask_evolution(MaskSnapshots(photos, (0.5,), (0.25,)))
