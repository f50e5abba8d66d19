"""Training configuration: one typed dataclass and named presets (recipes as data).

AutoMix (Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027). The presets transcribe the OpenMixup AutoMix configs listed in
``docs/recipes.md``; each preset names its source config in a comment.

Field names mirror timm's ``train.py`` flags where one exists (``data_dir``, ``img_size``,
``in_chans``, ``num_classes``, ``lr``, ``min_lr``, ``weight_decay``, ``momentum``, ``sched``,
``warmup_epochs``, ``smoothing``, ``amp``, ``channels_last``, ``workers``, ``seed``, ``resume``).

Semantics worth knowing:

* ``batch_size`` is the GLOBAL batch: under DDP each of the ``world_size`` ranks gets
  ``batch_size // world_size`` samples (it must divide evenly). OpenMixup writes "4 x 64" for
  ImageNet; here that is ``batch_size=256``.
* ``img_size`` / ``in_chans`` / ``num_classes`` = ``None`` mean "the dataset's own value"; the
  resolved values are in the ``DatasetInfo`` returned by ``automix_lite.trainer.data.build_datasets``.
* Deviations from OpenMixup: the OpenMixup configs train ResNets in fp32; here ``amp='auto'``
  picks bf16/fp16 on a GPU (``amp='off'`` reproduces fp32). CIFAR-10 has no AutoMix config in
  OpenMixup; the ``cifar10`` preset reuses the CIFAR-100 ResNet-18 recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from typing import Any

from .._names import BOOL_WORDS, did_you_mean
from .options import CIFAR_MODELS, DATASETS, METHODS, config_errors, field_type_errors  # noqa: F401
from .presets import PRESETS

__all__ = ["TrainConfig", "PRESETS", "DATASETS", "CIFAR_MODELS", "METHODS", "ConfigTypeError"]

class ConfigTypeError(TypeError, ValueError):
    """A field has the wrong type. Subclasses both TypeError and ValueError, so ``except ValueError``
    (what a CLI catches for bad configs) also sees it."""


@dataclass
class TrainConfig:
    """Everything ``train(cfg)`` needs. Defaults = the common AutoMix ResNet settings (docs/recipes.md).

    Args:
        dataset: one of ``DATASETS``.
        data_dir: root folder of the dataset (torchvision root, or an ImageFolder tree with
            ``train/`` and ``val/`` or ``test/``).
        download: let torchvision download CIFAR / Fashion-MNIST into ``data_dir`` when missing.
        img_size, in_chans, num_classes: ``None`` = the dataset's own value.
        train_subset, val_subset: use at most this many samples (seeded subset; the val subset
            is the same for every ``seed`` so runs stay comparable).
        label_noise: fraction p of TRAIN labels replaced by a different random class (seeded).
        model: a timm model name or one of ``CIFAR_MODELS`` (3x3 stride-1 stem, no max-pool).
        method: ``'vanilla'``, any ``MIXERS`` name, or ``'automix'``.
        epochs, batch_size: training length; ``batch_size`` is global (divided over DDP ranks).
        lr, min_lr, weight_decay, momentum: SGD with a cosine decay from ``lr`` to ``min_lr``.
        sched, sched_by_epoch, warmup_epochs: schedule; per-epoch updates as mmcv ``by_epoch``. ``sched`` has
            one value, ``'cosine'`` (every AutoMix recipe). Warm-up is linear per step, from lr/steps to lr.
        smoothing: label smoothing of the cross-entropies.
        alpha: Beta(alpha, alpha) for the mixing ratio.
        feature_stage: backbone stage fed to the Mix Block, indexed as timm's ``feature_info``
            (0 = stem; ResNet ``layer3`` = 3; ``None`` = the model's default, checked by models.py).
        ema_momentum, ema_end_momentum, ema_scope_start: momentum-encoder schedule
            (docs/algorithm.md#momentum-schedule).
        mask_loss_weight, mask_loss_margin, mask_loss_mode, mask_loss_schedule: Mix Block mask loss;
            schedule ``'upstream'`` reproduces OpenMixup's compounding ImageNet hook (docs/algorithm.md#mask-loss).
        lam_margin, lam_concat, reduction, upsample, switch_off, mask_adjust: AutoMix / Mix Block
            (``lam_margin < 0`` disables the fallback to MixUp).
        online_pass: how AutoMix's online encoder sees the clean batch and the backbone's mix: ``'separate'``
            (two passes), ``'fused'`` (one 2N pass, BatchNorm statistics per half: equal results, fewer kernel
            launches), ``'auto'`` (fused on CUDA, else separate). See ``automix_lite.fast.step``.
        cuda_graph: run AutoMix's whole step (forward, backward, SGD, EMA) as one CUDA graph
            (``automix_lite.fast.graphed.GraphedStep``) on a CUDA device; elsewhere the same code runs eagerly (its
            twin: same numbers, no speed-up). Needs method 'automix', one GPU (no DDP), bf16 or fp32 (not fp16),
            ``sched_by_epoch`` and no ``compile``; a non-finite loss stops the run instead of being skipped.
        att_norm: norm after the Mix Block's query/key conv (OpenMixup ``att_norm_cfg``): ``None`` (every
            ResNet recipe), ``'bn'`` or ``'ln'`` (the ViT recipes).
        mb_lr, mb_min_lr, mb_momentum: Mix Block optimiser (``None`` = same as the backbone;
            ``mb_min_lr=None`` = follow the main schedule).
        ema_bn_buffers: also EMA the BN buffers of the momentum encoder (OpenMixup: no).
        use_scale, head_ensemble, no_repeat_perm, momentum_features: passed to ``AutoMix`` (the Mix Block's
            learned scale; the squared-logit ensemble as the default evaluation head; pairs without fixed
            points; ``'full'`` or ``'early_stop'`` momentum features, see ``AutoMix``).
        Names that mean something else in timm: ``batch_size`` is the *global* batch (timm's is per process);
        ``amp`` is a string mode, not a switch; ``ema_*`` is AutoMix's momentum encoder, not timm's model EMA
        of the weights for evaluation.
        amp: ``'auto'`` (bf16 on compute capability >= 8, else fp16 on GPU; off on CPU),
            ``'off'``, ``'bf16'``, ``'fp16'`` (asked for on a CPU: a warning, the run is float32).
        channels_last, compile, workers, seed, device: runtime.
        threads: torch's CPU threads while ``train`` runs on the CPU (restored after); ``None`` leaves torch's
            setting. The thread count changes float rounding (so the exact numbers), not the algorithm.
        data_on_device: hold the decoded train/val images as one uint8 tensor on the training device and
            augment them there in batches (``automix_lite.fast.device_data``): ``'auto'`` = on for CUDA when the
            decoded dataset fits (under a quarter of the free device memory), ``True`` = always (any
            device, CPU included), ``False`` = the DataLoader pipeline. The strings ``'true'`` / ``'false'``
            (from the CLI) are read as booleans.
        out: output folder; eval_every / log_every: in epochs / steps.
        median_last_k: report the median top-1 of the last k epochs.
        keep_checkpoints: how many epoch checkpoints to keep; max_nonfinite: abort after this
            many non-finite losses in a row; resume: a run folder or checkpoint to continue.
        preset_name: name of the preset this config came from (provenance only).
    """

    # data
    dataset: str = "cifar10"
    data_dir: str = "data"
    download: bool = False
    img_size: int | None = None
    in_chans: int | None = None
    num_classes: int | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    label_noise: float = 0.0
    # model and method
    model: str = "resnet18_cifar"
    method: str = "automix"
    # optimisation
    epochs: int = 400
    batch_size: int = 100
    lr: float = 0.1
    min_lr: float = 0.05
    weight_decay: float = 1e-4
    momentum: float = 0.9
    sched: str = "cosine"
    sched_by_epoch: bool = True
    warmup_epochs: int = 0
    smoothing: float = 0.0
    alpha: float = 2.0
    # AutoMix
    feature_stage: int | None = None
    ema_momentum: float = 0.999
    ema_end_momentum: float = 0.999999
    ema_scope_start: float = 0.1
    mask_loss_weight: float = 0.1
    mask_loss_margin: float = 0.1
    mask_loss_mode: str = "L1"
    mask_loss_schedule: str = "constant"
    lam_margin: float = 0.08
    lam_concat: bool = False
    reduction: int = 2
    att_norm: str | None = None
    upsample: str = "nearest"
    mb_lr: float | None = None
    mb_min_lr: float | None = None
    mb_momentum: float | None = None
    switch_off: float = 0.0
    mask_adjust: float = 0.0
    ema_bn_buffers: bool = False
    use_scale: bool = True
    head_ensemble: bool = False
    no_repeat_perm: bool = False
    momentum_features: str = "full"
    online_pass: str = "auto"
    cuda_graph: bool = False
    # runtime
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    workers: int = 2
    threads: int | None = None
    data_on_device: str | bool = "auto"
    seed: int = 0
    device: str = "auto"
    out: str = "runs/automix"
    eval_every: int = 1
    log_every: int = 50
    median_last_k: int = 10
    keep_checkpoints: int = 3
    max_nonfinite: int = 5
    resume: str | None = None
    preset_name: str | None = None

    def __post_init__(self) -> None:
        # Paths from notebooks are often pathlib.Path; store str so the config stays JSON-friendly.
        for name in ("data_dir", "out", "resume"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        # the CLI passes every non-bool field as text: read 'true' / 'false' for data_on_device
        if isinstance(self.data_on_device, str) and self.data_on_device.lower() in BOOL_WORDS:
            self.data_on_device = BOOL_WORDS[self.data_on_device.lower()]

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        """Build a validated config from the named recipe in ``PRESETS``, then apply overrides.

        Args:
            name: a key of ``PRESETS`` (e.g. ``'quick'``, ``'cifar100'``, ``'imagenet'``).
            **overrides: field values that replace the preset's (e.g. ``epochs=2``).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}.{_suggest(name, PRESETS)} "
                             f"Available presets: {', '.join(PRESETS)}.")
        _check_fields(overrides, f"TrainConfig.preset({name!r}, ...)")
        return cls(**{**PRESETS[name], "preset_name": name, **overrides}).validate()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of ``to_dict`` (missing keys take their defaults); validates the result."""
        if not isinstance(d, dict):
            raise ConfigTypeError(f"TrainConfig.from_dict expects a dict, got {type(d).__name__}.")
        _check_fields(d, "TrainConfig.from_dict")
        return cls(**d).validate()

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def replace(self, **kw: Any) -> "TrainConfig":
        """A validated copy with some fields changed (the original is untouched)."""
        _check_fields(kw, "TrainConfig.replace")
        return dataclasses.replace(self, **kw).validate()

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Check types and values; raise one error listing every problem. Returns ``self``.

        Raises:
            ConfigTypeError (a TypeError and a ValueError): a field has the wrong type.
            ValueError: a value is out of range or an unknown name (with a suggestion).
        """
        bad_types = field_type_errors(self)
        if bad_types:
            raise ConfigTypeError("invalid TrainConfig field type(s):\n  " + "\n  ".join(bad_types))
        errors = config_errors(self)
        if errors:
            raise ValueError("invalid TrainConfig:\n  " + "\n  ".join(errors))
        return self


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest option, or '' when nothing is close."""
    return did_you_mean(name, options)


def _check_fields(kw: dict[str, Any], where: str) -> None:
    unknown = [k for k in kw if k not in _FIELD_NAMES]
    if unknown:
        hints = "".join(f"\n  {k!r}:{_suggest(k, _FIELD_NAMES) or ' no close match.'}" for k in unknown)
        raise ValueError(f"{where}: unknown TrainConfig field(s) {unknown}.{hints}\n"
                         f"Valid fields: {', '.join(_FIELD_NAMES)}.")
