"""LiveView: one figure redrawn in place every N steps (loss curves + the Mix Block's current masks)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from automix_lite import AutoMix, Classifier, TrainConfig, train
from automix_lite.views.live import LiveView
from automix_lite.views.viz import real_photos

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


class FakeDisplay:
    """Stands in for IPython's display: counts new outputs and in-place updates."""

    def __init__(self):
        self.shown, self.updates = [], []

    def __call__(self, obj, display_id=None):
        assert display_id is True  # asks for a handle it can update
        self.shown.append(obj)
        return self

    def update(self, obj):
        self.updates.append(obj)


def _artists(fig):
    return len(fig.axes), sum(len(ax.get_lines()) for ax in fig.axes), sum(len(ax.get_images()) for ax in fig.axes)


def _tiny_cfg(tmp_path, **kw):
    return TrainConfig.preset("quick", dataset="fake", img_size=SIZE, num_classes=4, train_subset=96, val_subset=16,
                              epochs=1, batch_size=16, device="cpu", out=str(tmp_path / "run"), **kw)


def test_live_view_in_training_updates_one_output_in_place(tmp_path):
    shown = FakeDisplay()
    live = LiveView(real_photos(SIZE), (0.5,), (0.25,), every=2, display=shown, path=tmp_path / "live.png")
    fig = live.fig
    frames = []
    live_show = live._show

    def spy():  # keep every frame's bytes and artist counts
        live_show()
        frames.append((live.png, _artists(live.fig)))

    live._show = spy
    result = train(_tiny_cfg(tmp_path), callbacks=[live])
    assert live.frames == len(frames) == 3  # steps 2, 4 and 6 (the last)
    assert len(shown.shown) == 1 and len(shown.updates) == live.frames - 1  # one output, updated in place
    assert live.fig is fig
    assert all(a == frames[-1][1] for _, a in frames[1:])  # no artist added after the first frame with curves
    assert len({png for png, _ in frames}) == len(frames)  # every frame differs (the curves grow)
    assert [s for s, _ in live.points] == [2, 4, 6]
    assert set(live.points[0][1]) == {"loss", "loss_one_q", "loss_mix_q", "loss_mix_k", "loss_mask"}  # losses only
    assert live.mask.shape == (4, 1, SIZE, SIZE) and 0 <= float(live.mask.min()) <= float(live.mask.max()) <= 1
    assert (tmp_path / "live.png").read_bytes() == live.png
    assert len(result.history) == 1


def test_live_view_changes_nothing_in_the_model():
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    live = LiveView(real_photos(SIZE), (0.5,), (0.25,), every=1, show=False)
    live.update(model, 1, 10)
    assert model.training and model.backbone_k.training and model.mix_block.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    own = model.generate_mask((real_photos(SIZE) - 0.5) / 0.25, 0.5, torch.tensor([1, 2, 3, 0]))[:, :1]
    torch.testing.assert_close(live.mask, own)  # the Mix Block's mask of the fixed pairs (photo i + photo i+1)


def test_live_view_without_mix_block_draws_the_curves_only():
    live = LiveView(real_photos(SIZE), (0.5,), (0.25,), every=2, show=False)
    state = type("S", (), {})()
    state.model, state.total_steps, state.epoch = Classifier("resnet_tiny_cifar", 4), 4, 0
    for step, loss in enumerate([1.0, 3.0, float("nan"), 2.0], start=1):
        state.step, state.losses = step, {"loss": loss, "lam_bb": 0.3}
        live.on_step_end(state)
    assert live.mask is None and live.frames == 2
    assert live.points == [(2, {"loss": 2.0}), (4, {"loss": 2.0})]  # NaN step left out of the mean


def test_live_view_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        LiveView(real_photos(SIZE), (0.5,), (0.25,), every=0, show=False)
    with pytest.raises(ValueError, match="N>=2"):
        LiveView(real_photos(SIZE)[:1], (0.5,), (0.25,), show=False)


def test_live_view_in_a_kernel_leaves_one_output(tmp_path):
    """In a real Jupyter kernel: three frames, and the cell ends with ONE image output (update_display_data)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
import torch
from automix_lite import AutoMix
from automix_lite.views.live import LiveView
from automix_lite.views.viz import real_photos
torch.manual_seed(0)
model = AutoMix("resnet_tiny_cifar", 4)
live = LiveView(real_photos({SIZE}), (0.5,), (0.25,), every=1)
for step in (1, 2, 3):
    live.on_step_end(type("S", (), dict(model=model, step=step, total_steps=3, epoch=0, losses={{"loss": 1.0 / step}}))())
assert live.frames == 3
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    outputs = nb.cells[0].outputs
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, [o.get("output_type") for o in outputs]
    assert all(o["output_type"] != "error" for o in outputs)
    assert len(np.frombuffer(__import__("base64").b64decode(images[0]["data"]["image/png"]), np.uint8)) > 1000
