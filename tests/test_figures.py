"""Figures that teach: distinct pairs (no image mixed with itself) and curves that keep losses on the loss axis."""
import matplotlib.pyplot as plt
import pytest
import torch

from automix_lite import MIXERS, mix
from automix_lite.views.viz import derangement, mix_distinct_pairs, plot_curves, split_curve_keys


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16])
def test_derangement_is_a_permutation_without_fixed_points(n):
    for seed in range(30):
        perm = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(n))
        assert (perm != torch.arange(n)).all()


def test_derangement_is_reproducible_and_random():
    a = derangement(8, torch.Generator().manual_seed(1))
    assert torch.equal(a, derangement(8, torch.Generator().manual_seed(1)))
    draws = {tuple(derangement(8, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(draws) > 10  # not one fixed cycle
    with pytest.raises(ValueError, match="n >= 2"):
        derangement(1)


def test_the_mixers_random_pairing_has_fixed_points_the_figures_avoid():
    # the reason for the helper: the mixers' default pairing leaves a photo paired with itself in a 4-photo batch
    # most of the time, which a figure would show as an unmixed image
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    hits = sum(bool((mix(x, y, "mixup", generator=torch.Generator().manual_seed(s)).perm == torch.arange(4)).any())
               for s in range(100))
    assert hits > 30
    assert all((mix_distinct_pairs(x, y, "mixup", lam=0.5).perm != torch.arange(4)).all() for _ in range(20))


@pytest.mark.parametrize("method", [m for m in MIXERS if m != "vanilla"])
def test_mix_distinct_pairs_is_an_unmodified_mix_draw_without_fixed_points(method):
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4)
    out = mix_distinct_pairs(x, y, method, lam=0.5)
    assert (out.perm != torch.arange(4)).all()
    ref = mix(x, y, method, lam=0.5, generator=torch.Generator().manual_seed(out.seed))  # the same draw
    assert torch.equal(out.images, ref.images) and torch.equal(out.perm, ref.perm)
    assert torch.equal(out.target_b, y[out.perm])


def _history():
    terms = {"loss": 2.0, "loss_one_q": 1.0, "loss_mix_q": 1.1, "loss_mix_k": 1.2, "loss_mask": 0.01,
             "lam_mb": 0.4, "lam_bb": 0.6, "fallback": 0.0, "mb_trained": 1.0, "mask_loss_weight": 0.1}
    return [{"epoch": e, "train": {k: v / e for k, v in terms.items()},
             "val": {"one_k": 10.0 * e, "one_q": 11.0 * e}} for e in (1, 2, 3)]


def _labels(ax):
    return sorted(line.get_label() for line in ax.get_lines())


def test_split_curve_keys():
    losses, others = split_curve_keys(_history()[0]["train"])
    assert losses == ["loss", "loss_mask", "loss_mix_k", "loss_mix_q", "loss_one_q"]
    assert others == ["fallback", "lam_bb", "lam_mb", "mask_loss_weight", "mb_trained"]


def test_plot_curves_puts_only_losses_on_the_loss_axis():
    fig = plot_curves(_history())
    by_label = {ax.get_ylabel(): ax for ax in fig.axes}
    assert set(by_label) == {"training loss", "other terms", "val top-1 (%)"}
    assert _labels(by_label["training loss"]) == ["loss", "loss_mask", "loss_mix_k", "loss_mix_q", "loss_one_q"]
    assert _labels(by_label["other terms"]) == ["fallback", "lam_bb", "lam_mb", "mask_loss_weight", "mb_trained"]
    assert _labels(by_label["val top-1 (%)"]) == ["one_k", "one_q"]
    plt.close(fig)


def test_plot_curves_vanilla_history_has_no_other_axis(tmp_path):
    history = [{"epoch": e, "train": {"loss": 1.0 / e}, "val": {"top1": 5.0 * e}} for e in (1, 2)]
    fig = plot_curves(history, path=tmp_path / "c.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["training loss", "val top-1 (%)"]
    assert (tmp_path / "c.png").stat().st_size > 1000
    plt.close(fig)


def test_mask_snapshots_survive_a_new_session_through_their_file(tmp_path):
    from automix_lite import AutoMix
    from automix_lite.views.viz import MaskSnapshots, real_photos

    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 4)
    photos = real_photos(16)
    path = tmp_path / "snaps.pt"
    first = MaskSnapshots(photos, (0.5,), (0.25,), path=path)
    first.record(model, 1)
    first.record(model, 2)
    again = MaskSnapshots(photos, (0.5,), (0.25,), path=path)  # e.g. after a Colab disconnect
    assert sorted(again.masks) == [1, 2]
    torch.testing.assert_close(again.masks[2], first.masks[2])
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    with pytest.raises(ValueError, match="other pairs"):
        MaskSnapshots(photos, (0.5,), (0.25,), perm=torch.tensor([3, 0, 1, 2]), path=path)
    assert MaskSnapshots(photos, (0.5,), (0.25,)).masks == {}  # no path: nothing loaded


def test_masks_png_pairs_of_a_hand_crafted_mixer_are_distinct():
    """masks.png for a hand-crafted mixer: the first seed from cfg.seed whose pairing has no fixed point."""
    import torch

    from automix_lite.core.mixing import mix
    from automix_lite.core.models import Classifier
    from automix_lite.trainer.config import TrainConfig
    from automix_lite.views.figures import figure_mix

    x, y = torch.randn(8, 3, 16, 16), torch.arange(8)
    seed = next(s for s in range(100)  # a seed whose own draw pairs some image with itself
                if (mix(x, y, "cutmix", generator=torch.Generator().manual_seed(s)).perm == torch.arange(8)).any())
    cfg = TrainConfig.preset("quick", method="cutmix", seed=seed, alpha=1.0)
    own, perm, title = figure_mix(Classifier("resnet_tiny_cifar", 10), cfg, x, y)
    assert title == "cutmix" and own.shape == (8, 1, 16, 16)
    assert (perm != torch.arange(8)).all()


def test_curves_use_whole_epochs_and_mask_figures_have_a_colour_bar(tmp_path):
    import matplotlib.pyplot as plt

    from automix_lite.views.viz import plot_automix_masks, plot_curves

    history = [{"epoch": e, "train": {"loss": 1.0 / e}, "val": {"top1": 10.0 * e}} for e in (1, 2, 3)]
    fig = plot_curves(history)
    fig.canvas.draw()
    ticks = [t for ax in fig.axes for t in ax.get_xticks()]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no 1.5 epochs
    plt.close(fig)
    x = torch.rand(3, 3, 8, 8)
    fig = plot_automix_masks(x, torch.rand(3, 1, 8, 8), x, perm=torch.tensor([1, 2, 0]))
    assert "weight" in fig.axes[-1].get_ylabel()  # the [0, 1] scale of the mask column
    plt.close(fig)
