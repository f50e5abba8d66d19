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
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from .._names import BOOL_WORDS, did_you_mean
from ..core.mixblock import MASK_LOSS_MODES, UPSAMPLE_MODES  # owned by the Mix Block
from ..fast.step import ONLINE_PASSES  # owned by the fast step

__all__ = ["TrainConfig", "PRESETS", "DATASETS", "CIFAR_MODELS", "METHODS", "ConfigTypeError"]

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet", "imagenet", "folder", "fake")
CIFAR_MODELS = ("resnet_tiny_cifar", "resnet18_cifar", "resnet50_cifar", "resnext50_cifar", "wrn28_8_cifar")
# Names in the public API (docs/README.md#public-api); the live list is MIXERS from automix_lite.core.mixing + "automix".
_CONTRACT_MIXERS = ("vanilla", "mixup", "cutmix", "manifoldmix", "fmix", "resizemix", "saliencymix",
                    "smoothmix", "gridmix")
METHODS = _CONTRACT_MIXERS + ("automix",)
SCHEDULERS = ("cosine",)
AMP_MODES = ("auto", "off", "bf16", "fp16")
MASK_LOSS_SCHEDULES = ("constant", "cosine", "upstream")
MOMENTUM_FEATURES = ("full", "early_stop")
ATT_NORMS = (None, "bn", "ln")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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
        hints = typing.get_type_hints(type(self))
        bad_types = [f"{f.name}={getattr(self, f.name)!r} ({type(getattr(self, f.name)).__name__}) "
                     f"should be {_type_name(hints[f.name])}"
                     for f in dataclasses.fields(self) if not _type_ok(getattr(self, f.name), hints[f.name])]
        if bad_types:
            raise ConfigTypeError("invalid TrainConfig field type(s):\n  " + "\n  ".join(bad_types))

        errors: list[str] = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                errors.append(msg)

        def choice(name: str, options: typing.Iterable[str]) -> None:
            value = getattr(self, name)
            options = tuple(options)
            need(value in options, f"{name}={value!r} is not one of {', '.join(options)}.{_suggest(value, options)}")

        choice("dataset", DATASETS)
        choice("method", _known_methods())
        choice("sched", SCHEDULERS)
        choice("amp", AMP_MODES)
        choice("mask_loss_mode", MASK_LOSS_MODES)
        choice("mask_loss_schedule", MASK_LOSS_SCHEDULES)
        choice("upsample", UPSAMPLE_MODES)
        choice("online_pass", ONLINE_PASSES)
        choice("momentum_features", MOMENTUM_FEATURES)
        if self.cuda_graph:
            need(self.method == "automix", f"cuda_graph=True graphs the AutoMix step only (method={self.method!r}).")
            need(self.amp != "fp16", "cuda_graph=True cannot use amp='fp16' (it needs a GradScaler); use 'bf16' "
                                     "or 'off'.")
            need(not self.compile, "cuda_graph=True and compile=True are alternatives; pick one.")
            need(self.sched_by_epoch, "cuda_graph=True needs sched_by_epoch=True (a learning rate changing every "
                                      "step would re-capture the graph every step).")
        need(self.att_norm in ATT_NORMS, f"att_norm={self.att_norm!r} is not one of None, 'bn', 'ln'.")
        need(bool(_DEVICE_RE.match(self.device)),
             f"device={self.device!r} should be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
        model_error = _check_model(self.model)
        if model_error:
            errors.append(model_error)

        for name in ("img_size", "in_chans", "train_subset", "val_subset"):
            value = getattr(self, name)
            need(value is None or value > 0, f"{name}={value} must be a positive integer or None.")
        need(self.num_classes is None or self.num_classes >= 2,
             f"num_classes={self.num_classes} must be >= 2 (or None = from the dataset).")
        need(0.0 <= self.label_noise < 1.0, f"label_noise={self.label_noise} is a fraction in [0, 1).")
        need(self.epochs > 0, f"epochs={self.epochs} must be > 0.")
        need(self.batch_size > 0, f"batch_size={self.batch_size} must be > 0 (it is the global batch).")
        need(self.lr >= 0, f"lr={self.lr} must be >= 0 (a negative learning rate ascends the loss).")
        if self.lr >= 0:
            need(0 <= self.min_lr <= self.lr, f"min_lr={self.min_lr} must be in [0, lr={self.lr}].")
        if self.mb_lr is not None:
            need(self.mb_lr >= 0, f"mb_lr={self.mb_lr} must be >= 0 (or None = same as lr).")
        if self.mb_min_lr is not None:
            mb_lr = self.lr if self.mb_lr is None else self.mb_lr
            need(0 <= self.mb_min_lr <= mb_lr, f"mb_min_lr={self.mb_min_lr} must be in [0, mb_lr={mb_lr}].")
        need(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0.")
        for name in ("momentum", "mb_momentum"):
            value = getattr(self, name)
            need(value is None or 0 <= value < 1, f"{name}={value} (SGD momentum) must be in [0, 1).")
        need(self.epochs <= 0 or 0 <= self.warmup_epochs < self.epochs,
             f"warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs}).")
        need(0 <= self.smoothing < 1, f"smoothing={self.smoothing} must be in [0, 1).")
        need(self.alpha > 0, f"alpha={self.alpha} must be > 0: lambda ~ Beta(alpha, alpha) "
                             "(AutoMix uses 2.0, MixUp usually 1.0 or 0.2).")
        for name in ("ema_momentum", "ema_end_momentum"):
            value = getattr(self, name)
            need(0 <= value < 1, f"{name}={value} must be in [0, 1) (AutoMix: 0.999 -> 0.999999); "
                                 "a momentum of 1 would freeze the momentum encoder.")
        need(0 <= self.ema_scope_start <= 1, f"ema_scope_start={self.ema_scope_start} must be in [0, 1].")
        need(self.mask_loss_weight >= 0, f"mask_loss_weight={self.mask_loss_weight} must be >= 0.")
        need(self.mask_loss_margin >= 0, f"mask_loss_margin={self.mask_loss_margin} must be >= 0.")
        need(self.lam_margin < 0.5, f"lam_margin={self.lam_margin} must be < 0.5 (AutoMix: 0.08; < 0 disables the "
                                    "fallback to MixUp).")
        need(self.reduction >= 1, f"reduction={self.reduction} must be >= 1 (AutoMix: 2).")
        need(0 <= self.switch_off <= 1, f"switch_off={self.switch_off} must be in [0, 1].")
        need(0 <= self.mask_adjust <= 1, f"mask_adjust={self.mask_adjust} is a probability in [0, 1].")
        need(self.data_on_device in ("auto", True, False),
             f"data_on_device={self.data_on_device!r} should be 'auto', True or False.")
        need(self.threads is None or self.threads >= 1, f"threads={self.threads} must be >= 1 or None.")
        need(self.workers >= 0, f"workers={self.workers} must be >= 0 (0 = load in the main process).")
        need(self.seed >= 0, f"seed={self.seed} must be >= 0.")
        for name in ("eval_every", "log_every", "median_last_k", "keep_checkpoints"):
            value = getattr(self, name)
            need(value >= 1, f"{name}={value} must be >= 1.")
        need(self.max_nonfinite >= 1, f"max_nonfinite={self.max_nonfinite} must be >= 1 (1 = stop at the first "
                                      "non-finite loss).")
        need(self.preset_name is None or self.preset_name in PRESETS,
             f"preset_name={self.preset_name!r} is not a known preset.{_suggest(self.preset_name or '', PRESETS)}")
        if errors:
            raise ValueError("invalid TrainConfig:\n  " + "\n  ".join(errors))
        return self


# ---- presets: recipes as data (docs/recipes.md) ------------------------------------------
_CIFAR_R18 = dict(  # OpenMixup configs/classification/cifar100/automix/basic/r18_l2_a2_near_L1_01_mlr5e_2.py
    dataset="cifar100", model="resnet18_cifar", method="automix", img_size=32, epochs=400, batch_size=100,
    lr=0.1, min_lr=0.05, weight_decay=1e-4, momentum=0.9, alpha=2.0, ema_momentum=0.999,
    ema_end_momentum=0.999999, mask_loss_weight=0.1, mask_loss_margin=0.1, lam_margin=0.08,
    lam_concat=False, median_last_k=10, workers=4,
)
_TINY_R18 = dict(  # OpenMixup configs/classification/tiny_imagenet/automix/basic/r18_l2_a2_near_mb_mlr1e_3_bb_mlr5e_2.py
    _CIFAR_R18, dataset="tiny-imagenet", img_size=64, lr=0.2, min_lr=0.05, mb_lr=0.1, mb_min_lr=1e-3,
)
_IMAGENET_R18 = dict(  # OpenMixup configs/classification/imagenet/automix/basic/r18_l2_a2_near_lam_cat_mb_mlr1e_3_bb_mlr0.py
    dataset="imagenet", model="resnet18", method="automix", img_size=224, epochs=100, batch_size=256,
    lr=0.1, min_lr=0.0, weight_decay=1e-4, momentum=0.9, alpha=2.0, mb_lr=0.1, mb_min_lr=1e-3,
    lam_concat=True, ema_momentum=0.999, ema_end_momentum=0.99999,
    # "0.1 to 0" cosine hook that compounds every iteration (docs/algorithm.md#mask-loss): reproduced, not fixed.
    mask_loss_schedule="upstream", median_last_k=5, workers=8, channels_last=True,
)

_QUICK = dict(
    dataset="digits", img_size=16, in_chans=3, model="resnet_tiny_cifar", method="automix",
    epochs=16, batch_size=32, lr=0.1, min_lr=0.0, weight_decay=1e-4, momentum=0.9, alpha=2.0,
    feature_stage=2, att_norm="bn", mb_lr=0.02, mb_min_lr=0.01,
    ema_momentum=0.95, ema_end_momentum=0.999, label_noise=0.0, amp="off", workers=0, threads=1,
    median_last_k=3, log_every=10, out="runs/quick",
)

PRESETS: dict[str, dict[str, Any]] = {
    # Offline CPU demo (~2-3 min on 2 cores) that must *show* AutoMix: structured masks, curves without a
    # collapse (automix_lite.trainer.diagnostics measures both). Not an upstream recipe; each departure has a reason:
    # * digits (1,297 train images of 8x8, bundled with scikit-learn) at 16 px: 8x8 digits lose nothing and a
    #   step costs ~1/4 of a 32-px step: 640 steps of 32 take less time than 240 steps of 64 at 32 px took.
    # * feature_stage=2 (layer2): an 8x8 feature map at 16 px, the map size the CIFAR recipes give the Mix
    #   Block from layer3 at 32 px (layer3 at 16 px would be 4x4).
    # * att_norm="bn" (OpenMixup att_norm_cfg): with the N(0, 0.01) init and no norm, q.k ~ 1e-2, the
    #   attention stays uniform, so every mask is one flat value, for far longer than ~1,000 steps; normalised
    #   q/k make the attention non-uniform from the first step.
    # * mb_lr 0.02 -> 0.01: at the backbone's 0.1 the own-area of the masks random-walks into the sigmoid's
    #   flat ends (all own or all partner) within a few dozen steps and stays there once the classifier is
    #   confident; the recipes' Mix Block keeps a floor too (mb_min_lr).
    # * threads=1: its 16-px steps are too small to share between threads; one thread ran the job faster than
    #   two on the idle 2-core machine and leaves a core to the notebook / browser (benchmarks/busy_neighbour.py).
    # * 40 steps per epoch, 640 in all: the EMA horizon 1/(1-m) of 0.999 (1,000 steps) would leave the momentum
    #   encoder at its initialisation for most of the run; 0.95 -> 0.999 keeps it a lagging copy.
    "quick": _QUICK,
    # The "show the gain" regime: the quick preset's AutoMix on few images for many epochs, where vanilla training
    # memorises its images (benchmarks/small_data.py; results and the search behind them in
    # benchmarks/results/small_data.md and docs/recipes.md#small-data).
    "small_data": dict(_QUICK, dataset="fashion-mnist", data_dir="data/fashion-mnist", download=True, img_size=16,
                       train_subset=500, val_subset=2000, epochs=120, eval_every=10, out="runs/small_data"),
    # No AutoMix CIFAR-10 config exists in OpenMixup (benchmark: "CutMix-style settings");
    # the CIFAR-100 R-18 recipe r18_l2_a2_near_L1_01_mlr5e_2.py with 10 classes.
    "cifar10": dict(_CIFAR_R18, dataset="cifar10", out="runs/cifar10"),
    # cifar100/automix/basic/r18_l2_a2_near_L1_01_mlr5e_2.py (paper table: 800 epochs; config: 400)
    "cifar100": dict(_CIFAR_R18, out="runs/cifar100"),
    # cifar100/automix/basic/rx50_l2_a2_near_L1_01_mlr5e_2.py
    "cifar100_rx50": dict(_CIFAR_R18, model="resnext50_cifar", out="runs/cifar100_rx50"),
    # cifar100/automix/basic/wrn28_8_l1_a2_near_L1_01_mlr1e_3.py: Mix Block SGD momentum 0
    # ("performs better in 400ep"); features from the second block group (OpenMixup out_indices=(1,2)),
    # here in the timm forward_intermediates convention (0 = stem, i = i-th block group).
    "cifar100_wrn28_8": dict(
        _CIFAR_R18, model="wrn28_8_cifar", lr=0.03, min_lr=1e-3, weight_decay=1e-3, mb_momentum=0.0,
        feature_stage=2, out="runs/cifar100_wrn28_8",
    ),
    # tiny_imagenet/automix/basic/r18_l2_a2_near_mb_mlr1e_3_bb_mlr5e_2.py
    "tiny_imagenet": dict(_TINY_R18, out="runs/tiny_imagenet"),
    # tiny_imagenet/automix/basic/rx50_l2_a2_near_mb_mlr1e_3_bb_mlr5e_2_2xb50.py (2 x 50 = 100 global)
    "tiny_imagenet_rx50": dict(_TINY_R18, model="resnext50_cifar", out="runs/tiny_imagenet_rx50"),
    # imagenet/automix/basic/r18_l2_a2_near_lam_cat_mb_mlr1e_3_bb_mlr0.py (4 x 64 = 256 global)
    "imagenet": dict(_IMAGENET_R18, out="runs/imagenet"),
    # imagenet/automix/basic/r50_l2_a2_near_lam_cat_mb_mlr1e_3_bb_mlr0.py
    "imagenet_r50": dict(_IMAGENET_R18, model="resnet50", out="runs/imagenet_r50"),
}


# ---- helpers ---------------------------------------------------------------------------
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


def _known_methods() -> tuple[str, ...]:
    try:
        from ..core.mixing import MIXERS
    except ModuleNotFoundError as e:  # mixing.py not present: fall back to the contract names
        if e.name != f"{__package__}.mixing":
            raise
        return METHODS
    return tuple(dict.fromkeys(("vanilla", *MIXERS, "automix")))


def _check_model(name: str) -> str | None:
    """Return an error message for an unknown model name, else None (imports timm lazily)."""
    if name in CIFAR_MODELS:
        return None
    from ..core import models as _models  # a broken models.py (or timm) must fail here, not pass as "unknown model"

    extra = tuple(_models.CIFAR_MODELS)  # models.py may register more CIFAR-stem names
    if name in extra:
        return None
    cifar = CIFAR_MODELS + extra
    if name.endswith("_cifar"):
        return f"model={name!r} is not a CIFAR-stem model ({', '.join(cifar)}).{_suggest(name, cifar)}"
    import timm

    if timm.is_model(name):
        return None
    return (f"model={name!r} is neither a timm model nor a CIFAR-stem model."
            f"{_suggest(name, cifar + tuple(timm.list_models()))} See timm.list_models() for timm names.")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))
