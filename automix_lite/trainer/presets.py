"""The named recipes of ``TrainConfig.preset``, as data: each names the OpenMixup config it transcribes
(docs/recipes.md); the ``quick`` / ``small_data`` presets are this project's, each departure with its reason.
"""
from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

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
