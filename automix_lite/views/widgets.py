"""An ipywidgets mask explorer: pick an image pair, λ and a method; see the mix, the mask and the Mix Block's attention.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) learns its masks with the Mix Block; the hand-crafted mixers
(``automix_lite.core.mixing.MIXERS``) draw them. This module puts both side by side.

The maths lives in plain functions that tests drive headlessly:

* ``explore(images, i, j, lam, method, model=None)`` -> ``{"mixed", "mask", "attention", "lam"}`` numpy arrays;
* ``build_explorer(images, model=None)`` -> a ``VBox`` of controls and an output area that calls ``explore``.

Only the ipywidgets API common to 7.7 (Colab) and 8.x is used: ``Dropdown``, ``FloatSlider``, ``IntSlider``,
``HBox``, ``VBox``, ``Output``, ``interactive_output`` and ``.observe(..., names="value")``.
ipywidgets is imported lazily, so ``explore`` works without it.

Not in OpenMixup (no explorer there). Pairing detail: the mixers draw their own permutation, so for a
2-image batch ``explore`` redraws (from ``seed``, ``seed + 1``, ...) until sample ``i`` is paired with ``j``;
the result is deterministic for a given seed.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.mixblock import adjust_mask
from ..core.mixing import MIXERS, mix

__all__ = ["AUTOMIX_METHODS", "explorer_methods", "explore", "build_explorer"]

# "automix": the Mix Block's raw mask; "automix_adjusted": rescaled so the own area equals λ exactly
AUTOMIX_METHODS = ("automix", "automix_adjusted")


def explorer_methods() -> list[str]:
    """Every method the explorer offers: the ``MIXERS`` names, then ``AUTOMIX_METHODS``."""
    return list(MIXERS) + list(AUTOMIX_METHODS)


@contextlib.contextmanager
def _eval(*modules):
    """Put modules in eval mode (BN running statistics, nothing updated) and restore their modes."""
    modes = [(m, m.training) for m in modules]
    try:
        for m, _ in modes:
            m.eval()
        yield
    finally:
        for m, was in modes:
            m.train(was)


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    if mean is None:
        return x
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)  # [1, C, 1, 1]
    s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def _attention(model, xn: torch.Tensor, lam: float, query) -> np.ndarray:
    """Mix Block attention of one query position of sample 0 over its partner's positions, upsampled to the
    image size and scaled to max 1: [H, W]."""
    perm = torch.tensor([1, 0])
    with _eval(model.backbone_k, model.mix_block), torch.no_grad():
        z = model.feature_map(xn)  # [2, C, h, w]
        attn = model.mix_block.attention(z, lam, perm)["attn"]  # [2, h*w, h*w]
    h, w = z.shape[-2:]
    qy = min(max(int(query[0] * h), 0), h - 1)
    qx = min(max(int(query[1] * w), 0), w - 1)
    row = attn[0, qy * w + qx].reshape(1, 1, h, w)  # [1, 1, h, w], sums to 1
    row = F.interpolate(row, size=xn.shape[-2:], mode="nearest")[0, 0]  # [H, W]
    return (row / row.max().clamp_min(1e-12)).numpy()


def _check_explore(images, i, j, lam, method, model) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor [N, C, H, W] in [0, 1], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    n = images.shape[0]
    for name, k in (("i", i), ("j", j)):
        if not isinstance(k, (int, np.integer)) or not 0 <= int(k) < n:
            raise ValueError(f"{name} must be an image index in [0, {n}), got {k!r}")
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must lie in [0, 1] (weight of image i), got {lam}")
    methods = explorer_methods()
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(methods)}")
    if method in AUTOMIX_METHODS and model is None:
        raise ValueError(f"method {method!r} needs a trained AutoMix: pass model=... "
                         "(train one with automix_lite.train or load it with from_openmixup)")


def _automix_pair(x: torch.Tensor, lam: float, method: str, model, mean, std):
    """(mixed [C, H, W], own mask [H, W], label λ) of the trained Mix Block for the pair x [2, C, H, W]."""
    xn = _normalize(x, mean, std)
    own = model.generate_mask(xn.to(next(model.parameters()).device), lam,
                              torch.tensor([1, 0]))[:, :1].float().cpu()  # [2, 1, H, W]
    if method == "automix_adjusted":
        own = adjust_mask(torch.cat([own, 1 - own], 1), lam)[:, :1]
    mask = own[0, 0]  # [H, W]
    return x[0] * mask + x[1] * (1 - mask), mask, lam


def _mixer_pair(x: torch.Tensor, lam: float, method: str, seed: int):
    """(mixed [C, H, W], own mask [H, W], label λ) of a hand-crafted mixer, redrawn until it pairs 0 -> 1."""
    y = torch.tensor([0, 1])
    kw = {} if method == "vanilla" else {"lam": lam}
    for k in range(64):
        out = mix(x, y, method, generator=torch.Generator().manual_seed(seed + k), **kw)
        if method == "vanilla" or int(out.perm[0]) == 1:
            break
    mask = torch.full(x.shape[-2:], float(out.lam[0])) if out.mask is None else out.mask[0, 0].float()  # [H, W]
    return out.images[0], mask, float(out.lam[0])


def explore(images: torch.Tensor, i: int, j: int, lam: float, method: str, model=None, *,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
            query: tuple[float, float] = (0.5, 0.5), seed: int = 0) -> dict[str, np.ndarray]:
    """Mix image ``i`` (the sample) with image ``j`` (the partner) and return what the explorer shows.

    Args:
        images: ``[N, C, H, W]`` in [0, 1] (display space; e.g. ``viz.real_photos(64)``).
        i, j: indices of the sample and its partner (may be equal).
        lam: λ, the weight of sample ``i`` in [0, 1] (``vanilla`` ignores it; raw ``automix`` masks depend on it
            only for ``lam_concat`` models).
        method: a name from ``explorer_methods()``.
        model: a (trained) ``AutoMix``; needed for the ``automix`` methods and for the attention map.
        mean, std: the normalisation the model was trained with (applied before the model only).
        query: position of the attention query as fractions (row, column) of the feature map.
        seed: seed of the mixer's random draws (box position, noise, ...).

    Returns:
        ``mixed`` [H, W, C] in [0, 1]; ``mask`` [H, W] own weight of sample ``i`` in [0, 1] (``manifoldmix``: the
        constant λ, since it mixes hidden features, not pixels); ``attention`` [H, W] in [0, 1] (the Mix Block
        attention of the query position over the partner's positions; zeros without a model); ``lam`` 0-d: the
        label weight of sample ``i``.
    """
    _check_explore(images, i, j, lam, method, model)
    lam = float(lam)
    x = images[[int(i), int(j)]].detach().float().cpu()  # [2, C, H, W]: sample, partner
    size = x.shape[-2:]
    if method in AUTOMIX_METHODS:
        mixed, mask, label_lam = _automix_pair(x, lam, method, model, mean, std)
    else:
        mixed, mask, label_lam = _mixer_pair(x, lam, method, seed)
    if model is not None:
        attention = _attention(model, _normalize(x, mean, std).to(next(model.parameters()).device), lam, query)
    else:
        attention = np.zeros(tuple(size), dtype=np.float32)
    return {"mixed": mixed.clamp(0, 1).permute(1, 2, 0).numpy(), "mask": mask.clamp(0, 1).numpy(),
            "attention": attention.astype(np.float32), "lam": np.array(label_lam, dtype=np.float32)}


def build_explorer(images: torch.Tensor, model=None, *, names: Sequence[str] | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   methods: Sequence[str] | None = None, show: bool = True):
    """The interactive explorer: image pickers, a λ slider, a method dropdown, attention query sliders, and an
    output area with the sample, partner, mixed image, mask and attention heat map.

    The returned ``VBox`` has two extra attributes for scripts and tests: ``controls`` (name -> widget:
    ``i j lam method qy qx``) and ``state`` (``{"result": the last explore() dict, "error": message or None}``),
    updated whenever a control changes.

    Args:
        images: ``[N, C, H, W]`` in [0, 1].
        model: a trained ``AutoMix`` (enables the automix methods and the attention map).
        names: one label per image (default ``image 0``, ``image 1``, ...).
        mean, std: the model's input normalisation (see ``explore``).
        methods: the dropdown's entries (default: ``explorer_methods()``, without the automix ones when no model).
        show: draw the figure (False: compute only, e.g. in tests).
    """
    import ipywidgets as widgets

    names, methods = _explorer_choices(images, model, names, methods)
    controls = _explorer_controls(widgets, names, methods)
    state = {"result": None, "error": None}

    def update(i, j, lam, method, qy, qx):
        try:
            res = explore(images, i, j, lam, method, model, mean=mean, std=std, query=(qy / 100, qx / 100))
        except ValueError as e:  # e.g. an automix method without a model
            state["result"], state["error"] = None, str(e)
            print(f"cannot show this combination: {e}")
            return
        state["result"], state["error"] = res, None
        if show:
            _show_result(images, i, j, method, res, with_attention=model is not None)

    out = widgets.interactive_output(update, controls)
    row1 = widgets.HBox([controls["i"], controls["j"], controls["method"]])
    row2 = widgets.HBox([controls["lam"], controls["qy"], controls["qx"]])
    box = widgets.VBox([row1, row2, out])
    box.controls, box.state = controls, state
    return box


def _explorer_choices(images: torch.Tensor, model, names, methods) -> tuple[list[str], list[str]]:
    """The image names and the methods the explorer offers (checked)."""
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"the explorer needs at least 2 images, got {n}")
    names = list(names) if names is not None else [f"image {k}" for k in range(n)]
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} images")
    if methods is None:
        methods = [m for m in explorer_methods() if model is not None or m not in AUTOMIX_METHODS]
    return names, list(methods)


def _explorer_controls(widgets, names: list[str], methods: list[str]) -> dict:
    """name -> widget: ``i j lam method qy qx``."""
    options = list(zip(names, range(len(names))))
    return {
        "i": widgets.Dropdown(options=options, value=0, description="sample"),
        "j": widgets.Dropdown(options=options, value=1, description="partner"),
        "lam": widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="λ"),
        "method": widgets.Dropdown(options=methods, value=methods[0], description="method"),
        "qy": widgets.IntSlider(value=50, min=0, max=99, description="query row %"),
        "qx": widgets.IntSlider(value=50, min=0, max=99, description="query col %"),
    }


def _show_result(images: torch.Tensor, i: int, j: int, method: str, res: dict, with_attention: bool) -> None:
    """Draw one explorer result (sample, partner, mix, mask, attention) into the output area."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .viz import plot_panels

    panels = {"sample": images[i], "partner": images[j],
              f"{method} (label λ={float(res['lam']):.2f})": res["mixed"],
              f"mask (own area {res['mask'].mean():.2f})": res["mask"]}
    if with_attention:
        panels["Mix Block attention"] = res["attention"]
    fig = plot_panels(panels, cmaps={"Mix Block attention": "magma"})
    display(fig)
    plt.close(fig)
