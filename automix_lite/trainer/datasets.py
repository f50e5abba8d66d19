"""The datasets the trainer builds (in-memory tensors, seeded fakes, labelled subsets, file lists), their label
noise and subsets, and how each is decoded onto a device (``device_images``, for ``fast.device_data``).

Label noise and subsets are additions for small-data experiments (not in OpenMixup); see ``trainer/data.py``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..core.checks import check_label_range
from ..fast.device_data import DeviceImages, ShiftAugment, decode_pipeline, pipeline_nbytes

__all__ = ["InMemoryImageDataset", "FakeImageDataset", "LabelledView", "corrupt_labels", "device_images",
           "decoded_nbytes"]


def corrupt_labels(labels: torch.Tensor, num_classes: int, fraction: float, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace exactly ``round(fraction * N)`` labels, chosen at random, by a DIFFERENT random class.

    Args:
        labels: ``[N]`` integer class indices in ``[0, num_classes)``.
        num_classes: number of classes K (>= 2).
        fraction: the noise rate p in [0, 1).
        generator: RNG for the choice of samples and of the new classes.
    Returns: a new ``[N]`` long tensor (the input is not modified).
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1), got {fraction}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    check_label_range(labels, num_classes)
    n_flip = int(round(fraction * labels.numel()))
    idx = torch.randperm(labels.numel(), generator=generator)[:n_flip]  # [n_flip]
    # an offset in 1..K-1 guarantees a different class, uniform over the K-1 others
    offset = torch.randint(1, num_classes, (n_flip,), generator=generator)
    out = labels.clone()
    out[idx] = (labels[idx] + offset) % num_classes
    return out


class InMemoryImageDataset(Dataset):
    """Images held in one tensor: resized and reflect-padded once, then cropped / flipped /
    channel-matched / normalised per item (a few cheap tensor ops, so ``workers=0`` is fast).

    Args:
        images: ``[N, C0, h, w]`` uint8 (0..255) or float (0..1) tensor, ``C0`` = 1 or ``in_chans``.
        targets: ``[N]`` class indices.
        img_size, in_chans: output shape ``[in_chans, img_size, img_size]`` (1 -> C repeats the grey).
        mean, std: normalisation, length ``in_chans``.
        augment: random shift (reflect-pad by ``img_size // 8``, random crop), plus ``flip`` if set.
        generator: RNG for the augmentation (use only with ``workers=0``; ``None`` = torch default RNG).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, *, img_size: int, in_chans: int,
                 mean: Sequence[float], std: Sequence[float], augment: bool = False, flip: bool = False,
                 generator: torch.Generator | None = None):
        if images.dim() != 4 or images.shape[1] not in (1, in_chans):
            raise ValueError(f"images must be [N, 1 or {in_chans}, h, w], got {tuple(images.shape)}")
        self.pad = max(img_size // 8, 1) if augment else 0
        self.images = torch.cat([self._prepare(chunk, img_size, self.pad) for chunk in images.split(4096)])
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.img_size, self.in_chans, self.augment, self.flip = img_size, in_chans, augment, flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.generator = generator

    @staticmethod
    def _prepare(x: torch.Tensor, size: int, pad: int) -> torch.Tensor:
        """Resize ``[n, C0, h, w]`` to ``size`` and reflect-pad by ``pad``, keeping the dtype."""
        if x.shape[-2:] == (size, size) and pad == 0:
            return x.clone()
        y = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (size, size):
            y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size)
        if pad:
            y = F.pad(y, (pad, pad, pad, pad), mode="reflect")  # [n, C0, size + 2p, size + 2p]
        return (y * 255.0).round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        dy = dx = self.pad
        flip = False
        if self.augment:  # (the third draw is unused: kept so that the digits stream stays as it was)
            dy, dx, _ = torch.randint(0, 2 * self.pad + 1, (3,), generator=self.generator).tolist()
            flip = self.flip and bool(torch.rand((), generator=self.generator) < 0.5)  # RandomHorizontalFlip
        x = self.images[i, :, dy:dy + self.img_size, dx:dx + self.img_size]  # [C0, H, W]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if flip:
            x = x.flip(-1)
        x = x.expand(self.in_chans, -1, -1)  # [C, H, W]
        return (x - self.mean) / self.std, int(self.targets[i])


class FakeImageDataset(Dataset):
    """Deterministic synthetic images: a smooth per-class pattern plus per-sample noise (learnable).

    Item ``i`` is generated on the fly from ``(seed, i)``, so any ``img_size`` costs no memory.
    """

    def __init__(self, n: int, *, num_classes: int, in_chans: int, img_size: int, seed: int,
                 mean: Sequence[float], std: Sequence[float]):
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(num_classes, (n,), generator=g)  # [n]
        self.prototypes = torch.randn(num_classes, in_chans, 4, 4, generator=g)  # [K, C, 4, 4]
        self.seed, self.img_size = seed, img_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        y = int(self.targets[i])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i + 1)
        base = F.interpolate(self.prototypes[y][None], size=(self.img_size, self.img_size), mode="bilinear",
                             align_corners=False)[0]  # [C, H, W]
        x = (0.5 + 0.2 * base + 0.1 * torch.randn(base.shape, generator=g)).clamp(0, 1)
        return (x - self.mean) / self.std, y


class LabelledView(Dataset):
    """``base`` restricted to ``indices``, with labels ``targets`` (noisy) and ``clean_targets``."""

    def __init__(self, base: Dataset, indices: torch.Tensor, targets: torch.Tensor, clean_targets: torch.Tensor):
        self.base, self.indices = base, indices.tolist()
        self.targets, self.clean_targets = targets, clean_targets

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, _ = self.base[self.indices[i]]
        return x, int(self.targets[i])


class _FileListDataset(Dataset):
    """``(path, label)`` pairs read with PIL (Tiny-ImageNet's flat ``val/images`` folder)."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        from torchvision.datasets.folder import default_loader

        self.samples, self.transform, self.loader = samples, transform, default_loader
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        return self.transform(self.loader(path)), target


def _targets(ds: Dataset) -> torch.Tensor:
    if not hasattr(ds, "targets"):
        raise TypeError(f"{type(ds).__name__} has no .targets; cannot take subsets or add label noise")
    return torch.as_tensor(ds.targets, dtype=torch.long)


def _subset(ds: Dataset, n: int | None, generator: torch.Generator, noise: float = 0.0,
            num_classes: int = 0, noise_generator: torch.Generator | None = None) -> Dataset:
    """A seeded subset of at most ``n`` samples, then label noise; ``ds`` itself when neither applies."""
    if (n is None or n >= len(ds)) and noise == 0.0:
        return ds
    clean = _targets(ds)
    idx = torch.arange(len(ds))
    if n is not None and n < len(ds):
        idx = torch.randperm(len(ds), generator=generator)[:n].sort().values  # [n]
    clean = clean[idx]
    noisy = corrupt_labels(clean, num_classes, noise, generator=noise_generator) if noise else clean
    return LabelledView(ds, idx, noisy, clean)


def device_images(ds, device: torch.device | str, in_chans: int, indices: Sequence[int] | None = None
                  ) -> DeviceImages:
    """A ``DeviceImages`` equal, item for item, to ``ds`` (a dataset built by ``data.build_datasets``), or to
    its items ``indices`` (then with ``ds``'s targets at those indices). Only those items are decoded.

    Raises ``UnsupportedPipeline`` when ``ds``'s pipeline has no exact on-device equivalent.
    """
    if isinstance(ds, LabelledView):  # a subset and/or noisy labels: the base's items, the view's labels
        if indices is not None:
            raise ValueError("device_images: a LabelledView takes no indices")
        data = device_images(ds.base, device, in_chans, indices=ds.indices)
        data.targets = torch.as_tensor(ds.targets, dtype=torch.long).to(data.device)
        return data
    idx = list(range(len(ds))) if indices is None else list(indices)
    targets = torch.as_tensor(ds.targets, dtype=torch.long)[torch.as_tensor(idx, dtype=torch.long)]
    if isinstance(ds, InMemoryImageDataset):  # stored reflect-padded: keep the core, pad by index
        p = ds.pad
        core = ds.images[idx, :, p:ds.images.shape[-2] - p, p:ds.images.shape[-1] - p] if p else ds.images[idx]
        scale = 255.0 if core.dtype == torch.uint8 else 1.0
        aug = ShiftAugment(pad=p, flip_p=0.5 if ds.flip else 0.0) if ds.augment else None
        return DeviceImages(core.to(device), targets, mean=ds.mean.flatten().tolist(),
                            std=ds.std.flatten().tolist(), in_chans=in_chans, augment=aug, scale=scale)
    if isinstance(ds, FakeImageDataset):  # deterministic and already normalised
        x = torch.stack([ds[i][0] for i in idx])  # [N, C, H, W]
        return DeviceImages(x.to(device), targets, mean=(0.0,) * in_chans, std=(1.0,) * in_chans,
                            in_chans=in_chans, scale=1.0)
    return decode_pipeline(ds, device, in_chans, idx, targets)


def decoded_nbytes(ds) -> int:
    """Bytes the decoded ``ds`` would take on the device (read from its first item; no full decode)."""
    if isinstance(ds, LabelledView):
        return decoded_nbytes(ds.base) * len(ds) // max(len(ds.base), 1)
    if isinstance(ds, InMemoryImageDataset):
        return ds.images.element_size() * ds.images.numel()
    if isinstance(ds, FakeImageDataset):
        return 4 * len(ds) * ds[0][0].numel()
    return pipeline_nbytes(ds)
