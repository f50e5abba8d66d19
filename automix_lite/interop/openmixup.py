"""OpenMixup AutoMix checkpoints: reading (``from_openmixup``), key mapping, writing (``to_openmixup``).

The layout and every choice are described in the package docstring (``automix_lite.interop``).
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn
from timm.models.resnet import ResNet

from ..core.automix import AutoMix
from .architecture import (
    _LAYOUT_DOC,
    _NORM_NAMES,
    CheckpointMismatchError,
    _build_backbone,
    _infer_mix_block,
    _MixSpec,
    _sub,
    infer_backbone,
)

__all__ = ["from_openmixup", "to_openmixup", "CheckpointMismatchError", "infer_backbone"]

_MODULES = ("backbone_q", "backbone_k", "head_one_q", "head_mix_q", "head_one_k", "head_mix_k", "mix_block")
_ALIASES = {"backbone": "backbone_k", "head": "head_one_k"}  # OpenMixup's inference copies of the k-network


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


def _head_classes(sd: Mapping[str, torch.Tensor]) -> int:
    """Number of classes read from the first classifier head found."""
    head = next((sd[f"{h}.fc.weight"] for h in ("head_one_k", "head_one_q", "head_mix_q", "head_mix_k", "head")
                 if f"{h}.fc.weight" in sd), None)
    if head is None:
        raise CheckpointMismatchError("the checkpoint has no classifier head ('head_one_k.fc.weight' ...); "
                                      "pass num_classes= to build the model anyway (with strict=False).",
                                      missing=[f"{h}.fc.weight" for h in _MODULES if h.startswith("head")])
    return int(head.shape[0])


def _map_state(target: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], mix: _MixSpec):
    """(tensors to load, missing source keys, mis-shaped (key, got, want), source keys used)."""
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
    return to_load, missing, mismatched, used


def _leftovers(target: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], used: set):
    """(unexpected keys, inference aliases that differ from the momentum network they should copy)."""
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
    return unexpected, differing


def _report(model: AutoMix, missing, unexpected, mismatched, differing, strict: bool) -> None:
    """Raise for mis-shaped keys (and, with ``strict``, missing / unexpected ones); warn for the rest."""
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(_mismatch_message(model, missing, unexpected, mismatched),
                                      missing, unexpected, mismatched)
    if missing or unexpected:
        warnings.warn(_mismatch_message(model, missing, unexpected, []) + "\nLoaded the rest (strict=False).",
                      stacklevel=3)
    if differing:
        warnings.warn(f"{len(differing)} inference alias(es) differ from the momentum network they should copy "
                      f"('backbone.*' = 'backbone_k.*', 'head.*' = 'head_one_k.*'): {', '.join(differing)}. "
                      "Loaded backbone_k / head_one_k; the aliases were ignored.", stacklevel=3)


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
    model = AutoMix(_build_backbone(spec), num_classes or _head_classes(sd), feature_stage=stage,
                    lam_concat=mix.lam_concat, reduction=mix.reduction, att_norm=mix.att_norm,
                    in_chans=spec.in_chans, **automix_kwargs)
    to_load, missing, mismatched, used = _map_state(model.state_dict(), sd, mix)
    unexpected, differing = _leftovers(model.state_dict(), sd, used)
    _report(model, missing, unexpected, mismatched, differing, strict)
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
