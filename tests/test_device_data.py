"""Data on the device (automix_lite.fast.device_data): the config switch, the on-device augmentation against
torchvision's reference ops, its rates, resumability, and train() with ``data_on_device=True``."""
from __future__ import annotations

import pytest

from automix_lite.__main__ import _config_from_args, build_parser
from automix_lite.trainer.config import TrainConfig

from conftest import StepLosses, pairs


def test_data_on_device_field_validates_and_reads_cli_words():
    assert TrainConfig().data_on_device == "auto"
    assert TrainConfig.preset("quick", data_on_device=True).data_on_device is True
    assert TrainConfig(data_on_device="false").data_on_device is False
    with pytest.raises(ValueError, match="data_on_device"):
        TrainConfig(data_on_device="sometimes").validate()
    with pytest.raises(TypeError, match="data_on_device"):
        TrainConfig(data_on_device=1).validate()
    args = build_parser().parse_args(["train", "--preset", "quick", "--data-on-device", "true"])
    assert _config_from_args(args).data_on_device is True
    cfg = TrainConfig.preset("quick", data_on_device=False)
    assert TrainConfig.from_dict(cfg.to_dict()).data_on_device is False


# ---------------------------------------------------------------- helpers
import importlib  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from automix_lite.fast import augment_ops  # noqa: E402
from automix_lite.fast import device_data as dd  # noqa: E402
from automix_lite.trainer.data import build_datasets, build_loaders  # noqa: E402
from automix_lite.trainer.datasets import device_images  # noqa: E402

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def _pil(img: torch.Tensor) -> Image.Image:
    """[C, H, W] uint8 -> PIL ('L' or 'RGB')."""
    a = img.permute(1, 2, 0).numpy()
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def _to_tensor_normalised(pil: Image.Image, mean, std) -> torch.Tensor:
    return T.Normalize(mean, std)(T.ToTensor()(pil))


def _smooth_images(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Photo-like uint8 images (smooth fields plus noise): both flat areas and edges for the resamplers."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, c, 5, 5, generator=g), size=(h, w), mode="bicubic",
                                           align_corners=False)
    x = base * 255 + 40 * torch.randn(n, c, h, w, generator=g)
    return x.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(autouse=True)
def _no_auto_device(monkeypatch):
    """Every test here is a CPU twin or names its device: ``device="auto"`` would be CUDA on a GPU machine and
    compare a CUDA batch with a CPU ``DataLoader``'s (issue 29, item 1), so resolving it fails the test."""
    import automix_lite.fast.runtime as runtime

    train_mod = importlib.import_module("automix_lite.train")

    real = runtime.resolve_device

    def explicit_only(spec, **kw):
        if spec == "auto":
            raise AssertionError("a CPU-twin test resolved device='auto' (CUDA on a GPU machine): name the device")
        return real(spec, **kw)
    monkeypatch.setattr(runtime, "resolve_device", explicit_only)
    monkeypatch.setattr(train_mod, "resolve_device", explicit_only)


class _CudaScalarDivision(torch.overrides.TorchFunctionMode):
    """CUDA's rule on the CPU: a division of a float tensor by a host number is computed as a multiplication by
    the number's float32 reciprocal (PyTorch's ``div_true_kernel_cuda`` for a CPU scalar divisor)."""

    DIVS = {torch.Tensor.__truediv__, torch.Tensor.div, torch.div, torch.true_divide, torch.Tensor.div_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.DIVS and len(args) == 2 and isinstance(args[1], (int, float)) and args[0].is_floating_point() \
                and not kwargs:
            inv = torch.tensor(np.float32(1.0) / np.float32(args[1]), dtype=args[0].dtype)
            return args[0] * inv if func is not torch.Tensor.div_ else args[0].mul_(inv)
        return func(*args, **kwargs)


def test_every_byte_value_normalises_exactly_as_torchvision_even_under_cudas_scalar_division():
    """Issue 29, item 2: ``x / 255`` with a host 255 is ``x * (1/255)`` on CUDA, one ulp off torchvision's CPU
    ``ToTensor`` for about half of the byte values; the device path divides by a tensor, a true division on
    every device. Emulated here on the CPU (the mode above), so the check runs without a GPU."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    want = _to_tensor_normalised(_pil(values[0]), *CIFAR_STATS)  # torchvision on the CPU
    with _CudaScalarDivision():
        assert not torch.equal(values.float() / 255, values.float() / torch.tensor(255.0))  # the mode bites
        data = dd.DeviceImages(values, torch.zeros(1), mean=CIFAR_STATS[0], std=CIFAR_STATS[1], in_chans=3)
        ours = data.batch(torch.zeros(1, dtype=torch.long), None)
    assert torch.equal(ours[0], want)
    assert torch.equal(data.batch(torch.zeros(1, dtype=torch.long), None)[0], want)  # and without the mode


# ---------------------------------------------------------------- pixel equality with torchvision
@pytest.mark.parametrize("chans", [1, 3])
def test_shift_crop_equals_torchvision_pipeline_pixel_for_pixel(chans):
    images = _smooth_images(12, chans, 32, 32, seed=chans)
    mean, std = (CIFAR_STATS[0][:chans], CIFAR_STATS[1][:chans])
    data = dd.DeviceImages(images, torch.arange(12), mean=mean, std=std, in_chans=chans,
                           augment=dd.ShiftAugment(pad=4, size=32))
    params = dd.draw_shift(12, 4, 0.5, torch.Generator().manual_seed(0))
    params[:4] = torch.tensor([[0, 0, 0], [8, 8, 1], [0, 8, 1], [8, 0, 0]])  # the four extreme offsets
    got = data.batch(torch.arange(12), params)  # [12, C, 32, 32]
    for k in range(12):
        dy, dx, flip = params[k].tolist()
        ref = TF.crop(TF.pad(_pil(images[k]), 4, padding_mode="reflect"), dy, dx, 32, 32)  # the PIL pipeline
        ref = TF.hflip(ref) if flip else ref
        assert torch.equal(got[k], _to_tensor_normalised(ref, mean, std)), (k, dy, dx, flip)


@pytest.mark.parametrize("shape,size,mode", [((40, 48), 32, "RGB"), ((64, 64), 64, "RGB"), ((30, 20), 48, "L"),
                                             ((96, 64), 24, "RGB")])
def test_resized_crop_equals_torchvision_pil_pipeline_pixel_for_pixel(shape, size, mode):
    chans = 3 if mode == "RGB" else 1
    n = 40
    images = _smooth_images(n, chans, *shape, seed=size)
    images[n // 2:] = torch.randint(0, 256, (n - n // 2, chans, *shape), generator=torch.Generator().manual_seed(1),
                                    dtype=torch.uint8)  # noise: the hardest case for the rounding
    aug = dd.ResizedCropAugment(size=size)
    boxes = dd.draw_resized_crop(n, *shape, aug, torch.Generator().manual_seed(2))
    mean, std = (0.5,) * chans, (0.25,) * chans
    data = dd.DeviceImages(images, torch.arange(n), mean=mean, std=std, in_chans=chans, augment=aug)
    got = data.batch(torch.arange(n), boxes)
    for k in range(n):
        top, left, h, w, flip = boxes[k].tolist()
        ref = TF.resized_crop(_pil(images[k]), top, left, h, w, [size, size], T.InterpolationMode.BICUBIC)
        ref = TF.hflip(ref) if flip else ref
        assert torch.equal(got[k], _to_tensor_normalised(ref, mean, std)), (k, boxes[k].tolist())


def test_pillow_pass_order_rule_matters_and_is_followed():
    # a box whose height shrinks far more than its width: the two pass orders round differently
    images = torch.randint(0, 256, (1, 3, 80, 80), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    box = torch.tensor([[0, 0, 80, 20, 0]])
    a = dd.resize_crops(images, box, 32, vertical_first_rule=False)
    b = dd.resize_crops(images, box, 32, vertical_first_rule=True)
    assert not torch.equal(a, b)
    ref = _pil(images[0]).crop((0, 0, 20, 80)).resize((32, 32), Image.BICUBIC)
    ref = torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1).double()
    assert torch.equal(ref, (b if augment_ops.PILLOW_VERTICAL_FIRST else a)[0])


def test_in_memory_digits_become_the_same_pixels_on_the_device():
    train, _, info = build_datasets(TrainConfig.preset("quick", train_subset=50, img_size=32))
    data = device_images(train, "cpu", info.in_chans)
    assert data.images.shape == (50, 1, 32, 32) and data.images.dtype == torch.float32  # unpadded core
    p = train.base.pad
    params = dd.draw_shift(50, p, 0.0, torch.Generator().manual_seed(0))
    got = data.batch(torch.arange(50), params)
    base = train.base
    for k in range(50):
        dy, dx, _ = params[k].tolist()
        crop = base.images[train.indices[k], :, dy:dy + 32, dx:dx + 32].float().expand(3, -1, -1)
        assert torch.equal(got[k], (crop - base.mean) / base.std)
    assert torch.equal(data.targets, train.targets)


# ---------------------------------------------------------------- rates of the draws
def test_every_crop_offset_and_both_flips_occur_at_their_rates_through_the_loader():
    # each pixel encodes its own row and column, so a batch tells which offset and flip were drawn
    rows = torch.arange(32).view(32, 1).expand(32, 32)
    cols = torch.arange(32).view(1, 32).expand(32, 32)
    image = torch.stack([rows * 7, cols * 7, torch.zeros(32, 32, dtype=torch.long)]).to(torch.uint8)  # [3, 32, 32]
    n = 81 * 40
    data = dd.DeviceImages(image.expand(n, -1, -1, -1).contiguous(), torch.zeros(n), mean=(0.0,) * 3,
                           std=(1.0 / 255,) * 3, in_chans=3, augment=dd.ShiftAugment(pad=4, size=32))
    loader = dd.DeviceLoader(data, 270, generator=torch.Generator().manual_seed(0))
    x = torch.cat([b for b, _ in loader])  # [n, 3, 32, 32], values = 255 * pixel / 255 = pixel
    dy = (x[:, 0, 16, 16] / 7).round().long() - 12  # crop row 16 reads padded row dy + 16 = source dy + 12
    flip = x[:, 1, 16, 17] < x[:, 1, 16, 16]
    dx = torch.where(flip, (x[:, 1, 16, 16] / 7).round().long() - 27 + 16, (x[:, 1, 16, 16] / 7).round().long() - 12)
    counts = torch.bincount(dy * 9 + dx, minlength=81).double()
    assert counts.numel() == 81 and counts.min() > 0
    expected = n / 81
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 130, chi2  # 80 degrees of freedom: P(chi2 > 130) ~ 3e-4
    assert abs(float(flip.double().mean()) - 0.5) < 4 * math.sqrt(0.25 / n)


def test_resized_crop_boxes_follow_torchvision_get_params():
    aug = dd.ResizedCropAugment(size=32)
    n = 4000
    for height, width in [(64, 64), (20, 90)]:  # square, and an aspect outside `ratio` (fallback crops)
        ours = dd.draw_resized_crop(n, height, width, aug, torch.Generator().manual_seed(0)).double()
        torch.manual_seed(0)
        img = torch.zeros(1, height, width)
        ref = torch.tensor([T.RandomResizedCrop.get_params(img, aug.scale, aug.ratio) for _ in range(n)]).double()
        assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()
        assert (ours[:, 2:4] > 0).all()
        for col in range(4):  # top, left, h, w: means within 5 standard errors
            se = math.sqrt(ours[:, col].var() / n + ref[:, col].var() / n)
            assert abs(float(ours[:, col].mean() - ref[:, col].mean())) < 5 * se + 1e-9, (height, width, col)
        area = ours[:, 2] * ours[:, 3] / (height * width)
        ref_area = ref[:, 2] * ref[:, 3] / (height * width)
        assert abs(float(area.mean() - ref_area.mean())) < 0.02
        full = (ours[:, 2] == height) & (ours[:, 3] == width)
        assert abs(float(full.double().mean() - ((ref[:, 2] == height) & (ref[:, 3] == width)).double().mean())) < 0.03
    assert abs(float(ours[:, 4].mean()) - 0.5) < 0.05


# ---------------------------------------------------------------- loaders: order, resume, no sync
def test_device_loader_has_the_dataloader_batches_order_and_val():
    cfg = TrainConfig.preset("quick", train_subset=200)
    dev = build_loaders(cfg.replace(data_on_device=True), device="cpu")
    ref = build_loaders(cfg.replace(data_on_device=False), device="cpu")
    assert type(dev[0]).__name__ == "DeviceLoader" and type(ref[0]).__name__ == "DataLoader"
    assert len(dev[0]) == len(ref[0]) and dev[0].batch_size == ref[0].batch_size
    for epoch in (0, 1):
        dev[2].set_epoch(epoch), ref[2].set_epoch(epoch)
        labels_dev = [y for _, y in dev[0]]
        labels_ref = [y for _, y in ref[0]]
        assert all(torch.equal(a, b) for a, b in pairs(labels_dev, labels_ref))
    for (xa, ya), (xb, yb) in pairs(dev[1], ref[1]):  # deterministic val: identical tensors
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_resume_mid_epoch_gives_the_uninterrupted_batches():
    cfg = TrainConfig.preset("quick", train_subset=256, batch_size=32, data_on_device=True)
    loader, _, sampler, _ = build_loaders(cfg, device="cpu")
    loader.generator.manual_seed(5)
    sampler.set_epoch(0)
    list(loader)  # epoch 0 moves the generator
    at_epoch_start = loader.generator.get_state()
    sampler.set_epoch(1)
    full = list(loader)
    after = loader.generator.get_state()
    loader.generator.set_state(at_epoch_start)  # what train() restores from a mid-epoch checkpoint
    sampler.set_epoch(1)
    sampler.set_start(3 * loader.batch_size)
    tail = list(loader)
    assert len(tail) == len(full) - 3
    for (xa, ya), (xb, yb) in pairs(full[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(loader.generator.get_state(), after)
    sampler.set_epoch(2)  # and a new epoch draws new crops
    assert not torch.equal(next(iter(loader))[0], full[0][0])


def test_per_batch_path_converts_no_device_tensor_to_python(monkeypatch):
    cfg = TrainConfig.preset("quick", train_subset=256, batch_size=32, data_on_device=True)
    loader, _, sampler, _ = build_loaders(cfg, device="cpu")
    sampler.set_epoch(0)
    batches = iter(loader)
    next(batches)  # the epoch's setup (one seed draw, the index list) is allowed to read numbers
    calls = []

    def spy(name):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, **k):
            calls.append(name)
            return orig(self, *a, **k)
        return wrapped

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    rest = list(batches)
    monkeypatch.undo()
    assert len(rest) == len(loader) - 1 and calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CPU twin is the test above)")
def test_cuda_batches_do_not_synchronise():
    cfg = TrainConfig.preset("quick", train_subset=256, batch_size=32, data_on_device=True, device="cuda")
    loader, _, sampler, _ = build_loaders(cfg)
    sampler.set_epoch(0)
    batches = iter(loader)
    next(batches)
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rest[0][0].is_cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_the_cpu_batches():
    # the draws are made on the CPU and every op is exact, so both devices see the same pixels
    images = _smooth_images(64, 3, 48, 40, seed=9)
    for aug in (dd.ShiftAugment(pad=4, size=None), dd.ResizedCropAugment(size=32)):
        imgs = images[..., :40, :40].contiguous() if isinstance(aug, dd.ShiftAugment) else images
        out = []
        for device in ("cpu", "cuda"):
            data = dd.DeviceImages(imgs.to(device), torch.arange(64), mean=CIFAR_STATS[0], std=CIFAR_STATS[1],
                                   in_chans=3, augment=aug)
            loader = dd.DeviceLoader(data, 16, generator=torch.Generator().manual_seed(0))
            out.append(torch.cat([x.cpu() for x, _ in loader]))
        assert torch.equal(out[0], out[1]), aug


# ---------------------------------------------------------------- folders and fallbacks
def _folder(root: Path, split: str, n_per_class: int, size=(32, 32), classes=("a", "b"), ext="png", seed=0):
    g = torch.Generator().manual_seed(seed)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            sz = size(i) if callable(size) else size
            _pil(_smooth_images(1, 3, *sz, seed=int(torch.randint(1 << 30, (1,), generator=g)))[0]).save(
                root / split / c / f"{i}.{ext}")


@pytest.mark.filterwarnings("ignore:.*classes, expected")
def test_cifar_image_folder_decodes_to_the_dataloader_pixels(tmp_path):
    _folder(tmp_path, "train", 12)
    _folder(tmp_path, "test", 5, seed=1)
    cfg = TrainConfig.preset("cifar10", data_dir=str(tmp_path), batch_size=8, workers=0, num_classes=10)
    train_ds, val_ds, info = build_datasets(cfg)
    data = device_images(train_ds, "cpu", 3)
    assert data.images.dtype == torch.uint8 and data.images.shape == (24, 3, 32, 32)
    assert data.augment == dd.ShiftAugment(pad=4, flip_p=0.5, size=32)
    dev = build_loaders(cfg.replace(data_on_device=True), device="cpu")
    ref = build_loaders(cfg.replace(data_on_device=False), device="cpu")
    for (xa, ya), (xb, yb) in pairs(dev[1], ref[1]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # a train batch: the crops the device drew, reproduced through the PIL pipeline of the DataLoader path
    dev[2].set_epoch(0)
    loader = dev[0]
    order = torch.tensor(list(dev[2]))[:8]
    seed_gen = torch.Generator()
    seed_gen.set_state(loader.generator.get_state())
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=seed_gen))
    params = data.draw(len(dev[2]), torch.Generator().manual_seed(seed))[:8]
    x, y = next(iter(loader))
    for k in range(8):
        path, target = train_ds.samples[int(order[k])]
        dy, dx, flip = params[k].tolist()
        img = TF.crop(TF.pad(Image.open(path).convert("RGB"), 4, padding_mode="reflect"), dy, dx, 32, 32)
        img = TF.hflip(img) if flip else img
        assert torch.equal(x[k], _to_tensor_normalised(img, info.mean, info.std)) and int(y[k]) == target


def test_tiny_imagenet_layout_on_the_device(tmp_path):
    _folder(tmp_path, "train", 6, size=(64, 64), classes=("n01", "n02"))
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(4):
        _pil(_smooth_images(1, 3, 64, 64, seed=100 + i)[0]).save(tmp_path / "val" / "images" / f"v{i}.JPEG")
        lines.append(f"v{i}.JPEG\tn0{1 + i % 2}\t0\t0\t64\t64")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines))
    cfg = TrainConfig.preset("tiny_imagenet", data_dir=str(tmp_path), img_size=32, batch_size=4, workers=0,
                             num_classes=200)
    dev = build_loaders(cfg.replace(data_on_device=True), device="cpu")
    ref = build_loaders(cfg.replace(data_on_device=False), device="cpu")
    assert dev[0].data.augment == dd.ResizedCropAugment(size=32)
    for (xa, ya), (xb, yb) in pairs(dev[1], ref[1]):  # val: Resize(32, bicubic) at decoding, same pixels
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    dev[2].set_epoch(0)
    x, y = next(iter(dev[0]))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.long


def test_mixed_image_sizes_fall_back_or_fail_clearly(tmp_path):
    _folder(tmp_path, "train", 4, size=lambda i: (40 + 4 * i, 48))
    _folder(tmp_path, "val", 2, seed=1)
    cfg = TrainConfig.preset("tiny_imagenet", dataset="folder", data_dir=str(tmp_path), img_size=32, batch_size=4,
                             workers=0)
    with pytest.raises(ValueError, match="different sizes"):
        build_loaders(cfg.replace(data_on_device=True), device="cpu")
    loader = build_loaders(cfg.replace(data_on_device="auto"), device="cpu")[0]
    assert type(loader).__name__ == "DataLoader"  # 'auto' is off on the CPU anyway


def test_auto_is_off_on_cpu_and_true_gives_the_dataloaders_batches_on_fake_data():
    assert not dd.wanted("auto", torch.device("cpu"), lambda: 0)
    assert dd.wanted(True, torch.device("cpu"), lambda: 1 << 60)
    assert type(build_loaders(TrainConfig.preset("quick"), device="cpu")[0]).__name__ == "DataLoader"
    cfg = TrainConfig.preset("quick", dataset="fake", img_size=16, num_classes=4, data_on_device=True)
    loader, val, sampler, _ = build_loaders(cfg, device="cpu")
    ref = build_loaders(cfg.replace(data_on_device=False), device="cpu")
    sampler.set_epoch(0), ref[2].set_epoch(0)
    for (xa, ya), (xb, yb) in pairs(loader, ref[0]):  # fake: no augmentation, identical batches
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ---------------------------------------------------------------- train() on the device path
def test_train_with_data_on_device_runs_and_resumes_mid_epoch_exactly(tmp_path, monkeypatch):
    from automix_lite import train

    train_mod = importlib.import_module("automix_lite.train")
    monkeypatch.setattr(train_mod, "_figures", lambda *a, **k: None)
    kw = dict(dataset="digits", img_size=16, train_subset=48, val_subset=16, batch_size=8, epochs=2, model="resnet_tiny_cifar",
              method="cutmix", workers=0, amp="off", log_every=1, median_last_k=1, data_on_device=True,
              device="cpu")

    Losses = StepLosses
    ref = Losses()
    res = train(TrainConfig.preset("quick", out=str(tmp_path / "ref"), **kw), callbacks=[ref])
    assert len(ref.rows) == 12 and all(math.isfinite(r["loss"]) for r in ref.rows.values())
    assert 0 <= res.metrics["final_top1"]["top1"] <= 100
    cfg = TrainConfig.preset("quick", out=str(tmp_path / "cut"), **kw)
    first = Losses(stop=8)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[first])
    second = Losses()
    train(cfg.replace(resume=str(tmp_path / "cut")), callbacks=[second])
    got = {**first.rows, **second.rows}
    assert sorted(got) == sorted(ref.rows)
    for step, row in ref.rows.items():
        assert row["loss"] == pytest.approx(got[step]["loss"], abs=1e-6), step


class _TorchvisionCifarLike(torch.utils.data.Dataset):
    """What torchvision's CIFAR10/100 hold: ``data`` [N, 32, 32, 3] uint8, ``targets``, a PIL ``transform``."""

    def __init__(self, data: np.ndarray, targets: list[int], transform):
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


@pytest.mark.parametrize("img_size,chans", [(32, 3), (40, 3), (32, 1)])
def test_torchvision_cifar_layout_with_resize_and_grey_heads(img_size, chans):
    from automix_lite.trainer.data import _transforms

    mean, std = CIFAR_STATS if chans == 3 else ((0.48,), (0.24,))
    tf_train, tf_test = _transforms("cifar", img_size, chans, mean, std)
    raw = _smooth_images(10, 3, 32, 32, seed=7).permute(0, 2, 3, 1).numpy()  # [N, 32, 32, 3]
    val = _TorchvisionCifarLike(raw, list(range(10)), tf_test)
    data = device_images(val, "cpu", chans)
    x = data.batch(torch.arange(10), None)
    assert torch.equal(x, torch.stack([val[i][0] for i in range(10)]))  # Resize / Grayscale at decoding
    train = _TorchvisionCifarLike(raw, list(range(10)), tf_train)
    tdata = device_images(train, "cpu", chans)
    pad = img_size // 8
    assert tdata.augment == dd.ShiftAugment(pad=pad, flip_p=0.5, size=img_size)
    params = dd.draw_shift(10, pad, 0.5, torch.Generator().manual_seed(1))
    got = tdata.batch(torch.arange(10), params)
    for k in range(10):
        img = Image.fromarray(raw[k])
        for t in tf_train.transforms[:-4]:  # the deterministic head (Grayscale, Resize)
            img = t(img)
        dy, dx, flip = params[k].tolist()
        img = TF.crop(TF.pad(img, pad, padding_mode="reflect"), dy, dx, img_size, img_size)
        img = TF.hflip(img) if flip else img
        assert torch.equal(got[k], _to_tensor_normalised(img, mean, std)), k


def test_ddp_shards_on_the_device_match_the_dataloader_shards():
    cfg = TrainConfig.preset("quick", train_subset=200, val_subset=50, batch_size=16)
    seen = []
    for rank in (0, 1):
        dev = build_loaders(cfg.replace(data_on_device=True), distributed=True, rank=rank, world_size=2,
                            device="cpu")
        ref = build_loaders(cfg.replace(data_on_device=False), distributed=True, rank=rank, world_size=2,
                            device="cpu")
        assert dev[0].batch_size == 8 and len(dev[0]) == len(ref[0])
        dev[2].set_epoch(3), ref[2].set_epoch(3)
        for (_, ya), (_, yb) in pairs(dev[0], ref[0]):
            assert torch.equal(ya, yb)
        seen.append(list(dev[2]))
        assert [len(y) for _, y in dev[1]] == [len(y) for _, y in ref[1]]  # val sharded without padding
    assert not set(seen[0]) & set(seen[1])  # disjoint train shards
