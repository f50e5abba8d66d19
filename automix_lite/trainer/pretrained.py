"""A small trained AutoMix shipped with the package, so notebooks and the explorer show *learned* masks at once.

``load_pretrained("quick")`` is the README's main job (``python -m automix_lite train --preset quick``, seed 0:
scikit-learn's digits at 16 px, ``resnet_tiny_cifar``, the Mix Block on ``layer2``), 2.6 MB in float32. Its
``.json`` beside it records how it was made (command, machine, versions, date) and what it measured (top-1 per
head, mask structure). Reproduce it with ``python benchmarks/make_pretrained.py``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from .._names import did_you_mean
from .checkpoint import load_checkpoint
from .saved import model_from_checkpoint

__all__ = ["PRETRAINED", "Pretrained", "load_pretrained", "pretrained_path"]

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PRETRAINED = {"quick": "quick_digits16"}  # name -> file stem in automix_lite/assets/ (.pt weights, .json record)


class Pretrained(NamedTuple):
    """A shipped model and what using it needs: its input normalisation and image size, and its record."""

    model: nn.Module  # an AutoMix in eval mode
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int
    record: dict  # the .json beside the weights: command, provenance, metrics


def pretrained_path(name: str = "quick") -> Path:
    """The weights file of ``name`` (raises ``ValueError`` for an unknown name, with a suggestion)."""
    if name not in PRETRAINED:
        raise ValueError(f"no shipped model {name!r}.{did_you_mean(name, PRETRAINED)} Shipped: {', '.join(PRETRAINED)}")
    return ASSETS / f"{PRETRAINED[name]}.pt"


def load_pretrained(name: str = "quick", *, device: str | torch.device = "cpu") -> Pretrained:
    """The shipped model ``name`` on ``device``, in eval mode (see the module docstring)."""
    path = pretrained_path(name)
    ckpt = load_checkpoint(path)
    record = json.loads(path.with_suffix(".json").read_text())
    model = model_from_checkpoint(ckpt, device=device)
    norm = ckpt["normalisation"]
    return Pretrained(model, tuple(norm["mean"]), tuple(norm["std"]), int(ckpt["config"]["img_size"]), record)
