"""Data on the device: decode a dataset once into one tensor on the accelerator, augment it there in batches.

AutoMix (Liu, Li et al., ECCV 2022, arXiv:2103.13027) trains ResNets on CIFAR (50k 32 px images) and
Tiny-ImageNet (100k 64 px images) with OpenMixup's torchvision pipelines. On a GPU the per-image
PIL pipeline of a ``DataLoader`` caps the step rate (a few thousand images/s with 2 workers), while the whole
decoded dataset fits in a few hundred MB of device memory. ``DeviceLoader`` holds the images as ``uint8``
``[N, C, H, W]`` on the device (float for scikit-learn's digits, which are not 8-bit images, and for the
synthetic ``fake`` set) and applies the pipeline's random part to a whole batch at once:

- ``ShiftAugment``: ``RandomCrop(size, padding=p, padding_mode="reflect")`` + ``RandomHorizontalFlip`` (CIFAR,
  digits, Fashion-MNIST). For the same offsets and flip the crop equals torchvision's **pixel for pixel**
  (a gather with reflected indices; no padded copy is stored).
- ``ResizedCropAugment``: ``RandomResizedCrop(size, bicubic)`` + flip (Tiny-ImageNet, a small ImageFolder whose
  images share one size). The box is drawn with torchvision's algorithm (10 tries, then the central crop), and
  the resize replays Pillow's two-pass fixed-point bicubic resampling (each pass rounded to 8 bits, in Pillow's
  pass order) as exact integer arithmetic in float64 matrix products, so for the same box the result equals the
  PIL pipeline's **pixel for pixel** (``tests/test_device_data.py`` checks both).

Then ``/ 255`` and the pipeline's ``Normalize``, in the same float32 operations as ``ToTensor`` + ``Normalize``.
The 255 is a device tensor, not a Python number: CUDA computes a division by a host scalar as a multiplication
by its reciprocal, which differs from torchvision's CPU division in the last bit for about half of the byte values;
a division by a tensor is a true IEEE division on every device (``tests/test_device_data.py`` checks all 256).
The deterministic head of the pipeline (``Grayscale``, ``Resize``, ``CenterCrop``) runs once, at decoding, with
the same PIL calls as the ``DataLoader`` path.

Randomness: the batch order is the train sampler's (``ResumableSampler``: ``set_epoch`` / ``set_start``, the
same sample indices in the same batches as the ``DataLoader`` path). At the start of an epoch's iterator one
64-bit seed is drawn from ``loader.generator`` (as a ``DataLoader`` draws its workers' base seed), and the
augmentation parameters of the whole epoch are drawn on the CPU from that seed, indexed by position in the
epoch. A run resumed mid-epoch (generator state restored to the epoch start, ``set_start(k)``) therefore sees
exactly the batches of the uninterrupted run, and CPU and CUDA runs see the same crops. The per-batch path
never waits for the device (no ``.item()``, no boolean masks): parameters go to the device once per epoch.
Deviation: the draws are not the same random stream as torchvision's (which uses torch's global RNG per
image in each worker); their distribution is the same.

This module knows torchvision-style pipelines only (``decode_pipeline``); the trainer's own datasets reach it
through ``trainer.datasets.device_images``, so nothing here imports the trainer.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .augment_ops import (  # noqa: F401
    ResizedCropAugment,
    ShiftAugment,
    draw_resized_crop,
    draw_shift,
    pil_bicubic_weights,
    resize_crops,
    shift_grid,
)

__all__ = ["ShiftAugment", "ResizedCropAugment", "DeviceImages", "DeviceLoader", "UnsupportedPipeline",
           "draw_shift", "draw_resized_crop", "shift_grid", "pil_bicubic_weights", "resize_crops",
           "decode_pipeline", "pipeline_nbytes", "wanted"]



class UnsupportedPipeline(ValueError):
    """The dataset's transform (or layout) has no on-device equivalent; use the DataLoader path."""


# ---------------------------------------------------------------- the on-device dataset
class DeviceImages:
    """A whole dataset on one device: ``images [N, C0, H, W]`` (uint8 0..255, or float already in the model's
    value range when ``scale=1``), ``targets [N]`` long, an optional augmentation, and the normalisation.

    ``batch(index, params)`` returns ``[B, in_chans, S, S]`` float32 normalised (grey ``C0=1`` repeated to
    ``in_chans``), computed exactly as the per-image pipeline would.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, *, mean: Sequence[float],
                 std: Sequence[float], in_chans: int, augment: ShiftAugment | ResizedCropAugment | None = None,
                 scale: float = 255.0):
        if images.dim() != 4 or images.shape[1] not in (1, in_chans):
            raise ValueError(f"images must be [N, 1 or {in_chans}, H, W], got {tuple(images.shape)}")
        if isinstance(augment, ShiftAugment) and (images.shape[-1] != images.shape[-2] or images.shape[-1] <= augment.pad
                                                  or augment.size not in (None, images.shape[-1])):
            raise UnsupportedPipeline(f"{augment} needs square images of its crop size, larger than the padding; "
                                      f"got {tuple(images.shape)}")
        self.images, self.targets = images, torch.as_tensor(targets, dtype=torch.long).to(images.device)
        self.in_chans, self.augment, self.scale = in_chans, augment, scale
        # a tensor divisor: a true division on CUDA too (a host scalar would become a multiplication by 1/255)
        self.divisor = torch.tensor(scale, dtype=torch.float32, device=images.device)  # [] on the device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)  # [C, 1, 1]
        self.std = torch.tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def out_size(self) -> int:
        aug = self.augment
        return aug.size if isinstance(aug, ResizedCropAugment) else self.images.shape[-1]

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """The augmentation parameters of ``n`` samples (CPU long tensor), or None without augmentation."""
        aug = self.augment
        if isinstance(aug, ShiftAugment):
            return draw_shift(n, aug.pad, aug.flip_p, generator)
        if isinstance(aug, ResizedCropAugment):
            return draw_resized_crop(n, self.images.shape[-2], self.images.shape[-1], aug, generator)
        return None

    def batch(self, index: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """Images ``index [B]`` (device long) with augmentation ``params [B, 3 or 5]`` -> ``[B, C, S, S]``."""
        aug = self.augment
        if isinstance(aug, ShiftAugment):
            rows, cols = shift_grid(params, aug.pad, self.images.shape[-1])  # [B, S] each
            x = self.images[index]  # [B, C0, S, S]
            x = x.gather(2, rows[:, None, :, None].expand(x.shape))  # rows, then columns (flipped ones reversed)
            x = x.gather(3, cols[:, None, None, :].expand(x.shape))
        elif isinstance(aug, ResizedCropAugment):
            x = resize_crops(self.images[index], params, aug.size)  # [B, C0, S, S] integers 0..255
        else:
            x = self.images[index]
        x = x.float()
        if self.scale != 1.0:
            x = x / self.divisor  # ToTensor's img.div(255), bit for bit
        x = x.expand(-1, self.in_chans, -1, -1)  # [B, C, S, S]
        return (x - self.mean) / self.std


class DeviceLoader:
    """A ``DataLoader`` stand-in over ``DeviceImages``: yields ``(x [B, C, S, S] float, y [B] long)`` on the
    data's device, in the sampler's order (``drop_last`` like the train loader when set).

    Attributes used by ``train()``: ``batch_size``, ``sampler`` (``set_epoch`` / ``set_start``),
    ``generator`` (one seed drawn per epoch iterator; its state at the epoch start is what a checkpoint keeps).
    """

    def __init__(self, data: DeviceImages, batch_size: int, *, sampler=None, drop_last: bool = False,
                 generator: torch.Generator | None = None):
        self.data, self.batch_size, self.sampler, self.drop_last = data, batch_size, sampler, drop_last
        self.generator = generator
        self.dataset = data

    def _order(self) -> tuple[list[int], int]:
        """(this epoch's remaining indices, their first position in the full epoch)."""
        if self.sampler is None:
            return list(range(len(self.data))), 0
        return list(self.sampler), int(getattr(self.sampler, "start", 0))

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, start = self._order()
        params = None
        if self.data.augment is not None:
            gen = self.generator if self.generator is not None else torch.default_generator
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=gen))  # CPU: no device sync
            full = getattr(self.sampler, "num_samples", start + len(order))
            params = self.data.draw(full, torch.Generator().manual_seed(seed))[start:start + len(order)]
            params = params.to(self.data.device, non_blocking=True)  # once per epoch
        index = torch.tensor(order, dtype=torch.long).to(self.data.device, non_blocking=True)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = index[sl]
            yield self.data.batch(idx, None if params is None else params[sl]), self.data.targets[idx]


# ---------------------------------------------------------------- decoding a dataset built by data.py
FIT_FRACTION = 0.25  # data_on_device="auto": at most this share of the free device memory


def wanted(setting: str | bool, device: torch.device, nbytes: Callable[[], int]) -> bool:
    """``TrainConfig.data_on_device`` resolved: True / False as given; ``'auto'`` = on for CUDA when the decoded
    data (``nbytes()``) takes under ``FIT_FRACTION`` of the free device memory."""
    if setting is True or setting is False:
        return setting
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes() < FIT_FRACTION * free


def _plan(transform) -> tuple[list[Callable], ShiftAugment | ResizedCropAugment | None, tuple, tuple]:
    """Split a torchvision ``Compose`` into (deterministic PIL head, random augmentation, mean, std)."""
    from torchvision import transforms as T

    head: list[Callable] = []
    aug, flip_p, mean, std, seen_random = None, 0.0, None, None, False
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, (T.Grayscale, T.Resize, T.CenterCrop)) and not seen_random:
            head.append(t)
        elif isinstance(t, T.RandomCrop) and aug is None and t.padding_mode == "reflect" and not t.pad_if_needed \
                and isinstance(t.padding, int) and t.size[0] == t.size[1]:
            aug, seen_random = ShiftAugment(pad=t.padding, size=t.size[0]), True
        elif isinstance(t, T.RandomResizedCrop) and aug is None and t.size[0] == t.size[1] \
                and t.interpolation == T.InterpolationMode.BICUBIC:
            aug, seen_random = ResizedCropAugment(size=t.size[0], scale=tuple(t.scale), ratio=tuple(t.ratio)), True
        elif isinstance(t, T.RandomHorizontalFlip) and aug is not None:
            flip_p = float(t.p)
        elif isinstance(t, T.ToTensor):
            pass
        elif isinstance(t, T.Normalize):
            mean, std = tuple(t.mean), tuple(t.std)
        else:
            raise UnsupportedPipeline(f"no on-device equivalent of the transform {t!r}")
    if mean is None:
        raise UnsupportedPipeline("the pipeline has no Normalize")
    if aug is not None:
        aug = type(aug)(**{**aug.__dict__, "flip_p": flip_p})
    return head, aug, mean, std


def _pil_to_chw(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # [C, H, W]


def _decode_all(load: Callable[[int], object], indices: Sequence[int], head: list[Callable]) -> torch.Tensor:
    """Decode items ``indices`` (``load(i)`` -> PIL image) through ``head`` into one ``[n, C, H, W]`` uint8
    tensor, on threads (PIL releases the GIL while decoding and resampling)."""
    def one(i: int) -> np.ndarray:
        img = load(i)
        for t in head:
            img = t(img)
        return _pil_to_chw(img)

    first = one(indices[0])
    out = np.empty((len(indices), *first.shape), dtype=np.uint8)
    out[0] = first

    def put(k: int) -> None:
        a = one(indices[k])
        if a.shape != first.shape:
            raise UnsupportedPipeline(f"images of different sizes after {head or 'decoding'}: item {indices[k]} is "
                                      f"{a.shape}, item {indices[0]} is {first.shape}; on-device data needs one size")
        out[k] = a

    pool = ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1))
    try:
        list(pool.map(put, range(1, len(indices))))
    finally:  # on a size mismatch, do not decode the rest
        pool.shutdown(wait=True, cancel_futures=True)
    return torch.from_numpy(out)


def _source(ds) -> tuple[Callable[[int], object] | None, int, object]:
    """(PIL loader of item i, number of items, transform) of a torchvision-style dataset, or None loader."""
    from PIL import Image

    if hasattr(ds, "samples") and hasattr(ds, "loader"):  # ImageFolder, data._FileListDataset
        return (lambda i: ds.loader(ds.samples[i][0])), len(ds.samples), ds.transform
    if isinstance(getattr(ds, "data", None), np.ndarray) and ds.data.ndim == 4:  # torchvision CIFAR10/100
        return (lambda i: Image.fromarray(ds.data[i])), len(ds.data), ds.transform
    return None, len(ds), getattr(ds, "transform", None)


def decode_pipeline(ds, device: torch.device | str, in_chans: int, idx: Sequence[int], targets: torch.Tensor
                    ) -> DeviceImages:
    """Items ``idx`` of a torchvision-style dataset (ImageFolder-like ``samples`` + ``loader``, or CIFAR's
    ``data`` array) decoded through its transform's deterministic head onto ``device``.

    Raises ``UnsupportedPipeline`` when the pipeline has no exact on-device equivalent."""
    load, _, transform = _source(ds)
    if load is None or transform is None:
        raise UnsupportedPipeline(f"{type(ds).__name__} cannot be decoded onto the device")
    head, aug, mean, std = _plan(transform)
    x = _decode_all(load, idx, head)
    return DeviceImages(x.to(device), targets, mean=mean, std=std, in_chans=in_chans, augment=aug)


def pipeline_nbytes(ds) -> int:
    """Bytes a torchvision-style ``ds`` takes decoded (read from its first item; no full decode)."""
    load, n, transform = _source(ds)
    if load is None or transform is None:
        raise UnsupportedPipeline(f"{type(ds).__name__} cannot be decoded onto the device")
    head, _, _, _ = _plan(transform)
    img = load(0)
    for t in head:
        img = t(img)
    return n * _pil_to_chw(img).size
