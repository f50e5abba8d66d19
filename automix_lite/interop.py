"""Read and write OpenMixup AutoMix checkpoints (``from_openmixup`` / ``to_openmixup``).

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. OpenMixup (https://github.com/Westlake-AI/openmixup) trains it as ``AutoMixup`` and saves
mmcv checkpoints ``{"state_dict": ..., "meta": ..., "optimizer": ...}``. The state-dict layout is described in
``docs/checkpoints.md``: ``backbone_q``/``backbone_k`` (online and momentum encoders, with BN
buffers), ``head_{one,mix}_{q,k}.fc``, ``mix_block.query.conv`` (ONE 1x1 conv shared by query and key) and
``mix_block.value``, plus ``backbone.*`` and ``head.*``: aliases of ``backbone_k`` and ``head_one_k`` (the
same tensors stored twice) that OpenMixup uses for inference. Our ``AutoMix`` uses the same module names, so
the mapping is almost the identity; the work here is recognising the architecture from shapes alone.

Recognised architectures (inferred from key patterns and tensor shapes, never from the file name):

* **Backbones**: 4-stage ResNets with torchvision parameter names (OpenMixup ``ResNet``, ``ResNeXt`` and
  ``ResNet_CIFAR``). Stem: ``conv1`` 3x3 = CIFAR stem (3x3 stride-1, no max-pool, our ``*_cifar`` models),
  7x7 = ImageNet stem (timm ResNets). Block: ``conv3`` present = Bottleneck, else BasicBlock. Depth: blocks
  per stage (2,2,2,2 = 18; 3,4,6,3 = 34 / 50; 3,4,23,3 = 101; 3,8,36,3 = 152). ResNeXt / wide ResNets:
  cardinality from the grouped ``conv2`` (out channels / in channels per group) and base width from the
  bottleneck width (32x4d, 32x8d, 64x4d, wide x2). Known configurations map to a name that
  ``create_backbone`` understands (``resnet18_cifar``, ``resnet34_cifar``, ``resnet50_cifar``,
  ``resnext50_cifar``, ``resnet_tiny_cifar``; timm ``resnet18/34/50/101/152``, ``resnext50_32x4d``,
  ``resnext101_32x4d/32x8d/64x4d``, ``wide_resnet50_2/101_2``); any other consistent ResNet is built as a
  module with the same shapes (``model.backbone_name`` is then ``"ResNet"``).
* **Heads**: ``num_classes`` from ``head_*.fc.weight``.
* **Mix Block**: ``query.conv.weight`` [C/r, C(+1), 1, 1] gives the width C and the reduction r; q/k and value
  input channels equal to C+1 mean ``lam_concat`` (ImageNet recipes). The feature stage is the ResNet stage
  (``layer1..layer4``, our stage indices 1..4) whose output channels equal C: ``layer3`` (index 3) in every
  published recipe. ``att_norm`` (mmcv ``ConvModule`` with a norm): a ``query.bn`` (BatchNorm) or ``query.ln``
  (LayerNorm) sub-module, in which case the conv has no bias (mmcv ``bias='auto'``).

Not recognised (a clear error): WideResNet-28-8 (OpenMixup's WRN names differ from ours), ViTs and other
timm families, ResNet-D stems (``conv1.0``), ``lam_concat_v``, SAMix value necks and ``x_qk_concat``.

Deviations / choices:
* The legacy layout of early OpenMixup versions (``mix_block.query.weight``: a plain ``nn.Conv2d``) is also
  read; we always write the ``query.conv`` layout of the documented commit.
* A norm-free checkpoint is loaded exactly. With ``att_norm`` our ``query.conv`` keeps a bias, loaded as 0
  (exact); on writing, a non-zero bias is folded into the BN running mean (exact in train and eval mode) and
  refused for LN (not representable). The mmcv names ``bn``/``ln`` follow mmcv's norm-layer naming rule and
  have not been checked against a real ``att_norm`` checkpoint.
* Hyper-parameters that a state dict does not store (α, momentum, mask loss, ``use_scale``, ``upsample`` ...)
  take ``AutoMix``'s defaults (the AutoMix recipes) unless passed as keyword arguments.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from .core.automix import AutoMix

__all__ = ["from_openmixup", "to_openmixup", "CheckpointMismatchError", "infer_backbone"]

_LAYOUT_DOC = "docs/checkpoints.md"
_MODULES = ("backbone_q", "backbone_k", "head_one_q", "head_mix_q", "head_one_k", "head_mix_k", "mix_block")
_ALIASES = {"backbone": "backbone_k", "head": "head_one_k"}  # OpenMixup's inference copies of the k-network
_NORM_NAMES = {"bn": "bn", "ln": "ln"}  # our att_norm -> mmcv ConvModule attribute name


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the model inferred from it.

    Attributes ``missing``, ``unexpected`` (key lists) and ``mismatched`` (``(key, checkpoint_shape,
    model_shape)`` tuples) hold every offending key; the message lists them all.
    """

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


# ----------------------------------------------------------------------------- reading the file
def _read(checkpoint, weights_only: bool) -> dict[str, torch.Tensor]:
    """A path, an mmcv checkpoint dict or a bare state dict -> a flat {key: tensor} dict."""
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"OpenMixup checkpoint not found: {os.fspath(checkpoint)!r}")
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=weights_only)
        except Exception as err:  # the weights-only unpickler refuses arbitrary objects (e.g. in `meta`)
            if not weights_only:
                raise
            raise ValueError(f"could not load {os.fspath(checkpoint)!r} with torch.load(weights_only=True): {err}. "
                             "If you trust the file (it may hold arbitrary pickled objects in 'meta'), pass "
                             "weights_only=False.") from err
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a path, an mmcv checkpoint dict or a state dict; got "
                        f"{type(checkpoint).__name__}")
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise TypeError(f"checkpoint['state_dict'] must be a dict of tensors, got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"a state dict maps names to tensors; these entries are not tensors: {bad[:10]}"
                        f"{' ...' if len(bad) > 10 else ''}. Pass the checkpoint itself or its 'state_dict'.")
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _sub(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix + ".")}


# ----------------------------------------------------------------------------- architecture inference
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


# ----------------------------------------------------------------------------- key mapping
def _ours_to_openmixup(key: str, mix: _MixSpec | None) -> str | None:
    """OpenMixup key of one of our keys (None: not stored by OpenMixup)."""
    if mix is not None and key.startswith("mix_block.query."):
        rest = key[len("mix_block.query."):]
        if rest.startswith("norm."):
            return f"mix_block.query.{mix.norm_key or _NORM_NAMES[mix.att_norm]}.{rest[5:]}"
        if rest == "conv.bias" and mix.att_norm is not None:
            return None  # mmcv ConvModule(bias='auto') drops the bias before a norm
        if mix.legacy:
            return f"mix_block.query.{rest[len('conv.'):]}"
    return key


def _mismatch_message(model: AutoMix, missing, unexpected, mismatched) -> str:
    desc = (f"AutoMix({model.backbone_name!r}, num_classes={model.num_classes}, feature_stage={model.feature_stage}, "
            f"lam_concat={model.mix_block.lam_concat}, reduction={model.mix_block.reduction})")
    lines = [f"the OpenMixup checkpoint does not fit the model inferred from it, {desc}: {len(missing)} missing, "
             f"{len(unexpected)} unexpected, {len(mismatched)} mis-shaped key(s)."]
    if missing:
        lines.append("  missing (the model needs them, the checkpoint lacks them): " + ", ".join(missing))
    if unexpected:
        lines.append("  unexpected (in the checkpoint, not in the model): " + ", ".join(unexpected))
    for k, got, want in mismatched:
        lines.append(f"  mis-shaped: {k}: checkpoint {tuple(got)}, model {tuple(want)}")
    lines.append(f"Fix: check that the file is an OpenMixup AutoMix checkpoint (layout: {_LAYOUT_DOC}) and that "
                 "num_classes / feature_stage, if given, match it; strict=False loads what fits despite missing or "
                 "unexpected keys.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- public API
def from_openmixup(checkpoint, *, num_classes: int | None = None, strict: bool = True,
                   feature_stage: int | None = None, weights_only: bool = True, **automix_kwargs) -> AutoMix:
    """Build an ``AutoMix`` from an OpenMixup AutoMix checkpoint and load every tensor of it.

    Args:
        checkpoint: a path (``torch.load`` on CPU), an mmcv checkpoint dict (with ``state_dict``) or a bare
            state dict in OpenMixup's AutoMix layout (a uniform ``module.`` prefix is stripped).
        num_classes: expected number of classes; None reads it from the heads. A different value than the
            checkpoint's is reported as mis-shaped head keys.
        strict: missing or unexpected keys are an error (True) or a warning (False). Mis-shaped keys are
            always an error. Either way every problem is listed in one ``CheckpointMismatchError``.
        feature_stage: our stage index of the Mix Block's tap (3 = ``layer3``); None infers it from the Mix
            Block's input channels.
        weights_only: ``torch.load(weights_only=...)`` for paths; pass False only for files you trust whose
            ``meta`` holds arbitrary pickled objects.
        **automix_kwargs: further ``AutoMix`` options a state dict does not record (``alpha``, ``momentum``,
            ``use_scale``, ``upsample`` ...).

    Returns:
        the model in training mode (call ``.eval()`` for inference); ``model.forward(x, head="one_k")`` is the
        head OpenMixup evaluates by default.
    """
    sd = _read(checkpoint, weights_only)
    bb_src = next((p for p in ("backbone_q", "backbone_k", "backbone") if _sub(sd, p)), None)
    if bb_src is None:
        raise CheckpointMismatchError(
            f"the checkpoint has no 'backbone_q.*' / 'backbone_k.*' keys; top-level names found: "
            f"{sorted({k.split('.')[0] for k in sd})}. Expected an OpenMixup AutoMix state dict ({_LAYOUT_DOC}).",
            missing=["backbone_q.*", "backbone_k.*"])
    spec = infer_backbone(_sub(sd, bb_src))
    mix, stage = _infer_mix_block(_sub(sd, "mix_block"), spec.stage_channels, feature_stage)
    if num_classes is None:
        head = next((sd[f"{h}.fc.weight"] for h in ("head_one_k", "head_one_q", "head_mix_q", "head_mix_k", "head")
                     if f"{h}.fc.weight" in sd), None)
        if head is None:
            raise CheckpointMismatchError("the checkpoint has no classifier head ('head_one_k.fc.weight' ...); "
                                          "pass num_classes= to build the model anyway (with strict=False).",
                                          missing=[f"{h}.fc.weight" for h in _MODULES if h.startswith("head")])
        num_classes = int(head.shape[0])
    model = AutoMix(_build_backbone(spec), num_classes, feature_stage=stage, lam_concat=mix.lam_concat,
                    reduction=mix.reduction, att_norm=mix.att_norm, in_chans=spec.in_chans, **automix_kwargs)

    target = model.state_dict()
    to_load, missing, mismatched, used = {}, [], [], set()
    for key, ref in target.items():
        src = _ours_to_openmixup(key, mix)
        if src is None:  # conv bias before an mmcv norm: absent upstream, 0 is the exact equivalent
            to_load[key] = torch.zeros_like(ref)
            continue
        if src not in sd:
            missing.append(src)
            continue
        used.add(src)
        if sd[src].shape != ref.shape:
            mismatched.append((src, tuple(sd[src].shape), tuple(ref.shape)))
            continue
        to_load[key] = sd[src]
    unexpected, differing = [], []
    for k, v in sd.items():
        if k in used:
            continue
        alias = k.split(".")[0]
        twin = f"{_ALIASES[alias]}{k[len(alias):]}" if alias in _ALIASES else None
        if twin is None or twin not in target:
            unexpected.append(k)
        elif twin in sd and (sd[twin].shape != v.shape or not torch.equal(sd[twin], v)):
            differing.append(k)
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(_mismatch_message(model, missing, unexpected, mismatched),
                                      missing, unexpected, mismatched)
    if missing or unexpected:
        warnings.warn(_mismatch_message(model, missing, unexpected, []) + "\nLoaded the rest (strict=False).",
                      stacklevel=2)
    if differing:
        warnings.warn(f"{len(differing)} inference alias(es) differ from the momentum network they should copy "
                      f"('backbone.*' = 'backbone_k.*', 'head.*' = 'head_one_k.*'): {', '.join(differing)}. "
                      "Loaded backbone_k / head_one_k; the aliases were ignored.", stacklevel=2)
    model.load_state_dict(to_load, strict=False)
    return model


def to_openmixup(model: AutoMix) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` in OpenMixup's AutoMix layout, ``backbone.*`` / ``head.*`` aliases included.

    Like ``state_dict()``, the tensors share memory with the model; the aliases are the very tensors of
    ``backbone_k`` / ``head_one_k``. Save as an mmcv checkpoint with
    ``torch.save({"state_dict": to_openmixup(model), "meta": {}}, path)``.

    Args:
        model: an ``AutoMix``. Only ResNet backbones give keys OpenMixup understands (others are written with
            their timm names and a warning).
    """
    if not isinstance(model, AutoMix):
        raise TypeError(f"to_openmixup expects an AutoMix model, got {type(model).__name__}")
    if not isinstance(model.backbone_q, ResNet):
        warnings.warn(f"backbone {model.backbone_name!r} is not a ResNet: its keys are written with their timm "
                      "names, which OpenMixup's backbones do not use", stacklevel=2)
    block = model.mix_block
    norm = getattr(block.query, "norm", None)
    att_norm = None
    if isinstance(norm, nn.BatchNorm2d):
        att_norm = "bn"
    elif isinstance(norm, nn.LayerNorm):
        att_norm = "ln"
    mix = _MixSpec(block.in_channels, block.reduction, block.lam_concat, att_norm,
                   None if att_norm is None else _NORM_NAMES[att_norm], legacy=False)
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = OrderedDict()
    for key, value in sd.items():
        dst = _ours_to_openmixup(key, mix)
        if dst is not None:
            out[dst] = value
    bias = sd["mix_block.query.conv.bias"]
    if att_norm is not None and bool(bias.ne(0).any()):
        if att_norm == "ln":
            raise ValueError("the Mix Block's query conv has a non-zero bias before its LayerNorm, which OpenMixup's "
                             "ConvModule(bias='auto') cannot store; zero it (model.mix_block.query.conv.bias) first")
        # BN(conv(x) + b) with running mean mu equals BN(conv(x)) with running mean mu - b (train and eval)
        out["mix_block.query.bn.running_mean"] = sd["mix_block.query.norm.running_mean"] - bias
    for alias, src in _ALIASES.items():
        for k in [k for k in out if k.startswith(src + ".")]:
            out[alias + k[len(src):]] = out[k]
    return dict(out)
