"""Backbones for automix_lite: any timm model, CIFAR-stem variants, and feature-stage taps.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) feeds the Mix Block with the feature map of one
intermediate stage of the *momentum* encoder (ResNet ``layer3`` in every published recipe;
docs/algorithm.md#modules). This module gives every backbone the same three abilities:

* ``create_backbone(name)``: a headless network whose ``forward`` returns pooled features ``[N, D]``
  (timm's ``num_classes=0``), with ``num_features`` = D. Classifier heads live outside the backbone, as in
  OpenMixup, so the four AutoMix heads can share one backbone class.
* ``stage_modules(model)``: the modules whose outputs are the feature stages, index-aligned with timm's
  ``feature_info``. For ResNets: 0 = stem activation, 1..4 = ``layer1..layer4``; so **index 3 is ResNet
  layer3**, which OpenMixup calls "stage 2" (``out_indices=(2, 3)`` counts from ``layer1``).
* ``feature_map(model, x, stage)``: that stage's output as ``[N, C, h, w]``, by default computed **without
  running the later stages** (timm's ``forward_intermediates(stop_early=True)``, or a hook that stops the
  forward pass); ``stop_early=False`` runs the whole model (AutoMix's default, docs/algorithm.md#one-training-step).
  Token outputs of ViTs are reshaped to a 2-D map by timm (``output_fmt="NCHW"``).

CIFAR-stem variants (``*_cifar``) replace the 7x7 stride-2 stem and the max-pool by one 3x3 stride-1 conv,
as OpenMixup's ``ResNet_CIFAR``, so a 32 px image gives the 8x8 ``layer3`` map the paper uses (timm's stock
resnet18 gives 2x2). Their parameter names equal torchvision's/OpenMixup's (``conv1``, ``bn1``,
``layer3.0.downsample.0`` ...), which keeps OpenMixup checkpoints loadable. ``wrn28_8_cifar`` is a small
WideResNet written here (timm has none); its stages are [stem, block1, block2, block3] and the AutoMix
recipe taps block2 (index 2, 256 x 16 x 16), matching OpenMixup's ``out_indices=(1, 2)``.
"""
from __future__ import annotations

from typing import Callable

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from .._names import did_you_mean

__all__ = [
    "CIFAR_MODELS",
    "create_backbone",
    "stage_modules",
    "stage_channels",
    "default_feature_stage",
    "feature_map",
    "LinearHead",
    "Classifier",
    "WideResNet",
]


# ----------------------------------------------------------------------------- CIFAR-stem ResNets
def _cifar_stem(model: ResNet, in_chans: int) -> ResNet:
    """Swap timm's 7x7/2 conv + max-pool for a 3x3/1 conv (no pooling), in place.

    The stem keeps timm's width (64, fixed by timm for single-conv stems) even for narrow variants.
    """
    model.conv1 = nn.Conv2d(in_chans, model.bn1.num_features, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    # feature_info reductions shrink by 4 (no stride-2 conv, no pool)
    for info in model.feature_info:
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


def _resnet_cifar(block, layers, *, channels=(64, 128, 256, 512), **kw) -> Callable[..., nn.Module]:
    def build(in_chans: int = 3, **extra) -> nn.Module:
        model = ResNet(block=block, layers=layers, channels=channels, num_classes=0, in_chans=in_chans,
                       **{**kw, **extra})
        return _cifar_stem(model, in_chans)
    return build


class _WideBasic(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis, BMVC 2016)."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """WRN-depth-k for 32 px inputs; ``forward`` returns pooled features ``[N, 64k]``.

    Args:
        depth: 6n + 4 (28 for WRN-28-8).
        widen: width factor k.
        in_chans: input channels.
        drop_rate: dropout inside blocks.
    """

    def __init__(self, depth: int = 28, widen: int = 8, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 28), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        blocks = []
        for i, stride in enumerate((1, 2, 2)):
            layers = [_WideBasic(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                                 stride if j == 0 else 1, drop_rate) for j in range(n)]
            blocks.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = blocks
        self.bn_final = nn.BatchNorm2d(widths[3])
        self.num_features = widths[3]
        self.feature_info = [
            {"module": "conv1", "num_chs": widths[0], "reduction": 1},
            {"module": "block1", "num_chs": widths[1], "reduction": 1},
            {"module": "block2", "num_chs": widths[2], "reduction": 2},
            {"module": "block3", "num_chs": widths[3], "reduction": 4},
        ]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))  # [N, 64k, H/4, W/4]
        x = F.relu(self.bn_final(x))
        return x.mean(dim=(2, 3))  # [N, 64k]


CIFAR_MODELS: dict[str, Callable[..., nn.Module]] = {
    # a narrow 4-stage ResNet for CPU demos and tests (quick preset)
    "resnet_tiny_cifar": _resnet_cifar(BasicBlock, (1, 1, 1, 1), channels=(16, 32, 64, 128)),
    "resnet18_cifar": _resnet_cifar(BasicBlock, (2, 2, 2, 2)),
    "resnet34_cifar": _resnet_cifar(BasicBlock, (3, 4, 6, 3)),
    "resnet50_cifar": _resnet_cifar(Bottleneck, (3, 4, 6, 3), channels=(64, 128, 256, 512)),
    "resnext50_cifar": _resnet_cifar(Bottleneck, (3, 4, 6, 3), cardinality=32, base_width=4),
    "wrn28_8_cifar": lambda in_chans=3, **kw: WideResNet(28, 8, in_chans=in_chans, **kw),
}


def _suggest(name: str, choices) -> str:
    return did_you_mean(name, choices, n=3)


def create_backbone(model: str | nn.Module, *, in_chans: int = 3, pretrained: bool = False,
                    **kwargs) -> nn.Module:
    """Build a headless backbone: ``forward(x) -> [N, num_features]``.

    Args:
        model: a name from ``CIFAR_MODELS``, any timm model name, or an ``nn.Module`` (returned as is; it must
            return pooled ``[N, D]`` features and expose ``num_features``, or ``feature_info`` for stage taps).
        in_chans: input channels (1 for grey-scale data).
        pretrained: load timm weights (needs network access).
        **kwargs: passed to the constructor (e.g. ``img_size=32, patch_size=4`` for a ViT on CIFAR).
    """
    if isinstance(model, nn.Module):
        if not hasattr(model, "num_features"):
            raise TypeError("a custom backbone module must expose `num_features` (the width of its pooled "
                            f"output); {type(model).__name__} has none. Set `model.num_features = D`.")
        return model
    if not isinstance(model, str):
        raise TypeError(f"model must be a model name or an nn.Module, got {type(model).__name__}")
    if model in CIFAR_MODELS:
        if pretrained:
            raise ValueError(f"{model!r} has no pretrained weights; use pretrained=False")
        return CIFAR_MODELS[model](in_chans=in_chans, **kwargs)
    if not timm.is_model(model):
        known = list(CIFAR_MODELS) + timm.list_models()
        raise ValueError(f"unknown model {model!r}: not a CIFAR-stem name ({', '.join(CIFAR_MODELS)}) and not a "
                         f"timm model.{_suggest(model, known)}")
    return timm.create_model(model, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)


def _feature_info(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if info is None:
        raise TypeError(f"{type(model).__name__} has no `feature_info`; give it a list of "
                        "{'module': name, 'num_chs': C} entries (as timm models have) to tap its stages")
    return [dict(i) for i in info]  # timm's FeatureInfo or a plain list of dicts


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are the feature stages, index-aligned with timm's ``feature_info``.

    For ResNets: ``[act1 (stem), layer1, layer2, layer3, layer4]`` -> index 3 is ``layer3``.
    """
    if getattr(model, "feature_info", None) is None and isinstance(getattr(model, "backbone", None), nn.Module):
        model = model.backbone  # a Classifier: tap its backbone
    named = dict(model.named_modules())
    return [named[i["module"]] for i in _feature_info(model)]


def stage_channels(model: nn.Module, stage: int) -> int:
    """Channels C of the feature map at ``stage``."""
    info = _feature_info(model)
    _check_stage(model, stage, len(info))
    return int(info[stage]["num_chs"])


def default_feature_stage(model: nn.Module) -> int:
    """The Mix Block's default tap: the first stage with stride 16 (ResNet ``layer3``) for ImageNet-style
    networks, the second-to-last stage for CIFAR-stem ResNets (``layer3``, 8x8 at 32 px), block2 of the WRN,
    and the middle block of plain ViTs (all blocks share one stride)."""
    info = _feature_info(model)
    reductions = [int(i.get("reduction", 0)) for i in info]
    if len(set(reductions)) == 1:  # isotropic (ViT): middle block
        return len(info) // 2
    if 16 in reductions:
        return reductions.index(16)
    return len(info) - 2


def _check_stage(model: nn.Module, stage: int, n: int) -> None:
    if not isinstance(stage, int) or not -n <= stage < n:
        names = [i["module"] for i in _feature_info(model)]
        raise ValueError(f"feature stage {stage!r} out of range for {type(model).__name__}: it has {n} stages "
                         f"{names} (index 3 of a ResNet is layer3)")


def check_image_size(model: nn.Module, x: torch.Tensor) -> None:
    """Raise a clear ValueError when a fixed-size backbone (timm ViT-style ``patch_embed``) gets other sizes."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if size is None or not getattr(pe, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return
    if tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(f"this backbone was built for {size[0]}x{size[1]} images, got {x.shape[-2]}x{x.shape[-1]}; "
                         f"pass img_size={x.shape[-1]} when creating the model (e.g. AutoMix(name, K, "
                         f"img_size={x.shape[-1]})) or resize the images")


class _StopForward(Exception):
    pass


def feature_map(model: nn.Module, x: torch.Tensor, stage: int, *, stop_early: bool = True) -> torch.Tensor:
    """Output of ``stage`` as ``[N, C, h, w]``.

    ``stop_early=True``: the later stages are not run. Uses timm's ``forward_intermediates(...,
    stop_early=True)`` when the model has it; otherwise a forward hook captures the stage output and aborts the
    rest of the forward pass. ``stop_early=False``: the whole ``model(x)`` runs (so every later BatchNorm layer
    sees the batch, as in OpenMixup) and a forward hook captures the stage output.
    """
    n = len(_feature_info(model))
    _check_stage(model, stage, n)
    stage = stage % n
    if stop_early and hasattr(model, "forward_intermediates"):
        try:
            (z,) = model.forward_intermediates(x, indices=[stage], stop_early=True,
                                               intermediates_only=True, output_fmt="NCHW")
            return z
        except TypeError:  # older signature without output_fmt
            pass
    captured: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        if not captured:
            captured.append(out)
        if stop_early:
            raise _StopForward

    handle = stage_modules(model)[stage].register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    z = captured[0]
    if z.ndim == 3:  # tokens [N, L, D] -> [N, D, s, s] (prefix tokens dropped)
        side = int(z.shape[1] ** 0.5)
        z = z[:, -side * side:].transpose(1, 2).reshape(z.shape[0], z.shape[2], side, side)
    return z


# ----------------------------------------------------------------------------- heads and plain classifier
class LinearHead(nn.Module):
    """GAP features -> logits; the ``fc`` name matches OpenMixup's ``ClsHead``/``ClsMixupHead``.

    Args:
        in_features: width of the pooled backbone output.
        num_classes: number of classes.
        init_std: std of the N(0, std) weight init (OpenMixup: 0.01), bias 0. None keeps PyTorch's default.
    """

    def __init__(self, in_features: int, num_classes: int, init_std: float | None = 0.01):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        if init_std is not None:
            nn.init.normal_(self.fc.weight, 0.0, init_std)
            nn.init.zeros_(self.fc.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)  # [N, num_classes]


class Classifier(nn.Module):
    """Backbone + one linear head: the network trained by vanilla and the hand-crafted mixers.

    Args:
        backbone: name or module, see ``create_backbone``.
        num_classes: number of classes.
        in_chans: input channels.
        **kwargs: passed to ``create_backbone``.
    """

    def __init__(self, backbone: str | nn.Module, num_classes: int, *, in_chans: int = 3, **kwargs):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.backbone = create_backbone(backbone, in_chans=in_chans, **kwargs)
        self.head = LinearHead(self.backbone.num_features, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(self.backbone, x)
        return self.head(self.backbone(x))  # [N, num_classes]
