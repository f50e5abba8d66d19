"""A trained model back from its run folder in one call, and its classifier as a plain timm state dict.

``load_model(path)`` reads a checkpoint written by ``train()`` (a run folder or a ``checkpoint*.pt`` file, any
preset, any method) with ``torch.load(weights_only=True)`` (tensors and plain values only: loading runs no code)
and rebuilds the network from the configuration stored in it, exactly as the trainer built it (Mix Block stage,
``att_norm`` and every other model setting included), so the state dict loads strictly.

``export_classifier(model, head)`` turns one AutoMix inference path (the momentum encoder with ``one_k``, the
paper's default, or the online encoder with ``one_q``...) or a plain ``Classifier`` into the state dict of a
single timm network: the backbone's own keys plus the linear head under timm's classifier name (``fc`` for
ResNets). For a timm model name it loads into ``timm.create_model(name, num_classes=K)`` with no other change;
the ``*_cifar`` backbones are timm ``ResNet`` s with a 3x3 stride-1 stem and no max-pool (docs/checkpoints.md).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..core.automix import HEADS, AutoMix
from ..core.models import Classifier
from .checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint
from .config import TrainConfig
from .engine import build_model

__all__ = ["load_model", "model_from_checkpoint", "export_classifier"]


def _in_chans(ckpt: dict, cfg: TrainConfig) -> int:
    """Input channels: stored by the trainer, else the config, else the stem's weight [out, in, kh, kw]."""
    if ckpt.get("in_chans"):
        return int(ckpt["in_chans"])
    if cfg.in_chans:
        return cfg.in_chans
    stem = next((v for v in ckpt["model"].values() if torch.is_tensor(v) and v.dim() == 4), None)
    if stem is None:
        raise CheckpointError("cannot tell the number of input channels: no convolution in the checkpoint")
    return int(stem.shape[1])


def load_model(path: str | Path, *, device: str | torch.device = "cpu", eval_mode: bool = True) -> nn.Module:
    """The model of a finished (or interrupted) ``train()`` run, weights loaded, on ``device``.

    Args:
        path: a run folder (the ``out`` of a run: its ``checkpoint.pt``, else the newest ``checkpoint-*.pt``) or
            a checkpoint file.
        device: where to put the model.
        eval_mode: return it in ``eval()`` mode (inference); False leaves it in training mode.

    Returns:
        an ``AutoMix`` (method ``automix``; ``model(x)`` uses ``one_k``, ``model(x, head=...)`` any head) or a
        ``Classifier`` (every other method).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: no loadable checkpoint there (a file that is not an automix_lite checkpoint, or one
            that holds more than tensors and plain values).
    """
    return model_from_checkpoint(load_checkpoint(find_resume_checkpoint(path)), device=device, eval_mode=eval_mode)


def model_from_checkpoint(ckpt: dict, *, device: str | torch.device = "cpu", eval_mode: bool = True) -> nn.Module:
    """``load_model`` for a checkpoint dict already read (``checkpoint.load_checkpoint``)."""
    cfg = TrainConfig.from_dict({**ckpt["config"], "resume": None})
    model = build_model(cfg, int(ckpt["num_classes"]), _in_chans(ckpt, cfg))
    model.load_state_dict(ckpt["model"])
    model.to(device)
    return model.eval() if eval_mode else model.train()


def _classifier_key(backbone: nn.Module) -> str:
    """timm's name of the classifier layer (``pretrained_cfg['classifier']``); ``fc`` for the CIFAR ResNets."""
    cfg = getattr(backbone, "pretrained_cfg", None) or getattr(backbone, "default_cfg", None) or {}
    return cfg.get("classifier") or "fc"


def export_classifier(model: nn.Module | str | Path, head: str = "one_k") -> dict[str, torch.Tensor]:
    """One inference path of a trained model as a timm state dict (backbone + ``<classifier>.weight/bias``).

    Args:
        model: an ``AutoMix``, a ``Classifier``, or a run folder / checkpoint path (read with ``load_model``).
        head: for ``AutoMix``, which head and therefore which encoder: ``one_k``/``mix_k`` (momentum encoder),
            ``one_q``/``mix_q`` (online encoder). Ignored for a ``Classifier``.

    Returns:
        a new state dict (tensors cloned, on the CPU) with the backbone's keys and the head's under timm's
        classifier name, e.g. ``fc.weight`` [K, D] and ``fc.bias`` [K] for ResNets.
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    if isinstance(model, AutoMix):
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS} (the ensemble is no single network), got {head!r}")
        backbone = model.backbone_k if head.endswith("_k") else model.backbone_q
        linear = getattr(model, f"head_{head}").fc
    elif isinstance(model, Classifier):
        backbone, linear = model.backbone, model.head.fc
    else:
        raise TypeError(f"expected an AutoMix, a Classifier or a path, got {type(model).__name__}")
    key = _classifier_key(backbone)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()
             if not k.startswith(f"{key}.")}  # timm's headless models keep no classifier weights
    state[f"{key}.weight"] = linear.weight.detach().cpu().clone()  # [K, D]
    state[f"{key}.bias"] = linear.bias.detach().cpu().clone()  # [K]
    return state
