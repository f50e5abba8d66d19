"""Where each dataset's images come from: scikit-learn's digits, Fashion-MNIST (Debian files or torchvision's
layout), CIFAR, Tiny-ImageNet and ImageFolder trees, with the OpenMixup transforms (docs/recipes.md).
"""
from __future__ import annotations

import gzip
import math
import warnings
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

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

_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _generator(seed: int, purpose: str) -> torch.Generator:
    """An independent, reproducible stream per (seed, purpose)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(purpose.encode()))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not, into a numpy array."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _transforms(kind: str, img_size: int, in_chans: int, mean, std):
    """(train, test) torchvision pipelines for 'cifar', 'tiny' or 'imagenet' style data."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if kind == "cifar":
        resize = [T.Resize(img_size)] if img_size != 32 else []
        train = resize + [T.RandomCrop(img_size, padding=img_size // 8, padding_mode="reflect"),
                          T.RandomHorizontalFlip()]
        test = resize
    elif kind == "tiny":
        train = [T.RandomResizedCrop(img_size, interpolation=bicubic), T.RandomHorizontalFlip()]
        test = [T.Resize((img_size, img_size), interpolation=bicubic)]
    else:
        train = [T.RandomResizedCrop(img_size, interpolation=bicubic), T.RandomHorizontalFlip()]
        test = [T.Resize(int(math.floor(img_size / 0.875)), interpolation=bicubic), T.CenterCrop(img_size)]
    gray = [T.Grayscale(1)] if in_chans == 1 else []
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(gray + train + tail), T.Compose(gray + test + tail)


# ---------------------------------------------------------------- builders
def _missing(what: str, where: Path, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at '{where}'. {how}")


def _image_folders(root: Path, val_names: Sequence[str], tf_train, tf_test, dataset: str, how: str):
    from torchvision.datasets import ImageFolder

    train_dir = root / "train"
    val_dir = next((root / v for v in val_names if (root / v).is_dir()), None)
    if not train_dir.is_dir() or val_dir is None:
        raise _missing(f"{dataset} image folders", root, how)
    try:
        train, val = ImageFolder(str(train_dir), tf_train), ImageFolder(str(val_dir), tf_test)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{dataset}: {e}. {how}") from e
    if val.classes != train.classes:  # index val by the train classes
        unknown = sorted(set(val.classes) - set(train.classes))
        if unknown:
            raise ValueError(f"{val_dir} has classes missing from {train_dir}: {unknown[:5]}")
        val.samples = [(p, train.class_to_idx[val.classes[t]]) for p, t in val.samples]
        val.imgs, val.targets = val.samples, [t for _, t in val.samples]
        val.classes, val.class_to_idx = train.classes, train.class_to_idx
    return train, val, list(train.classes)


def _cifar(cfg: TrainConfig, root: Path, size: int, chans: int, mean, std):
    tf_train, tf_test = _transforms("cifar", size, chans, mean, std)
    n = 10 if cfg.dataset == "cifar10" else 100
    if (root / "train").is_dir():  # an ImageFolder tree, e.g. the CIFAR-10 JPEG archive
        how = "Expected train/<class>/*.png|jpg and test/<class>/ (or val/<class>/)."
        train, val, names = _image_folders(root, ("test", "val"), tf_train, tf_test, cfg.dataset, how)
        if len(names) != n:
            warnings.warn(f"{cfg.dataset} folder {root} has {len(names)} classes, expected {n}")
        return train, val, names
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if n == 10 else CIFAR100
    try:
        train = cls(str(root), train=True, transform=tf_train, download=cfg.download)
        val = cls(str(root), train=False, transform=tf_test, download=cfg.download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise _missing(f"{cfg.dataset} ({e})", root,
                       "Set download=True (--download) to fetch it with torchvision, or point data_dir at "
                       "a folder with train/<class>/ and test/<class>/ images.") from e
    return train, val, list(train.classes)


def _tiny_imagenet(cfg: TrainConfig, root: Path, size: int, chans: int, mean, std):
    from torchvision.datasets import ImageFolder

    if not (root / "train").is_dir() and (root / "tiny-imagenet-200" / "train").is_dir():
        root = root / "tiny-imagenet-200"
    how = ("Download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it and set data_dir to the "
           "tiny-imagenet-200 folder: train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt.")
    tf_train, tf_test = _transforms("tiny", size, chans, mean, std)
    if not (root / "train").is_dir():
        raise _missing("Tiny-ImageNet", root, how)
    train = ImageFolder(str(root / "train"), tf_train)
    annotations = root / "val" / "val_annotations.txt"
    if annotations.is_file():
        rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
        missing = sorted({r[1] for r in rows} - set(train.class_to_idx))
        if missing:
            raise ValueError(f"{annotations} names classes absent from {root / 'train'}: {missing[:5]}")
        samples = [(str(root / "val" / "images" / r[0]), train.class_to_idx[r[1]]) for r in rows]
        val = _FileListDataset(samples, tf_test)
    elif (root / "val").is_dir():  # val already sorted into val/<wnid>/
        _, val, _ = _image_folders(root, ("val",), tf_train, tf_test, "tiny-imagenet", how)
    else:
        raise _missing("Tiny-ImageNet val split", root / "val", how)
    names = list(train.classes)
    words = root / "words.txt"
    if words.is_file():
        table = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
        names = [table.get(w, w).split(",")[0].strip() for w in names]
    return train, val, names


def _fashion_mnist(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images [60000,1,28,28] uint8, labels, test images, labels)."""
    root = Path(cfg.data_dir)
    for folder in (root, root / "FashionMNIST" / "raw", _DEBIAN_FASHION):
        files = {}
        for split in ("train", "t10k"):
            for kind in ("images-idx3", "labels-idx1"):
                name = f"{split}-{kind}-ubyte"
                found = [folder / n for n in (name + ".gz", name) if (folder / n).is_file()]
                if found:
                    files[split, kind] = found[0]
        if len(files) == 4:
            arrays = {k: torch.from_numpy(read_idx(p).copy()) for k, p in files.items()}
            return (arrays["train", "images-idx3"][:, None], arrays["train", "labels-idx1"],
                    arrays["t10k", "images-idx3"][:, None], arrays["t10k", "labels-idx1"])
    if cfg.download:
        from torchvision.datasets import FashionMNIST

        train, test = FashionMNIST(str(root), True, download=True), FashionMNIST(str(root), False, download=True)
        return train.data[:, None], train.targets, test.data[:, None], test.targets
    raise _missing("Fashion-MNIST idx files", root,
                   f"Also looked in {root / 'FashionMNIST' / 'raw'} and {_DEBIAN_FASHION}. Install them with "
                   "`apt-get install dataset-fashion-mnist`, or set download=True.")


def digits_datasets(memory: dict):
    """scikit-learn's 1,797 8x8 digits, a fixed 1,297 / 500 split; (train, val, class names)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]  # [1797, 1, 8, 8]
    labels = torch.tensor(digits.target)
    perm = torch.randperm(len(labels), generator=_generator(0, "digits-split"))  # fixed split
    tr, va = perm[500:], perm[:500]  # 1,297 train / 500 val
    train = InMemoryImageDataset(images[tr], labels[tr], augment=True, flip=False, **memory)
    return train, InMemoryImageDataset(images[va], labels[va], **memory), [str(d) for d in range(10)]


def fashion_datasets(cfg: TrainConfig, memory: dict):
    """Fashion-MNIST's 60,000 / 10,000 images in memory; (train, val, class names)."""
    x_tr, y_tr, x_te, y_te = _fashion_mnist(cfg)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    train = InMemoryImageDataset(x_tr, y_tr, augment=True, flip=True, **memory)
    return train, InMemoryImageDataset(x_te, y_te, **memory), names


def file_datasets(cfg: TrainConfig, root: Path, size: int, chans: int, mean, std):
    """CIFAR, Tiny-ImageNet or an ImageFolder tree under ``root``; (train, val, class names)."""
    if cfg.dataset in ("cifar10", "cifar100"):
        return _cifar(cfg, root, size, chans, mean, std)
    if cfg.dataset == "tiny-imagenet":
        return _tiny_imagenet(cfg, root, size, chans, mean, std)
    tf_train, tf_test = _transforms("imagenet", size, chans, mean, std)
    how = ("Expected an ImageFolder tree: train/<class>/*.JPEG and val/<class>/*.JPEG (or test/); for "
           "ImageNet sort the validation images into class folders (e.g. with the usual valprep.sh).")
    return _image_folders(root, ("val", "test"), tf_train, tf_test, cfg.dataset, how)
