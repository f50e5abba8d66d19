"""Datasets, transforms and loaders for automix_lite.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) trains on CIFAR-10/100, Tiny-ImageNet and
ImageNet with the OpenMixup pipelines (docs/recipes.md#data-pipelines):
CIFAR ``RandomCrop(32, padding=4, reflect)`` + flip;
Tiny-ImageNet ``RandomResizedCrop(64, bicubic)`` + flip, test at 64 px; ImageNet
``RandomResizedCrop(224, bicubic)`` + flip, test ``Resize(256)`` + ``CenterCrop(224)``.
Offline datasets for CPU demos and tests: scikit-learn's bundled ``digits`` (1,797 8x8 images),
``fashion-mnist`` (Debian files or torchvision's layout) and ``fake`` (seeded synthetic images).

Deviations from OpenMixup: ``label_noise`` / ``train_subset`` / ``val_subset`` are additions for
small-data experiments; ``img_size`` other than the native size inserts a ``Resize``.

Randomness: subsets and label noise use generators seeded from ``cfg.seed`` (the val subset and the
digits split use a fixed seed, so every run sees the same evaluation set); per-sample augmentation
uses torch's default RNG, which the DataLoader seeds per worker from its seeded generator.

With ``cfg.data_on_device`` (``'auto'`` on CUDA when the decoded data fits), ``build_loaders`` returns
``device_data.DeviceLoader``s instead: the same datasets decoded once onto the training device, the same
sampler and batches, the pipeline's augmentation applied there per batch (pixel-identical for a given draw).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .config import TrainConfig
from .datasets import (  # noqa: F401
    FakeImageDataset,
    InMemoryImageDataset,
    LabelledView,
    _FileListDataset,
    _subset,
    _targets,
    corrupt_labels,
    decoded_nbytes,
    device_images,
)
from .fastpaths import check_device_images, fallback_reason, fallback_warning
from .sources import _generator, _transforms, digits_datasets, fashion_datasets, file_datasets, read_idx  # noqa: F401

__all__ = ["DatasetInfo", "InMemoryImageDataset", "FakeImageDataset", "LabelledView", "build_datasets",
           "build_loaders", "default_device", "denormalize", "corrupt_labels", "read_idx", "per_rank_batch_size"]

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# name: (native img_size, native channels, classes or None = from the folder, mean, std)
_DEFAULTS = {
    "digits": (32, 1, 10, (0.305,), (0.33,)),  # load_digits / 16, measured after upsampling to 32 px
    "fashion-mnist": (28, 1, 10, (0.286,), (0.353,)),
    "cifar10": (32, 3, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (32, 3, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny-imagenet": (64, 3, 200, *_IMAGENET_STATS),
    "imagenet": (224, 3, None, *_IMAGENET_STATS),
    "folder": (224, 3, None, *_IMAGENET_STATS),
    "fake": (32, 3, 10, (0.5,), (0.25,)),
}


@dataclass
class DatasetInfo:
    """What the model and the figures need to know about a dataset.

    Args:
        num_classes: size of the classifier output.
        in_chans, img_size: shape of one image tensor, ``[in_chans, img_size, img_size]``.
        mean, std: per-channel normalisation (length ``in_chans``); see ``denormalize``.
        class_names: one name per class index.
        data_on_device: where ``build_loaders`` put the decoded data: "on", or "off: why" (``fast_paths``).
    """

    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    data_on_device: str = "off"


# ---------------------------------------------------------------- pure helpers
def denormalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Undo the dataset normalisation for display: ``[..., C, H, W]`` -> values in [0, 1]."""
    if x.dim() < 3 or x.shape[-3] != len(info.mean):
        raise ValueError(f"expected [..., {len(info.mean)}, H, W] images, got shape {tuple(x.shape)}")
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # [C, 1, 1]
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """``batch_size`` is the global batch; each DDP rank gets an equal share."""
    if world_size < 1 or batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} is the global batch and must divide evenly over "
                         f"world_size={world_size} ranks; pick a multiple of {world_size}.")
    return batch_size // world_size


class _ShardSampler(Sampler[int]):
    """Rank r of W takes indices r, r+W, ... : disjoint, no padding, so summed val counts are exact."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------- transforms (PIL pipelines)
def _image_format(cfg: TrainConfig) -> tuple[int, int, int, tuple, tuple]:
    """(img_size, in_chans, native number of classes, mean, std) of ``cfg``'s dataset as it will be fed."""
    native, native_chans, classes, mean, std = _DEFAULTS[cfg.dataset]
    size, chans = cfg.img_size or native, cfg.in_chans or native_chans
    if len(mean) == 1:  # grey datasets: repeat the channel (fake: any number of channels)
        mean, std = mean * chans, std * chans
    elif chans == 1:  # RGB datasets read as grey: luma-weighted statistics (approximate std)
        luma = (0.299, 0.587, 0.114)
        mean, std = (sum(w * v for w, v in zip(luma, mean)),), (sum(w * v for w, v in zip(luma, std)),)
    elif chans != 3:
        raise ValueError(f"dataset {cfg.dataset!r} has RGB images: in_chans must be 1 or 3, got {chans}")
    return size, chans, classes, mean, std


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Build (train, val, info) for ``cfg.dataset``; ``cfg.train_subset`` / ``label_noise`` apply to train.

    Items are ``(image [C, H, W] float normalised, label int)``. A train set with a subset or label
    noise is a ``LabelledView`` with ``.targets`` (used labels) and ``.clean_targets``.
    Raises ``FileNotFoundError`` (with the expected layout / how to download) when data is missing.
    """
    cfg.validate()
    size, chans, classes, mean, std = _image_format(cfg)
    memory = dict(img_size=size, in_chans=chans, mean=mean, std=std)
    if cfg.dataset == "digits":
        train, val, names = digits_datasets(memory)
    elif cfg.dataset == "fashion-mnist":
        train, val, names = fashion_datasets(cfg, memory)
    elif cfg.dataset == "fake":
        classes = cfg.num_classes or classes
        fake = dict(num_classes=classes, in_chans=chans, img_size=size, mean=mean, std=std)
        train, val = FakeImageDataset(512, seed=1, **fake), FakeImageDataset(128, seed=2, **fake)
        names = [f"class_{k}" for k in range(classes)]
    else:  # cifar10/100, tiny-imagenet, imagenet, folder: files under data_dir
        train, val, names = file_datasets(cfg, Path(cfg.data_dir).expanduser(), size, chans, mean, std)
    num_classes = cfg.num_classes or len(names)
    if num_classes < len(names):
        raise ValueError(f"num_classes={cfg.num_classes} but {cfg.dataset} has {len(names)} classes; "
                         f"use num_classes=None to take it from the dataset.")
    train = _subset(train, cfg.train_subset, _generator(cfg.seed, "train-subset"), cfg.label_noise,
                    num_classes, _generator(cfg.seed, "label-noise"))
    val = _subset(val, cfg.val_subset, _generator(0, "val-subset"))
    info = DatasetInfo(num_classes=num_classes, in_chans=chans, img_size=size, mean=tuple(mean),
                       std=tuple(std), class_names=names)
    return train, val, info


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled per epoch from ``seed + epoch``) that can start mid-epoch.

    Used for the train split on one process too (``num_replicas=1``), so the order of an epoch depends only on
    ``(seed, epoch)`` and a resumed run can skip exactly the samples already seen: ``set_start(k)`` drops the
    first ``k`` indices of this rank's share for the current epoch (reset by ``set_epoch``).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start={start} outside this rank's epoch of {self.num_samples} samples")
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def default_device(cfg: TrainConfig) -> torch.device:
    """The device ``train()`` uses for ``cfg.device`` (``runtime.resolve_device`` with torchrun's LOCAL_RANK)."""
    from ..fast.runtime import dist_env, resolve_device

    return resolve_device(cfg.device, local_rank=dist_env()[2])


def _device_loaders(cfg: TrainConfig, train_ds: Dataset, val_ds: Dataset, info: DatasetInfo, device: torch.device,
                    batch: int, train_sampler: Sampler, val_sampler: Sampler | None, generator: torch.Generator):
    """((train, val) ``DeviceLoader``s or None, the ``fast_paths`` entry). ``data_on_device=True`` raises on any
    failure; ``'auto'`` falls back to the ``DataLoader`` (with one warning) when decoding fails, runs out of
    memory, or the first validation images differ from the dataset's (``fastpaths.check_device_images``)."""
    from ..fast import device_data as dd

    try:
        if not dd.wanted(cfg.data_on_device, device, lambda: decoded_nbytes(train_ds) + decoded_nbytes(val_ds)):
            return None, f"off: data_on_device={cfg.data_on_device!r} on {device.type}"
        train_data = device_images(train_ds, device, info.in_chans)
        val_data = device_images(val_ds, device, info.in_chans)
        reason = None if cfg.data_on_device is True else check_device_images(val_data, val_ds)
    except dd.UnsupportedPipeline as e:
        if cfg.data_on_device is True:
            raise ValueError(f"data_on_device=True: {e}. Use data_on_device='auto' or False.") from e
        return None, f"off: {e}"
    except Exception as e:  # noqa: BLE001 - out of memory while decoding, or any other failure of the fast path
        if cfg.data_on_device is True:
            raise
        reason = fallback_reason(e)  # a device fault (illegal memory access, device-side assert) re-raises
    if reason is not None:
        train_data = val_data = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        fallback_warning("data on the device (data_on_device='auto')", reason, "data_on_device=True")
        return None, f"off: check failed ({reason})"
    return (dd.DeviceLoader(train_data, batch, sampler=train_sampler, drop_last=True, generator=generator),
            dd.DeviceLoader(val_data, batch, sampler=val_sampler, drop_last=False)), (
        "on" if cfg.data_on_device is True else "on (checked against the dataset)")


def build_loaders(cfg: TrainConfig, *, distributed: bool = False, rank: int = 0, world_size: int = 1,
                  device: torch.device | str | None = None):
    """Build ``(train_loader, val_loader, train_sampler_or_None, info)``.

    Args:
        cfg: the run config; ``cfg.batch_size`` is the GLOBAL batch, each rank loads
            ``batch_size // world_size``.
        distributed: shard the data over ``world_size`` ranks. The train sampler is always a
            ``ResumableSampler`` (a ``DistributedSampler``: shuffle, ``seed=cfg.seed``, drop_last; one replica
            when not distributed); the trainer must call ``train_sampler.set_epoch(epoch)`` every epoch. Val is sharded
            without padding (rank r takes r, r+W, ...), so all-reduced correct/total counts are exact.
        rank, world_size: this process's DDP rank and the number of ranks.
        device: the training device (``None``: ``default_device(cfg)``). With ``cfg.data_on_device`` the loaders
            are ``device_data.DeviceLoader``s holding the decoded images there (same sampler, same batches,
            augmentation on the device); otherwise ``DataLoader``s.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    train_ds, val_ds, info = build_datasets(cfg)
    batch = per_rank_batch_size(cfg.batch_size, world_size if distributed else 1)
    generator = torch.Generator().manual_seed(cfg.seed)  # shuffle order and worker seeds
    val_sampler = _ShardSampler(len(val_ds), rank, world_size) if distributed else None
    train_sampler = ResumableSampler(train_ds, num_replicas=world_size if distributed else 1,
                                     rank=rank if distributed else 0, seed=cfg.seed)
    device = default_device(cfg) if device is None else torch.device(device)
    loaders, info.data_on_device = _device_loaders(cfg, train_ds, val_ds, info, device, batch, train_sampler,
                                                   val_sampler, generator)
    if loaders is None:
        common = dict(num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                      pin_memory=torch.cuda.is_available() and cfg.device != "cpu")
        loaders = (DataLoader(train_ds, batch_size=batch, shuffle=False, sampler=train_sampler, drop_last=True,
                              generator=generator, **common),
                   DataLoader(val_ds, batch_size=batch, shuffle=False, sampler=val_sampler, drop_last=False,
                              **common))
    train_loader, val_loader = loaders
    if len(train_loader) == 0:
        raise ValueError(f"the train set has {len(train_ds)} samples per rank-share, fewer than one batch of "
                         f"{batch}; lower batch_size or raise train_subset.")
    return train_loader, val_loader, train_sampler, info
