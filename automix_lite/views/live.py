"""A live view while training: one figure, redrawn in place every N steps, with the loss curves and the Mix
Block's current mask on fixed photo pairs.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) learns its masks while the classifier trains; watching
them form is the point of this view. Neither OpenMixup nor the other reference codes have one.

``train(cfg, callbacks=[LiveView(real_photos(32), info.mean, info.std, every=50)])`` in a notebook shows ONE
output that is updated in place (an IPython display handle: ``display(..., display_id=True)`` once, then
``handle.update``), so a long run does not fill the notebook with figures. Outside a notebook pass
``display=None`` and ``path=...`` to keep the latest frame as a PNG file instead.

The figure is a ``matplotlib.figure.Figure`` made without pyplot (the inline backend never shows it by itself);
each update changes the data of its existing lines and images, so the number of artists stays constant. The
masks come from ``AutoMix.generate_mask`` (momentum encoder and Mix Block in eval mode, no gradients), so the
view changes nothing in training. Models without a Mix Block (the hand-crafted mixers) get the loss curves only.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .viz import MaskSnapshots, split_curve_keys, to_image

__all__ = ["LiveView"]


class LiveView:
    """Trainer callback (``on_step_end``): every ``every`` steps, and at the last step, redraw one figure in place.

    Left: the mean of every loss term (``loss``, ``loss_*``) over the steps since the previous frame. Right,
    one column per pair: the pair mixed with the Mix Block's current own-weight mask (top) and the mask
    itself (bottom, 1 = the sample, 0 = its partner).

    Args:
        images: ``[N, C, H, W]`` photos in [0, 1] (e.g. ``real_photos(32)``); N >= 2.
        mean, std: the dataset normalisation the model trains with (``DatasetInfo.mean`` / ``.std``).
        every: steps between frames.
        lam: λ given to the Mix Block (only ``lam_concat`` models use it).
        perm: partner of each photo (default: the next one, cyclically: no photo is paired with itself).
        names: one short name per photo for the titles (default: the indices).
        show: show the frames in the notebook (False: draw only, e.g. with ``path``).
        display: the function that shows the first frame, ``display(obj, display_id=True)`` returning a handle
            with ``update(obj)`` (default: ``IPython.display.display``).
        path: also write every frame to this PNG file.
        dpi: resolution of the frames.

    Attributes:
        fig: the one figure; ``frames``: how many times it was drawn; ``points``: ``[(step, {loss: mean})]``;
        ``mask``: the latest own-weight masks ``[N, 1, H, W]`` (None before the first frame or without a
        Mix Block); ``png``: the latest frame's bytes.
    """

    def __init__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, every: int = 50,
                 lam: float = 0.5, perm: torch.Tensor | None = None, names: Sequence[str] | None = None, show: bool = True,
                 display: Callable | None = None, path=None, dpi: int = 80):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        self._pairs = MaskSnapshots(images, mean, std, lam=lam, perm=perm)
        self.names = [str(k) for k in range(images.shape[0])] if names is None else [str(n) for n in names]
        if len(self.names) != images.shape[0]:
            raise ValueError(f"names has {len(self.names)} entries for {images.shape[0]} photos")
        self.every, self.path, self.dpi = every, None if path is None else Path(path), dpi
        if show and display is None:
            from IPython.display import display
        self._display, self._handle = (display if show else None), None
        self.frames, self.png, self.mask = 0, b"", None
        self.points: list[tuple[int, dict[str, float]]] = []
        self._sums: dict[str, list] = {}  # loss -> [sum, count] since the last frame (device tensors)
        self._lines: dict[str, Any] = {}
        self.fig, self._ax_loss, self._mixed_ims, self._mask_ims = self._build_figure()

    # ------------------------------------------------------------------ figure
    def _build_figure(self):
        n = self._pairs.images.shape[0]
        fig = Figure(figsize=(4.2 + 1.6 * n, 3.4))
        grid = fig.add_gridspec(2, 2 + n, width_ratios=[1.3, 1.3] + [1.0] * n)
        ax_loss = fig.add_subplot(grid[:, :2])
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("training loss")
        blank = np.zeros(self._pairs.images.shape[-2:])
        mixed_ims, mask_ims = [], []
        for i in range(n):
            top, bottom = fig.add_subplot(grid[0, 2 + i]), fig.add_subplot(grid[1, 2 + i])
            mixed_ims.append(top.imshow(to_image(self._pairs.images[i])))
            mask_ims.append(bottom.imshow(blank, cmap="viridis", vmin=0, vmax=1))
            top.set_title(f"{self.names[i]} + {self.names[int(self._pairs.perm[i])]}", fontsize=8)
            bottom.set_title("mask", fontsize=8)
            top.axis("off")
            bottom.axis("off")
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.14, top=0.86, wspace=0.25, hspace=0.3)
        return fig, ax_loss, mixed_ims, mask_ims

    def _redraw(self, step: int, total_steps: int, epoch: int) -> None:
        for key in sorted({k for _, p in self.points for k in p}):
            xs = [s for s, p in self.points if key in p]
            ys = [p[key] for _, p in self.points if key in p]
            if key not in self._lines:
                self._lines[key], = self._ax_loss.plot(xs, ys, marker=".", ms=3, lw=1, label=key)
                self._ax_loss.legend(fontsize=7, loc="upper right")
            else:
                self._lines[key].set_data(xs, ys)
        self._ax_loss.relim()
        self._ax_loss.autoscale_view()
        if self.mask is not None:
            mixed = self._pairs.images * self.mask + self._pairs.images[self._pairs.perm] * (1 - self.mask)
            for i, (im_mixed, im_mask) in enumerate(zip(self._mixed_ims, self._mask_ims)):
                im_mixed.set_data(to_image(mixed[i]))
                im_mask.set_data(self.mask[i, 0].numpy())
                im_mask.axes.set_title(f"own area {float(self.mask[i].mean()):.2f}", fontsize=8)
        self.fig.suptitle(f"epoch {epoch + 1} · step {step}/{total_steps}", fontsize=9)

    def _show(self) -> None:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.dpi)
        self.png = buf.getvalue()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(self.png)
        if self._display is None:
            return
        from IPython.display import Image

        frame = Image(data=self.png, format="png")
        if self._handle is None:
            self._handle = self._display(frame, display_id=True)
        else:
            self._handle.update(frame)

    # ------------------------------------------------------------------ callback
    def update(self, model, step: int, total_steps: int, epoch: int = 0) -> None:
        """Close the current block of steps, record the mask of ``model`` (if it has a Mix Block), redraw."""
        means = {k: float(s) / float(c) for k, (s, c) in self._sums.items() if float(c) > 0}
        if means:
            self.points.append((int(step), means))
        self._sums = {}
        if hasattr(model, "generate_mask"):
            self._pairs.masks.clear()
            self._pairs.record(model, step)
            self.mask = self._pairs.masks[step]
        self._redraw(step, total_steps, epoch)
        self._show()
        self.frames += 1

    def on_step_end(self, state) -> None:
        # summed on the device and read when a frame is drawn: a per-step read would make every step wait
        raw = state.losses.tensors() if hasattr(state.losses, "tensors") else {
            k: torch.tensor(float(v)) for k, v in state.losses.items()}
        losses, _ = split_curve_keys(raw)
        for k in losses:
            t = raw[k].detach().double()
            ok = torch.isfinite(t)  # a skipped non-finite step would hide the whole curve
            acc = self._sums.setdefault(k, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + torch.where(ok, t, torch.zeros_like(t)), acc[1] + ok.double()
        if state.step % self.every == 0 or state.step >= state.total_steps:
            self.update(state.model, state.step, state.total_steps, state.epoch)
