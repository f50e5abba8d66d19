"""automix_lite: AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) without the framework.

The public API (see ``docs/README.md#public-api``): mixing (``mix``, ``MixOutput``, ``mix_loss``, ``MIXERS``),
the Mix Block (``MixBlock``, ``mask_loss``), ``AutoMix``, backbones, ``TrainConfig`` + ``train``.
"""
from ._version import __version__  # noqa: F401

from . import _omp  # noqa: I001 - first, before anything imports torch (OpenMP reads its wait policy at load)

_omp.WAIT_POLICY = _omp.prefer_passive_wait()

from .core.automix import HEADS, AutoMix, AutoMixAugment, mask_loss_weight_at, momentum_at
from .trainer.config import PRESETS, TrainConfig
from .interop import CheckpointMismatchError, from_openmixup, to_openmixup
from .core.mixblock import MixBlock, mask_loss
from .core.mixing import (MIXERS, MixOutput, manifold_forward, mix, mix_loss, sample_lam, sample_pairs, sample_perm,
                     soft_targets)
from .core.models import Classifier, create_backbone, feature_map, stage_modules
from .trainer.checkpoint import CheckpointError
from .trainer.pretrained import Pretrained, load_pretrained
from .trainer.saved import export_classifier, load_model
from .transforms import MixTargets
from .train import NonFiniteLossError, TrainResult, train  # noqa: E402  (the function shadows the module name, as in torch)

__all__ = [
    "__version__", "AutoMix", "AutoMixAugment", "HEADS", "MixBlock", "mask_loss", "momentum_at",
    "mask_loss_weight_at", "MIXERS", "MixOutput", "mix", "mix_loss", "manifold_forward", "sample_lam",
    "sample_perm", "Classifier", "create_backbone", "feature_map", "stage_modules", "TrainConfig", "PRESETS",
    "train", "TrainResult", "from_openmixup", "to_openmixup", "CheckpointMismatchError",
    "NonFiniteLossError", "CheckpointError", "load_model", "export_classifier",
    "MixTargets", "soft_targets", "sample_pairs", "load_pretrained", "Pretrained",
]

