"""Clear errors at the public surface: each case asserts the exception TYPE and a helpful fragment of the
message (what was expected, what was given, how to fix it)."""
import importlib
import re

import pytest
import torch

from automix_lite import AutoMix, Classifier, MixBlock, TrainConfig, from_openmixup, mix, mix_loss, to_openmixup, train
from automix_lite.__main__ import main as cli_main
from automix_lite.trainer.data import build_datasets

from conftest import fake_config

train_mod = importlib.import_module("automix_lite.train")

X = torch.randn(4, 3, 16, 16)  # [N, C, H, W]
Y = torch.tensor([0, 1, 2, 3])


@pytest.fixture(scope="module")
def automix():
    return AutoMix("resnet_tiny_cifar", 4)


def _fake(tmp_path, **kw):
    return fake_config(tmp_path, **kw)


# ------------------------------------------------------------------ image tensors: rank, dtype, channels
CASES = [
    # (id, callable(automix), exception type, message fragment)
    ("mix-rank", lambda m: mix(X[0], Y, "mixup"), ValueError, "must be 4-D [N, C, H, W], got shape (3, 16, 16)"),
    ("mix-dtype", lambda m: mix((X * 50).to(torch.uint8), Y, "cutmix"), TypeError, "convert with x.float()"),
    ("mix-label-float", lambda m: mix(X, Y.float(), "mixup"), TypeError, "use y.long()"),
    ("mix-label-shape", lambda m: mix(X, Y[:3], "mixup"), ValueError, "one label per image (4), got shape (3,)"),
    ("mix-label-negative", lambda m: mix(X, torch.tensor([0, -1, 2, 3]), "mixup"), ValueError,
     "labels must lie in [0, K) (class indices >= 0), got min -1"),
    ("mix-loss-label-range", lambda m: mix_loss(torch.randn(4, 3), mix(X, Y, "mixup")), ValueError,
     "labels (for logits with 3 classes) must lie in [0, 3), got min 0 max 3"),
    ("mix-batch-1", lambda m: mix(X[:1], Y[:1], "cutmix"), ValueError,
     "at least 2 samples, got 1; use drop_last=True"),
    ("mix-unknown-method", lambda m: mix(X, Y, "mixupp"), ValueError, "Did you mean 'mixup'?"),
    ("mix-alpha", lambda m: mix(X, Y, "mixup", alpha=0.0), ValueError, "alpha must be > 0"),
    ("automix-rank", lambda m: m.training_step(X[0], Y), ValueError, "must be 4-D [N, C, H, W], got shape (3, 16, 16)"),
    ("automix-uint8", lambda m: m.training_step((X * 50).to(torch.uint8), Y), TypeError, "convert with x.float()"),
    ("automix-float64", lambda m: m.training_step(X.double(), Y), TypeError,
     "images are torch.float64 but the model's weights are torch.float32"),
    ("automix-channels", lambda m: m.training_step(X[:, :1], Y), ValueError,
     "1 channels but the model expects 3"),
    ("automix-label-range", lambda m: m.training_step(X, torch.tensor([0, 1, 2, 4])), ValueError,
     "labels must lie in [0, 4), got min 0 max 4"),
    ("automix-label-float", lambda m: m.training_step(X, Y.float()), TypeError, "integer tensor of class indices"),
    ("automix-batch-1", lambda m: m.training_step(X[:1], Y[:1]), ValueError, "batch of at least 2, got 1"),
    ("automix-tiny-image", lambda m: m.training_step(torch.randn(4, 3, 4, 4), Y), ValueError,
     "maps 4x4 images to a 1x1 feature map"),
    ("mixblock-rank", lambda m: MixBlock(8)(torch.randn(8, 4, 4), 0.5, torch.arange(8), 16), ValueError,
     "expects a feature map [N, 8, h, w], got (8, 4, 4)"),
    ("mixblock-channels", lambda m: MixBlock(8)(torch.randn(2, 6, 4, 4), 0.5, torch.tensor([1, 0]), 16),
     ValueError, "check the feature stage"),
    ("mixblock-upsample-smaller", lambda m: MixBlock(8)(torch.randn(2, 8, 4, 4), 0.5, torch.tensor([1, 0]), 2),
     ValueError, "smaller than the feature map"),
    ("automix-unknown-model", lambda m: AutoMix("resnet18_cifr", 4), ValueError, "Did you mean 'resnet18_cifar'"),
    ("classifier-unknown-timm-model", lambda m: Classifier("resnet81", 4), ValueError, "not a timm model"),
    ("automix-feature-stage", lambda m: AutoMix("resnet_tiny_cifar", 4, feature_stage=9), ValueError,
     "feature stage 9 out of range"),
    ("automix-alpha", lambda m: AutoMix("resnet_tiny_cifar", 4, alpha=-1.0), ValueError, "alpha must be > 0"),
    ("automix-momentum", lambda m: AutoMix("resnet_tiny_cifar", 4, momentum=1.5), ValueError,
     "must lie in [0, 1], got 1.5"),
]


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tensor_and_model_errors(automix, call, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        call(automix)


def test_vit_image_size_mismatch_is_explained():
    model = Classifier("vit_tiny_patch16_224", 4, depth=1)
    with pytest.raises(ValueError, match=re.escape("built for 224x224 images, got 32x32; pass img_size=32")):
        model(torch.randn(2, 3, 32, 32))


# ------------------------------------------------------------------ configuration
CONFIG_CASES = [
    ("preset", dict(), "cifar1000", "Did you mean 'cifar100'?"),
    ("method", dict(method="cutmixx"), "quick", "Did you mean 'cutmix'?"),
    ("model", dict(model="resnet18_cifr"), "quick", "Did you mean 'resnet18_cifar'?"),
    ("field", dict(epoch=3), "quick", "'epoch': Did you mean 'epochs'?"),
    ("alpha", dict(alpha=0.0), "quick", "alpha=0.0 must be > 0"),
    ("momentum", dict(momentum=1.0), "quick", "momentum=1.0 (SGD momentum) must be in [0, 1)"),
    ("momentum-negative", dict(momentum=-0.1), "quick", "must be in [0, 1)"),
    ("lr", dict(lr=-0.1), "quick", "lr=-0.1 must be >= 0"),
    ("epochs", dict(epochs=0), "quick", "epochs=0 must be > 0"),
    ("ema-momentum", dict(ema_momentum=1.0), "quick", "would freeze the momentum encoder"),
]


@pytest.mark.parametrize("overrides,preset,fragment", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_errors(overrides, preset, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        TrainConfig.preset(preset, **overrides)


def test_config_wrong_type_is_both_type_and_value_error():
    with pytest.raises(TypeError, match=re.escape("epochs='3' (str) should be int")):
        TrainConfig.preset("quick", epochs="3")


# ------------------------------------------------------------------ data
def test_missing_cifar_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("Set download=True (--download)")):
        build_datasets(TrainConfig.preset("cifar10", data_dir=str(tmp_path / "nowhere")))


def test_missing_tiny_imagenet_gives_the_url(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("tiny-imagenet-200.zip")):
        build_datasets(TrainConfig.preset("tiny_imagenet", data_dir=str(tmp_path)))


def test_missing_imagenet_folder_gives_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("train/<class>/*.JPEG and val/<class>/*.JPEG")):
        build_datasets(TrainConfig.preset("imagenet", data_dir=str(tmp_path)))


def test_missing_fashion_mnist_says_where_to_put_files(tmp_path, monkeypatch):
    sources = importlib.import_module("automix_lite.trainer.sources")
    monkeypatch.setattr(sources, "_DEBIAN_FASHION", tmp_path / "absent")  # the Debian package may be installed
    cfg = TrainConfig.preset("quick", dataset="fashion-mnist", data_dir=str(tmp_path / "fm"), in_chans=1)
    with pytest.raises(FileNotFoundError, match=re.escape("apt-get install dataset-fashion-mnist")):
        build_datasets(cfg)


# ------------------------------------------------------------------ checkpoints and output folders
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    mp = pytest.MonkeyPatch()
    mp.setattr(train_mod, "_figures", lambda *a, **k: None)
    try:
        cfg = _fake(tmp)
        train(cfg)
    finally:
        mp.undo()
    return cfg


def test_resume_with_another_model_is_refused(trained_run):
    with pytest.raises(ValueError, match=re.escape("model: checkpoint 'resnet_tiny_cifar' vs config 'resnet18_cifar'")):
        train(trained_run.replace(model="resnet18_cifar", resume=trained_run.out, epochs=2))


def test_resume_with_another_number_of_classes_is_refused(trained_run):
    with pytest.raises(ValueError, match=re.escape("num_classes: checkpoint 4 vs data 5")):
        train(trained_run.replace(num_classes=5, resume=trained_run.out, epochs=2))


def test_resume_from_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass a run folder"):
        train(_fake(tmp_path, resume=str(tmp_path / "never-ran")))


def test_from_openmixup_with_another_number_of_classes():
    from automix_lite import CheckpointMismatchError

    sd = to_openmixup(AutoMix("resnet_tiny_cifar", 10))
    with pytest.raises(CheckpointMismatchError, match=re.escape("checkpoint (10, 128), model (100, 128)")):
        from_openmixup(sd, num_classes=100)


def test_output_folder_under_a_regular_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to the output folder.*pass a writable folder"):
        train(_fake(tmp_path, out=str(blocker / "run")))


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc = cli_main(["train", "--preset", "quick", "--dataset", "fake", "--out", str(blocker / "run")])
    assert rc == 2
    assert "automix_lite: error: cannot write to the output folder" in capsys.readouterr().err
    rc = cli_main(["train", "--preset", "quick", "--alpha", "-1"])
    assert rc == 2 and "alpha=-1.0 must be > 0" in capsys.readouterr().err


def test_train_rejects_a_non_config():
    with pytest.raises(TypeError, match="use TrainConfig.preset"):
        train({"epochs": 1})


def test_cli_reports_nonfinite_loss_stop(tmp_path, monkeypatch, capsys):
    orig = train_mod._StepModule.forward

    def nan_forward(self, *args):
        losses, mask, perm = orig(self, *args)
        return {**losses, "loss": losses["loss"] * float("nan")}, mask, perm

    monkeypatch.setattr(train_mod._StepModule, "forward", nan_forward)
    rc = cli_main(["train", "--preset", "quick", "--dataset", "fake", "--img-size", "16", "--num-classes", "4",
                   "--train-subset", "32", "--batch-size", "8", "--max-nonfinite", "2", "--out", str(tmp_path / "r")])
    assert rc == 1
    assert "automix_lite: error: 2 consecutive non-finite losses" in capsys.readouterr().err
