"""One network pass over several batches at once, with BatchNorm statistics computed per batch.

AutoMix's online encoder sees two batches per step: the clean batch and the backbone's mix (see
docs/algorithm.md#one-training-step). On a GPU at CIFAR sizes a pass is bound by kernel launches, so one pass
over the concatenated 2N batch is much faster than two passes over N. A plain concatenation would change
the numbers: BatchNorm would normalise with the statistics of 2N mixed samples and update its running
statistics once. ``per_part_batchnorm`` makes every BatchNorm layer run its own forward on each part of the
batch in turn, so each part is normalised with its own statistics and the running statistics get the same
two updates, in the same order, as two separate passes (``num_batches_tracked`` += 2). Every other layer of
a convolutional network or a ViT treats samples independently already (convolutions, LayerNorm, GroupNorm,
attention within a sample, pooling).

Limits: only layers derived from ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d,
SyncBatchNorm, timm's BatchNormAct2d) are split; a custom layer that mixes samples otherwise is not.
Stochastic layers (dropout, drop-path) draw their masks for the 2N batch in one call, which is equally
distributed but not the same random numbers as two calls.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["per_part_batchnorm", "fused_blockers"]


def _split_forward(forward, sizes: tuple[int, ...]):
    def run(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.shape[0] != sum(sizes):  # not the fused batch (e.g. a nested call): run as usual
            return forward(x, *args, **kwargs)
        return torch.cat([forward(part, *args, **kwargs) for part in x.split(sizes)])  # [sum(sizes), ...]
    return run


@contextlib.contextmanager
def per_part_batchnorm(module: nn.Module, sizes: tuple[int, ...]) -> Iterator[None]:
    """Within the block, every BatchNorm layer of ``module`` normalises the parts of its input batch
    (consecutive slices of ``sizes`` samples) separately, one after the other, each with the layer's own
    forward (train mode: batch statistics and a running-statistics update per part).

    Args:
        module: the network (e.g. the online encoder).
        sizes: sizes of the parts along the batch dimension, e.g. ``(N, N)``.
    """
    patched = [m for m in module.modules() if isinstance(m, _BatchNorm) and "forward" not in vars(m)]
    try:
        for m in patched:
            m.forward = _split_forward(m.forward, tuple(sizes))
        yield
    finally:
        for m in patched:
            del m.forward


def fused_blockers(module: nn.Module) -> list[str]:
    """Layers that depend on the whole batch but that ``per_part_batchnorm`` does not split: InstanceNorm with
    running statistics (it would average them over the 2N batch). A fused pass over them would not equal two."""
    return [f"{name}: {type(m).__name__}(track_running_stats=True)" for name, m in module.named_modules()
            if isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats]
