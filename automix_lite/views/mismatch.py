"""Figures of the label-mismatch measurement (``automix_lite.trainer.mismatch``; docs/label_mismatch.md).

AutoMix (arXiv:2103.13027) claims its Mix Block's mixes carry their mixed label; these panels show, per mixer,
what an independent judge reads in the mixed images against λ, how the mask area follows λ, and the mean
mismatch per judge. They read the dictionary ``benchmarks/label_mismatch.py`` writes (its JSON).
"""
from __future__ import annotations

__all__ = ["plot_label_mismatch", "mixer_colors"]

_AUTOMIX_STYLE = {"automix": ("tab:red", "-"), "automix_lamcat": ("darkred", "--")}


def mixer_colors(methods) -> dict[str, tuple[str, str]]:
    """{method: (colour, line style)}: AutoMix variants in reds, the hand-crafted mixers in a qualitative map."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    hand = [m for m in methods if m not in _AUTOMIX_STYLE]
    palette = [c for k, c in enumerate(cmap.colors) if k != 3]  # tab10's red (index 3) is AutoMix's
    out = {m: (palette[k % len(palette)], ":") for k, m in enumerate(hand)}
    out.update({m: _AUTOMIX_STYLE[m] for m in methods if m in _AUTOMIX_STYLE})
    return out


def _curves(ax, summary: dict, key: str, colors: dict, ylabel: str) -> None:
    for m, r in summary.items():
        c, ls = colors[m]
        curve = r[key]
        ax.plot(curve["centre"], curve["mean"], ls, marker=".", color=c, lw=2.2 if m in _AUTOMIX_STYLE else 1.2,
                label=m)
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, alpha=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("label weight λ of image i")
    ax.set_ylabel(ylabel)


def _bars(ax, summaries: dict, judge: str, colors: dict) -> None:
    """E|s − λ| per mixer (main judge, ± std over draws); each AutoMix model's own judge as a hollow marker."""
    main = summaries[judge]
    order = sorted(main, key=lambda m: main[m]["mismatch"]["mean"])
    for k, m in enumerate(order):
        r = main[m]["mismatch"]
        ax.bar(k, r["mean"], yerr=r["std"], color=colors[m][0], alpha=0.85)
        own = summaries.get(f"{m}.mix_k")
        if own is not None:
            ax.plot(k, own[m]["mismatch"]["mean"], "o", mfc="none", mec="k", ms=8,
                    label="own momentum encoder" if m == "automix" else None)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"E|s − λ| (judge: {judge})")
    if any(f"{m}.mix_k" in summaries for m in order):
        ax.legend(fontsize=7)


def plot_label_mismatch(result: dict, judge: str = "vanilla"):
    """One row per data set of ``result["datasets"]``: s against λ, area against λ, E|s − λ| per mixer.

    Args:
        result: the dictionary written by ``benchmarks/label_mismatch.py``.
        judge: the judge of the first two panels and of the bars.

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    datasets = result["datasets"]
    if not datasets:
        raise ValueError("result holds no data set to plot")
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13, 3.9 * len(datasets)), squeeze=False)
    for row, (name, d) in zip(axes, datasets.items()):
        if judge not in d["summary"]:
            raise ValueError(f"no judge {judge!r} for {name}; judges: {sorted(d['summary'])}")
        main = d["summary"][judge]
        colors = mixer_colors(list(main))
        _curves(row[0], main, "share_curve", colors, "share s the judge reads")
        row[0].set_title(f"{name}: what the judge reads (diagonal = carries its label)", fontsize=9)
        row[0].legend(fontsize=6, ncol=2)
        _curves(row[1], main, "area_curve", colors, "own area of the mask")
        row[1].set_title(f"{name}: mask area against λ", fontsize=9)
        _bars(row[2], d["summary"], judge, colors)
        row[2].set_title(f"{name}: label mismatch, mean ± std over draws", fontsize=9)
    fig.tight_layout()
    return fig
