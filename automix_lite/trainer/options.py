"""What each ``TrainConfig`` field may hold, and the checks ``TrainConfig.validate`` runs, one group of fields
per function (names and modes, data, optimisation, AutoMix, runtime). Every check adds a message; ``validate``
raises one error listing them all.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Callable, Iterable

from .._names import did_you_mean
from ..core.mixblock import MASK_LOSS_MODES, UPSAMPLE_MODES  # owned by the Mix Block
from ..fast.step import ONLINE_PASSES  # owned by the fast step
from .presets import PRESETS

__all__ = ["DATASETS", "CIFAR_MODELS", "METHODS", "config_errors", "field_type_errors"]

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet", "imagenet", "folder", "fake")
CIFAR_MODELS = ("resnet_tiny_cifar", "resnet18_cifar", "resnet50_cifar", "resnext50_cifar", "wrn28_8_cifar")
# Names in the public API (docs/README.md#public-api); the live list is core.mixing.MIXERS + "automix".
_CONTRACT_MIXERS = ("vanilla", "mixup", "cutmix", "manifoldmix", "fmix", "resizemix", "saliencymix",
                    "smoothmix", "gridmix")
METHODS = _CONTRACT_MIXERS + ("automix",)
SCHEDULERS = ("cosine",)
AMP_MODES = ("auto", "off", "bf16", "fp16")
MASK_LOSS_SCHEDULES = ("constant", "cosine", "upstream")
MOMENTUM_FEATURES = ("full", "early_stop")
ATT_NORMS = (None, "bn", "ln")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def field_type_errors(cfg) -> list[str]:
    """One message per field whose value does not have the annotated type."""
    hints = typing.get_type_hints(type(cfg))
    return [f"{f.name}={getattr(cfg, f.name)!r} ({type(getattr(cfg, f.name)).__name__}) "
            f"should be {_type_name(hints[f.name])}"
            for f in dataclasses.fields(cfg) if not _type_ok(getattr(cfg, f.name), hints[f.name])]


def config_errors(cfg) -> list[str]:
    """Every value problem of ``cfg`` (types already checked), in field order."""
    errors: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            errors.append(msg)

    for group in (_names_and_modes, _data, _optimisation, _automix, _runtime):
        group(cfg, need)
    return errors


def _choice(cfg, need: Callable[[bool, str], None], name: str, options: Iterable) -> None:
    value = getattr(cfg, name)
    options = tuple(options)
    need(value in options, f"{name}={value!r} is not one of {', '.join(options)}.{_suggest(value, options)}")


def _names_and_modes(cfg, need: Callable[[bool, str], None]) -> None:
    """Named choices, the CUDA-graph constraints, the device string and the model name."""
    _choice(cfg, need, "dataset", DATASETS)
    _choice(cfg, need, "method", _known_methods())
    _choice(cfg, need, "sched", SCHEDULERS)
    _choice(cfg, need, "amp", AMP_MODES)
    _choice(cfg, need, "mask_loss_mode", MASK_LOSS_MODES)
    _choice(cfg, need, "mask_loss_schedule", MASK_LOSS_SCHEDULES)
    _choice(cfg, need, "upsample", UPSAMPLE_MODES)
    _choice(cfg, need, "online_pass", ONLINE_PASSES)
    _choice(cfg, need, "momentum_features", MOMENTUM_FEATURES)
    if cfg.cuda_graph:
        need(cfg.method == "automix", f"cuda_graph=True graphs the AutoMix step only (method={cfg.method!r}).")
        need(cfg.amp != "fp16", "cuda_graph=True cannot use amp='fp16' (it needs a GradScaler): use 'auto' (bf16 "
                                 "on compute capability >= 8; on a T4 the graph is skipped for fp16 eager) or 'off'.")
        need(not cfg.compile, "cuda_graph=True and compile=True are alternatives; pick one.")
        need(cfg.sched_by_epoch, "cuda_graph=True needs sched_by_epoch=True (a learning rate changing every "
                                  "step would re-capture the graph every step).")
    need(cfg.att_norm in ATT_NORMS, f"att_norm={cfg.att_norm!r} is not one of None, 'bn', 'ln'.")
    need(bool(_DEVICE_RE.match(cfg.device)),
         f"device={cfg.device!r} should be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    need(_check_model(cfg.model) is None, _check_model(cfg.model) or "")



def _data(cfg, need: Callable[[bool, str], None]) -> None:
    """Dataset sizes, classes and label noise."""
    for name in ("img_size", "in_chans", "train_subset", "val_subset"):
        value = getattr(cfg, name)
        need(value is None or value > 0, f"{name}={value} must be a positive integer or None.")
    need(cfg.num_classes is None or cfg.num_classes >= 2,
         f"num_classes={cfg.num_classes} must be >= 2 (or None = from the dataset).")
    need(0.0 <= cfg.label_noise < 1.0, f"label_noise={cfg.label_noise} is a fraction in [0, 1).")


def _optimisation(cfg, need: Callable[[bool, str], None]) -> None:
    """Length, batch, SGD and its schedule, smoothing and α."""
    need(cfg.epochs > 0, f"epochs={cfg.epochs} must be > 0.")
    need(cfg.batch_size > 0, f"batch_size={cfg.batch_size} must be > 0 (it is the global batch).")
    need(cfg.lr >= 0, f"lr={cfg.lr} must be >= 0 (a negative learning rate ascends the loss).")
    if cfg.lr >= 0:
        need(0 <= cfg.min_lr <= cfg.lr, f"min_lr={cfg.min_lr} must be in [0, lr={cfg.lr}].")
    if cfg.mb_lr is not None:
        need(cfg.mb_lr >= 0, f"mb_lr={cfg.mb_lr} must be >= 0 (or None = same as lr).")
    if cfg.mb_min_lr is not None:
        mb_lr = cfg.lr if cfg.mb_lr is None else cfg.mb_lr
        need(0 <= cfg.mb_min_lr <= mb_lr, f"mb_min_lr={cfg.mb_min_lr} must be in [0, mb_lr={mb_lr}].")
    need(cfg.weight_decay >= 0, f"weight_decay={cfg.weight_decay} must be >= 0.")
    for name in ("momentum", "mb_momentum"):
        value = getattr(cfg, name)
        need(value is None or 0 <= value < 1, f"{name}={value} (SGD momentum) must be in [0, 1).")
    need(cfg.epochs <= 0 or 0 <= cfg.warmup_epochs < cfg.epochs,
         f"warmup_epochs={cfg.warmup_epochs} must be in [0, epochs={cfg.epochs}).")
    need(0 <= cfg.smoothing < 1, f"smoothing={cfg.smoothing} must be in [0, 1).")
    need(cfg.alpha > 0, f"alpha={cfg.alpha} must be > 0: lambda ~ Beta(alpha, alpha) "
                         "(AutoMix uses 2.0, MixUp usually 1.0 or 0.2).")


def _automix(cfg, need: Callable[[bool, str], None]) -> None:
    """The momentum encoder, the mask loss and the Mix Block."""
    for name in ("ema_momentum", "ema_end_momentum"):
        value = getattr(cfg, name)
        need(0 <= value < 1, f"{name}={value} must be in [0, 1) (AutoMix: 0.999 -> 0.999999); "
                             "a momentum of 1 would freeze the momentum encoder.")
    need(0 <= cfg.ema_scope_start <= 1, f"ema_scope_start={cfg.ema_scope_start} must be in [0, 1].")
    need(cfg.mask_loss_weight >= 0, f"mask_loss_weight={cfg.mask_loss_weight} must be >= 0.")
    need(cfg.mask_loss_margin >= 0, f"mask_loss_margin={cfg.mask_loss_margin} must be >= 0.")
    need(cfg.lam_margin < 0.5, f"lam_margin={cfg.lam_margin} must be < 0.5 (AutoMix: 0.08; < 0 disables the "
                                "fallback to MixUp).")
    need(cfg.reduction >= 1, f"reduction={cfg.reduction} must be >= 1 (AutoMix: 2).")
    need(0 <= cfg.switch_off <= 1, f"switch_off={cfg.switch_off} must be in [0, 1].")
    need(0 <= cfg.mask_adjust <= 1, f"mask_adjust={cfg.mask_adjust} is a probability in [0, 1].")


def _runtime(cfg, need: Callable[[bool, str], None]) -> None:
    """Device data, threads, workers, logging, checkpoints, provenance."""
    need(cfg.data_on_device in ("auto", True, False),
         f"data_on_device={cfg.data_on_device!r} should be 'auto', True or False.")
    need(cfg.threads is None or cfg.threads >= 1, f"threads={cfg.threads} must be >= 1 or None.")
    need(cfg.workers >= 0, f"workers={cfg.workers} must be >= 0 (0 = load in the main process).")
    need(cfg.seed >= 0, f"seed={cfg.seed} must be >= 0.")
    for name in ("eval_every", "log_every", "median_last_k", "keep_checkpoints"):
        value = getattr(cfg, name)
        need(value >= 1, f"{name}={value} must be >= 1.")
    need(cfg.max_nonfinite >= 1, f"max_nonfinite={cfg.max_nonfinite} must be >= 1 (1 = stop at the first "
                                  "non-finite loss).")
    need(cfg.preset_name is None or cfg.preset_name in PRESETS,
         f"preset_name={cfg.preset_name!r} is not a known preset.{_suggest(cfg.preset_name or '', PRESETS)}")


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest option, or '' when nothing is close."""
    return did_you_mean(name, options)


def _known_methods() -> tuple[str, ...]:
    try:
        from ..core.mixing import MIXERS
    except ModuleNotFoundError as e:  # mixing.py not present: fall back to the contract names
        if not (e.name or "").endswith(".core.mixing"):
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
