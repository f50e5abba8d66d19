"""Datasets and loaders: offline datasets, folder layouts, label noise, subsets, DDP sharding, errors."""
from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from automix_lite.trainer.config import TrainConfig
from automix_lite.trainer.data import (
    build_datasets,
    build_loaders,
    corrupt_labels,
    denormalize,
    per_rank_batch_size,
    read_idx,
)

FASHION = Path("/usr/share/datasets/fashion-mnist")
SHARED = Path(os.environ.get("AUTOMIX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CIFAR_JPG = SHARED / "data/cifar10_jpg.tar.gz"


def quick(**kw) -> TrainConfig:
    return TrainConfig.preset("quick", **kw)


# ---------------------------------------------------------------- digits / fake
@pytest.mark.parametrize("in_chans", [1, 3])
def test_digits_shapes_and_range(in_chans):
    train, val, info = build_datasets(quick(in_chans=in_chans, img_size=32))
    assert (len(train), len(val)) == (1297, 500)
    assert (info.num_classes, info.in_chans, info.img_size) == (10, in_chans, 32)
    assert len(info.mean) == len(info.std) == in_chans
    x = torch.stack([val[i][0] for i in range(200)])  # [200, C, 32, 32]
    assert x.shape == (200, in_chans, 32, 32) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.15 and 0.7 < float(x.std()) < 1.3  # normalised
    img = denormalize(x, info)
    assert img.min() >= 0 and img.max() <= 1
    assert float(img.min()) < 0.02 and float(img.max()) > 0.9  # background black, strokes bright
    if in_chans == 3:
        assert torch.equal(x[:, 0], x[:, 2])  # grey repeated
    labels = torch.tensor([train[i][1] for i in range(len(train))])
    assert set(labels.tolist()) == set(range(10))


def test_digits_train_augmentation_shifts_but_val_is_fixed():
    train, val, _ = build_datasets(quick())
    torch.manual_seed(0)
    views = torch.stack([train[3][0] for _ in range(8)])
    assert not all(torch.equal(views[0], v) for v in views[1:])
    torch.manual_seed(1)  # a different global RNG state: the validation item must not move
    first = val[3][0].clone()
    torch.manual_seed(2)
    assert torch.equal(val[3][0], first)
    assert not torch.equal(val[3][0], val[4][0])


def test_fake_is_deterministic_and_follows_the_config():
    cfg = quick(dataset="fake", img_size=24, in_chans=2, num_classes=5)
    (tr1, va1, info), (tr2, _, _) = build_datasets(cfg), build_datasets(cfg)
    assert info.num_classes == 5 and info.in_chans == 2 and info.img_size == 24
    x, y = tr1[7]
    assert x.shape == (2, 24, 24) and 0 <= y < 5
    assert torch.equal(x, tr2[7][0]) and y == tr2[7][1]
    assert not torch.equal(tr1[7][0], va1[7][0])
    assert set(tr1.targets.tolist()) == set(range(5))


def test_denormalize_inverts_normalisation_and_checks_shape():
    _, _, info = build_datasets(quick(dataset="fake"))
    img = torch.rand(2, 3, 8, 8)
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    assert torch.allclose(denormalize((img - mean) / std, info), img, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        denormalize(torch.rand(2, 1, 8, 8), info)


# ---------------------------------------------------------------- label noise and subsets
@pytest.mark.parametrize("p", [0.1, 0.4])
def test_label_noise_changes_exactly_round_pn_train_labels(p):
    clean_train, clean_val, _ = build_datasets(quick(label_noise=0.0))
    train, val, _ = build_datasets(quick(label_noise=p))
    n = len(train)
    changed = train.targets != torch.as_tensor(clean_train.targets)
    assert int(changed.sum()) == round(p * n)
    assert torch.equal(train.clean_targets, torch.as_tensor(clean_train.targets))
    assert all(train[i][1] == int(train.targets[i]) for i in torch.nonzero(changed)[:20, 0].tolist())
    assert torch.equal(torch.as_tensor(val.targets), torch.as_tensor(clean_val.targets))  # val untouched
    again, _, _ = build_datasets(quick(label_noise=p))
    other, _, _ = build_datasets(quick(label_noise=p, seed=1))
    assert torch.equal(again.targets, train.targets)
    assert not torch.equal(other.targets, train.targets)


def test_corrupt_labels_is_pure_and_uniform_over_other_classes():
    labels = torch.zeros(3000, dtype=torch.long)
    noisy = corrupt_labels(labels, 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert labels.eq(0).all()  # input untouched
    counts = torch.bincount(noisy, minlength=4)
    assert counts[0] == 1500 and (counts[1:] - 500).abs().max() < 100
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        corrupt_labels(labels, 4, 1.0)
    with pytest.raises(ValueError, match="labels must lie"):
        corrupt_labels(labels + 4, 4, 0.1)


def test_subsets_are_seeded_and_the_val_subset_ignores_the_seed():
    a_tr, a_va, _ = build_datasets(quick(train_subset=100, val_subset=50))
    b_tr, b_va, _ = build_datasets(quick(train_subset=100, val_subset=50))
    c_tr, c_va, _ = build_datasets(quick(train_subset=100, val_subset=50, seed=3))
    assert (len(a_tr), len(a_va)) == (100, 50)
    assert a_tr.indices == b_tr.indices and a_tr.indices != c_tr.indices
    assert a_va.indices == c_va.indices
    assert len(set(a_tr.indices)) == 100
    x, y = a_tr[5]
    size = quick().img_size  # the quick preset's digits size (16 px)
    assert y == int(a_tr.targets[5]) and x.shape == (3, size, size)


# ---------------------------------------------------------------- folder layouts
def _png(path: Path, colour, size=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path)


RED, BLUE = (230, 20, 20), (20, 20, 230)


def test_imagefolder_tree_loads_via_folder(tmp_path):
    for i in range(3):
        _png(tmp_path / "train/cat" / f"{i}.png", RED)
        _png(tmp_path / "train/dog" / f"{i}.png", BLUE)
    _png(tmp_path / "val/dog/0.png", BLUE)  # val lacks 'cat': labels must still follow train's classes
    cfg = quick(dataset="folder", data_dir=str(tmp_path), img_size=16, batch_size=2)
    train, val, info = build_datasets(cfg)
    assert info.class_names == ["cat", "dog"] and info.num_classes == 2 and info.img_size == 16
    assert (len(train), len(val)) == (6, 1)
    for ds in (train, val):
        for i in range(len(ds)):
            x, y = ds[i]
            rgb = denormalize(x, info).mean(dim=(1, 2))
            assert x.shape == (3, 16, 16)
            assert y == (0 if rgb[0] > rgb[2] else 1)  # red = cat = 0, blue = dog = 1
    train_loader, _, _, _ = build_loaders(cfg)
    assert len(train_loader) == 3


def test_tiny_imagenet_layout_with_val_annotations(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = {"n01443537": RED, "n01629819": BLUE}
    for wnid, colour in wnids.items():
        for i in range(2):
            _png(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", colour, size=64)
    rows = []
    for i, wnid in enumerate(["n01629819", "n01443537", "n01629819"]):
        _png(root / "val/images" / f"val_{i}.JPEG", wnids[wnid], size=64)
        rows.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val/val_annotations.txt").write_text("\n".join(rows) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    cfg = TrainConfig.preset("tiny_imagenet", data_dir=str(tmp_path), workers=0)  # parent folder also works
    train, val, info = build_datasets(cfg)
    assert info.class_names == ["goldfish", "European fire salamander"]
    assert info.num_classes == 2 and info.img_size == 64
    assert (len(train), len(val)) == (4, 3)
    assert [val[i][1] for i in range(3)] == [1, 0, 1]
    for i in range(3):
        x, y = val[i]
        rgb = denormalize(x, info).mean(dim=(1, 2))
        assert x.shape == (3, 64, 64) and y == (0 if rgb[0] > rgb[2] else 1)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_fashion_mnist_from_debian_files(tmp_path):
    cfg = quick(dataset="fashion-mnist", data_dir=str(tmp_path), in_chans=1, img_size=28,
                train_subset=256, val_subset=128)
    train, val, info = build_datasets(cfg)
    assert (len(train), len(val)) == (256, 128)
    assert info.num_classes == 10 and len(info.class_names) == 10
    x, y = val[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    assert read_idx(FASHION / "t10k-labels-idx1-ubyte.gz").shape == (10000,)


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as f:
        f.write(header + arr.tobytes())
    (tmp_path / "y-idx3-ubyte").write_bytes(header + arr.tobytes())
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), arr)
    assert np.array_equal(read_idx(tmp_path / "y-idx3-ubyte"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


@pytest.mark.skipif(not CIFAR_JPG.is_file(), reason=f"{CIFAR_JPG} absent (set AUTOMIX_SHARED to its shared/ folder)")
def test_cifar10_jpeg_archive_loads_through_imagefolder(tmp_path):
    taken: set[tuple[str, str]] = set()
    with tarfile.open(CIFAR_JPG, "r:gz") as tar:
        for member in tar:  # one image per (split, class): 20 members
            parts = Path(member.name).parts  # ('train' | 'test', class, file); pathlib drops './'
            if member.isfile() and len(parts) == 3 and parts[:2] not in taken:
                taken.add(parts[:2])
                tar.extract(member, tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            if len(taken) == 20:
                break
    cfg = TrainConfig.preset("cifar10", data_dir=str(tmp_path), batch_size=2, workers=0)
    train, val, info = build_datasets(cfg)
    assert info.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                "ship", "truck"]
    assert (len(train), len(val)) == (10, 10) and info.num_classes == 10
    for ds in (train, val):
        for path, y in ds.samples:
            assert info.class_names[y] == Path(path).parent.name
        x, _ = ds[0]
        assert x.shape == (3, 32, 32)


# ---------------------------------------------------------------- loaders
def test_loader_batches_are_seeded_and_drop_last():
    cfg = quick(dataset="fake", batch_size=16)
    loader_a, val_loader, sampler, _ = build_loaders(cfg)
    loader_b, _, _, _ = build_loaders(cfg)
    assert sampler.num_replicas == 1  # a one-replica ResumableSampler
    assert len(loader_a) == 512 // 16 and len(val_loader) == 128 // 16
    ya, yb = next(iter(loader_a))[1], next(iter(loader_b))[1]
    assert torch.equal(ya, yb)
    yc = next(iter(build_loaders(cfg.replace(seed=1))[0]))[1]
    assert not torch.equal(ya, yc)


def test_resumable_sampler_skips_exactly_the_seen_samples():
    cfg = quick(dataset="fake", batch_size=16)
    _, _, sampler, _ = build_loaders(cfg)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_start(5 * 16)
    assert list(sampler) == full[80:] and len(sampler) == len(full) - 80
    sampler.set_epoch(4)  # a new epoch starts from its beginning, in a new order
    assert len(list(sampler)) == len(full) and list(sampler) != full


def test_distributed_sampler_gives_disjoint_shards():
    cfg = quick(dataset="fake", batch_size=16)
    shards, val_shards = [], []
    for rank in (0, 1):
        train_loader, val_loader, sampler, _ = build_loaders(cfg, distributed=True, rank=rank, world_size=2)
        assert isinstance(sampler, DistributedSampler) and train_loader.batch_size == 8
        sampler.set_epoch(0)
        shards.append(set(sampler))
        val_shards.append(list(val_loader.sampler))
    assert shards[0].isdisjoint(shards[1]) and len(shards[0] | shards[1]) == 512
    assert set(val_shards[0]).isdisjoint(val_shards[1])
    assert sorted(val_shards[0] + val_shards[1]) == list(range(128))  # no padding: exact val counts
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # reshuffled per epoch


def test_global_batch_must_divide_over_ranks():
    assert per_rank_batch_size(256, 4) == 64
    with pytest.raises(ValueError, match="multiple of 3"):
        build_loaders(quick(dataset="fake", batch_size=16), distributed=True, rank=0, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        build_loaders(quick(dataset="fake", batch_size=64, train_subset=10))


# ---------------------------------------------------------------- missing data
def test_missing_folders_explain_what_to_do(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="train/<class>") as err:
        build_datasets(quick(dataset="folder", data_dir=str(missing)))
    assert str(missing) in str(err.value)
    with pytest.raises(FileNotFoundError, match="download=True"):
        build_datasets(quick(dataset="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        build_datasets(quick(dataset="tiny-imagenet", data_dir=str(tmp_path)))
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="ImageFolder tree"):  # folders present but empty
        build_datasets(quick(dataset="imagenet", data_dir=str(tmp_path)))


def test_in_memory_flip_has_probability_one_half():
    # RandomHorizontalFlip's rate (an odd number of crop offsets once made it 4/9)
    from automix_lite.trainer.data import InMemoryImageDataset

    ramp = torch.arange(32, dtype=torch.float32).view(1, 1, 1, 32).expand(1, 1, 32, 32) / 32  # [1, 1, 32, 32]
    ds = InMemoryImageDataset(ramp, torch.zeros(1), img_size=32, in_chans=1, mean=(0.0,), std=(1.0,),
                              augment=True, flip=True, generator=torch.Generator().manual_seed(0))
    views = [ds[0][0][0, 16] for _ in range(4000)]  # row 16 of each augmented view
    flips = [bool(v[17] < v[16]) for v in views]
    assert abs(sum(flips) / 4000 - 0.5) < 4 * (0.25 / 4000) ** 0.5
