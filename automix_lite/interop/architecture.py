"""Recognising an OpenMixup AutoMix checkpoint's architecture from its tensor shapes alone (the backbone, the
heads, the Mix Block and its feature stage); the rules are in the package docstring (``automix_lite.interop``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

_LAYOUT_DOC = "docs/checkpoints.md"
_NORM_NAMES = {"bn": "bn", "ln": "ln"}  # our att_norm -> mmcv ConvModule attribute name


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the model inferred from it.

    Attributes ``missing``, ``unexpected`` (key lists) and ``mismatched`` (``(key, checkpoint_shape,
    model_shape)`` tuples) hold every offending key; the message lists them all.
    """

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


def _sub(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix + ".")}


@dataclass(frozen=True)
class ResNetSpec:
    """A ResNet as recognised from its state dict.

    Args:
        stem: "cifar" (3x3 stride-1 conv1, no max-pool) or "imagenet" (7x7 stride-2 conv1 + max-pool).
        block: "basic" or "bottleneck".
        layers: blocks per stage, e.g. (2, 2, 2, 2).
        channels: planes per stage (timm ``channels``), e.g. (64, 128, 256, 512).
        cardinality, base_width: ResNeXt groups and width per group (1, 64 for plain ResNets).
        stem_width: output channels of conv1.
        in_chans: image channels.
    """

    stem: str
    block: str
    layers: tuple[int, ...]
    channels: tuple[int, ...]
    cardinality: int = 1
    base_width: int = 64
    stem_width: int = 64
    in_chans: int = 3

    @property
    def stage_channels(self) -> list[int]:
        """Output channels of [stem, layer1..layer4] (our feature-stage indices 0..4)."""
        expansion = 4 if self.block == "bottleneck" else 1
        return [self.stem_width] + [c * expansion for c in self.channels]

    @property
    def name(self) -> str | None:
        """The ``create_backbone`` name of this configuration, or None if it has none."""
        key = (self.stem, self.block, self.layers, self.channels, self.cardinality, self.base_width,
               self.stem_width)
        return _KNOWN.get(key)


_STD = (64, 128, 256, 512)
_KNOWN = {
    ("cifar", "basic", (1, 1, 1, 1), (16, 32, 64, 128), 1, 64, 64): "resnet_tiny_cifar",
    ("cifar", "basic", (2, 2, 2, 2), _STD, 1, 64, 64): "resnet18_cifar",
    ("cifar", "basic", (3, 4, 6, 3), _STD, 1, 64, 64): "resnet34_cifar",
    ("cifar", "bottleneck", (3, 4, 6, 3), _STD, 1, 64, 64): "resnet50_cifar",
    ("cifar", "bottleneck", (3, 4, 6, 3), _STD, 32, 4, 64): "resnext50_cifar",
    ("imagenet", "basic", (2, 2, 2, 2), _STD, 1, 64, 64): "resnet18",
    ("imagenet", "basic", (3, 4, 6, 3), _STD, 1, 64, 64): "resnet34",
    ("imagenet", "bottleneck", (3, 4, 6, 3), _STD, 1, 64, 64): "resnet50",
    ("imagenet", "bottleneck", (3, 4, 23, 3), _STD, 1, 64, 64): "resnet101",
    ("imagenet", "bottleneck", (3, 8, 36, 3), _STD, 1, 64, 64): "resnet152",
    ("imagenet", "bottleneck", (3, 4, 6, 3), _STD, 32, 4, 64): "resnext50_32x4d",
    ("imagenet", "bottleneck", (3, 4, 23, 3), _STD, 32, 4, 64): "resnext101_32x4d",
    ("imagenet", "bottleneck", (3, 4, 23, 3), _STD, 32, 8, 64): "resnext101_32x8d",
    ("imagenet", "bottleneck", (3, 4, 23, 3), _STD, 64, 4, 64): "resnext101_64x4d",
    ("imagenet", "bottleneck", (3, 4, 6, 3), _STD, 1, 128, 64): "wide_resnet50_2",
    ("imagenet", "bottleneck", (3, 4, 23, 3), _STD, 1, 128, 64): "wide_resnet101_2",
}


def _unsupported(what: str) -> ValueError:
    return ValueError(f"unrecognised backbone in the OpenMixup checkpoint: {what}. Recognised: 4-stage ResNets / "
                      "ResNeXts with torchvision names and a 3x3 (CIFAR) or 7x7 (ImageNet) conv1 (see the "
                      "automix_lite.interop docstring and " + _LAYOUT_DOC + ").")


def infer_backbone(sd: Mapping[str, torch.Tensor]) -> ResNetSpec:
    """Recognise a ResNet / ResNeXt from a backbone state dict (keys without the ``backbone_q.`` prefix).

    Args:
        sd: backbone state dict with torchvision names (``conv1.weight``, ``layer1.0.conv2.weight`` ...).

    Returns:
        a ``ResNetSpec``; raises ValueError naming what does not fit.
    """
    if "conv1.weight" not in sd:
        hint = " (a ResNet-D deep stem?)" if "conv1.0.weight" in sd else ""
        raise _unsupported(f"no 'conv1.weight'{hint}; first keys: {list(sd)[:5]}")
    w = sd["conv1.weight"]  # [stem_width, in_chans, k, k]
    if w.ndim != 4 or w.shape[-1] not in (3, 7):
        raise _unsupported(f"conv1.weight has shape {tuple(w.shape)}, expected a 3x3 (CIFAR) or 7x7 (ImageNet) conv")
    stem = "cifar" if w.shape[-1] == 3 else "imagenet"
    layers, planes, widths, groups = [], [], [], []
    bottleneck = "layer1.0.conv3.weight" in sd
    for i in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in sd if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()}
        if not blocks or blocks != set(range(len(blocks))):
            raise _unsupported(f"stage layer{i} has blocks {sorted(blocks)}, expected 0..n-1")
        layers.append(len(blocks))
        try:
            conv2 = sd[f"layer{i}.0.conv2.weight"]  # [width, width / groups, 3, 3]
            out = sd[f"layer{i}.0.conv3.weight" if bottleneck else f"layer{i}.0.conv2.weight"].shape[0]
        except KeyError as err:
            raise _unsupported(f"missing {err.args[0]!r}") from None
        width = conv2.shape[0]
        g = width // conv2.shape[1] if bottleneck else 1
        if g * conv2.shape[1] != width:
            raise _unsupported(f"layer{i}.0.conv2 width {width} is not a multiple of its group width {conv2.shape[1]}")
        planes.append(out // 4 if bottleneck else out)
        widths.append(width)
        groups.append(g)
    if len(set(groups)) != 1:
        raise _unsupported(f"the grouped conv2 has different cardinalities per stage: {groups}")
    card = groups[0]
    base_width = 64
    if bottleneck:  # timm: width = floor(planes * base_width / 64) * cardinality
        base_width = widths[0] * 64 // (planes[0] * card)
        expected = [int(p * base_width / 64) * card for p in planes]
        if expected != widths:
            raise _unsupported(f"bottleneck widths {widths} do not follow planes {planes} x base width x "
                               f"cardinality {card}")
    return ResNetSpec(stem=stem, block="bottleneck" if bottleneck else "basic", layers=tuple(layers),
                      channels=tuple(planes), cardinality=card, base_width=base_width, stem_width=int(w.shape[0]),
                      in_chans=int(w.shape[1]))


def _build_backbone(spec: ResNetSpec) -> str | nn.Module:
    """A ``create_backbone`` name when the configuration has one, else a headless module with its shapes."""
    if spec.name is not None:
        return spec.name
    block = Bottleneck if spec.block == "bottleneck" else BasicBlock
    model = ResNet(block=block, layers=spec.layers, channels=spec.channels, cardinality=spec.cardinality,
                   base_width=spec.base_width, stem_width=spec.stem_width, num_classes=0, in_chans=spec.in_chans)
    if spec.stem == "cifar":
        from .core.models import _cifar_stem  # the same stem swap as the named *_cifar models
        model = _cifar_stem(model, spec.in_chans)
    return model


@dataclass(frozen=True)
class _MixSpec:
    in_channels: int
    reduction: int
    lam_concat: bool
    att_norm: str | None
    norm_key: str | None  # the mmcv attribute name of the norm in the checkpoint ("bn", "ln")
    legacy: bool  # plain nn.Conv2d query (``mix_block.query.weight``)


def _infer_mix_block(mb: Mapping[str, torch.Tensor], stage_chs: list[int], feature_stage: int | None
                     ) -> tuple[_MixSpec, int]:
    legacy = "query.weight" in mb and "query.conv.weight" not in mb
    qkey = "query.weight" if legacy else "query.conv.weight"
    if qkey not in mb or "value.weight" not in mb:
        raise CheckpointMismatchError(
            f"the checkpoint has no Mix Block ('mix_block.query.conv.weight' and 'mix_block.value.weight'); "
            f"mix_block keys found: {sorted(mb)}. Is it an OpenMixup AutoMix checkpoint? (layout: {_LAYOUT_DOC})",
            missing=[f"mix_block.{k}" for k in (qkey, "value.weight") if k not in mb])
    wq, wv = mb[qkey], mb["value.weight"]  # [C/r, C(+1), 1, 1], [1, C(+1), 1, 1]
    if wq.ndim != 4 or wq.shape[-2:] != (1, 1) or wv.ndim != 4 or wv.shape[0] != 1:
        raise _unsupported_mb(f"query {tuple(wq.shape)}, value {tuple(wv.shape)}; expected 1x1 convs")
    cin = wq.shape[1]
    if wv.shape[1] != cin:
        raise _unsupported_mb(f"query input channels {cin} != value input channels {wv.shape[1]} "
                              "(lam_concat_v / x_v_concat are not supported)")
    # the tap: a ResNet stage (layer1..layer4 = indices 1..4) whose channels are C (or C+1 with lam_concat)
    stages = [feature_stage] if feature_stage is not None else [1, 2, 3, 4]
    fits = [(s, False) for s in stages if stage_chs[s] == cin] + [(s, True) for s in stages if stage_chs[s] == cin - 1]
    if not fits:
        raise _unsupported_mb(f"Mix Block input channels {cin} match no stage of the backbone (stage channels "
                              f"{dict(enumerate(stage_chs))}, C or C+1 with lam_concat)")
    stage, lam_concat = next((f for f in fits if f[0] == 3), fits[0])  # prefer layer3, the published tap
    c = cin - int(lam_concat)
    inter = wq.shape[0]
    reduction = max(c // inter, 1)
    if c // reduction != inter:
        raise _unsupported_mb(f"query width {inter} is not in_channels {c} // an integer reduction")
    subs = {k.split(".")[1] for k in mb if k.startswith("query.")}
    norms = subs - {"conv", "weight", "bias"}  # mmcv ConvModule: conv, then the norm ("bn", "ln")
    if len(norms) > 1:
        raise _unsupported_mb(f"several sub-modules after the query conv: {sorted(norms)}")
    norm_key = norms.pop() if norms else None
    att_norm = None if norm_key is None else ("bn" if f"query.{norm_key}.running_mean" in mb else "ln")
    return _MixSpec(c, reduction, lam_concat, att_norm, norm_key, legacy), stage


def _unsupported_mb(what: str) -> ValueError:
    return ValueError(f"unrecognised Mix Block in the OpenMixup checkpoint: {what}. Recognised: AutoMix's "
                      f"PixelMixBlock (shared 1x1 query/key conv, 1x1 value conv), see {_LAYOUT_DOC}.")


