"""TrainConfig: presets build and validate, overrides, clear errors, JSON round-trip."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from automix_lite.trainer.config import CIFAR_MODELS, PRESETS, ConfigTypeError, TrainConfig
from automix_lite.trainer.options import _known_methods


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_validates(name):
    cfg = TrainConfig.preset(name)
    assert cfg.validate() is cfg
    assert cfg.preset_name == name
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # survives a checkpoint's round trip
    # (that the presets hold the documented recipes is checked against docs/recipes.md in test_docs.py)


def test_presets_follow_the_spec_recipes():
    # docs/recipes.md: the properties that distinguish the recipes from each other
    c100, wrn = TrainConfig.preset("cifar100"), TrainConfig.preset("cifar100_wrn28_8")
    tiny, imnet = TrainConfig.preset("tiny_imagenet"), TrainConfig.preset("imagenet")
    assert c100.min_lr == pytest.approx(c100.lr / 2) and c100.mb_lr is None
    assert wrn.mb_momentum == 0.0 and wrn.weight_decay > c100.weight_decay and wrn.lr < c100.lr
    assert tiny.mb_lr < tiny.lr and tiny.mb_min_lr < tiny.min_lr and tiny.img_size == 64
    assert imnet.lam_concat and not c100.lam_concat and not tiny.lam_concat
    assert imnet.mask_loss_schedule == "upstream" and c100.mask_loss_schedule == "constant"
    assert imnet.ema_end_momentum < c100.ema_end_momentum < 1.0
    assert imnet.min_lr == 0.0 and imnet.batch_size % 4 == 0  # 4 x 64 global batch
    for name in PRESETS:
        cfg = TrainConfig.preset(name)
        assert cfg.alpha == 2.0 and cfg.lam_margin == 0.08 and cfg.mask_loss_margin == 0.1
    quick = TrainConfig.preset("quick")
    assert quick.dataset == "digits" and quick.workers == 0 and quick.amp == "off"


def test_quick_ema_horizon_is_short_enough_for_its_step_count():
    quick = TrainConfig.preset("quick")
    steps = quick.epochs * (1297 // quick.batch_size)  # digits train split
    assert 1.0 / (1.0 - quick.ema_momentum) < steps / 4  # the momentum encoder must actually move


def test_overrides_by_keyword():
    base = TrainConfig.preset("quick")
    cfg = TrainConfig.preset("quick", epochs=3, method="mixup", label_noise=0.4)
    assert (cfg.epochs, cfg.method, cfg.label_noise) == (3, "mixup", 0.4)
    changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)}
    assert changed == {"epochs", "method", "label_noise"}


def test_replace_returns_validated_copy():
    cfg = TrainConfig.preset("quick")
    new = cfg.replace(lr=0.05, min_lr=0.0)
    assert new.lr == 0.05 and cfg.lr == 0.1
    with pytest.raises(ValueError, match="alpha"):
        cfg.replace(alpha=-1.0)
    with pytest.raises(ValueError, match="Did you mean 'epochs'"):
        cfg.replace(epoch=3)


@pytest.mark.parametrize("overrides, fragment", [
    (dict(alpha=0.0), "alpha=0.0 must be > 0"),
    (dict(alpha=-1.0), "Beta(alpha, alpha)"),
    (dict(ema_momentum=1.0), "ema_momentum=1.0 must be in [0, 1)"),
    (dict(ema_end_momentum=1.5), "ema_end_momentum"),
    (dict(ema_momentum=-0.1), "ema_momentum=-0.1"),
    (dict(lr=-0.1), "lr=-0.1 must be >= 0"),
    (dict(epochs=0), "epochs=0 must be > 0"),
    (dict(batch_size=0), "global batch"),
    (dict(label_noise=1.0), "label_noise"),
    (dict(method="mixupp"), "Did you mean 'mixup'"),
    (dict(method="automx"), "Did you mean 'automix'"),
    (dict(dataset="cifar-10"), "Did you mean 'cifar10'"),
    (dict(amp="fp8"), "amp='fp8' is not one of auto, off, bf16, fp16"),
    (dict(mask_loss_schedule="cosin"), "Did you mean 'cosine'"),
    (dict(model="resnet18_cifr"), "Did you mean 'resnet18_cifar'"),
    (dict(device="gpu"), "device='gpu'"),
    (dict(min_lr=1.0), "min_lr=1.0 must be in [0, lr=0.1]"),
])
def test_invalid_values_give_clear_errors(overrides, fragment):
    with pytest.raises(ValueError) as err:
        TrainConfig.preset("quick", **overrides)
    assert fragment in str(err.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError) as err:
        TrainConfig.preset("quick", alpha=0.0, epochs=0)
    assert "alpha" in str(err.value) and "epochs" in str(err.value)


def test_unknown_preset_and_field_suggest_closest():
    with pytest.raises(ValueError, match="Did you mean 'cifar100'"):
        TrainConfig.preset("cifar_100")
    with pytest.raises(ValueError, match="Did you mean 'lr'"):
        TrainConfig.preset("quick", lrr=0.1)
    with pytest.raises(ValueError, match="Did you mean 'label_noise'"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "label_nois": 0.1})


def test_wrong_types_raise_a_type_error_that_is_also_a_value_error():
    for bad in (dict(epochs="10"), dict(epochs=True), dict(lam_concat="yes"), dict(lr="0.1")):
        with pytest.raises(ConfigTypeError) as err:
            TrainConfig.preset("quick", **bad)
        assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)
        assert next(iter(bad)) in str(err.value)
    assert TrainConfig.preset("quick", lr=1).lr == 1  # an int is a fine float


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip(name):
    cfg = TrainConfig.preset(name, seed=7, resume=None)
    text = json.dumps(cfg.to_dict())
    back = TrainConfig.from_dict(json.loads(text))
    assert back == cfg and back is not cfg
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_from_dict_fills_missing_keys_with_defaults_and_rejects_non_dicts():
    assert TrainConfig.from_dict({"epochs": 3}) == TrainConfig(epochs=3)
    with pytest.raises(TypeError, match="expects a dict"):
        TrainConfig.from_dict(["epochs", 3])


def test_paths_are_stored_as_strings(tmp_path):
    cfg = TrainConfig.preset("quick", out=tmp_path / "run", data_dir=Path("data"))
    assert cfg.out == str(tmp_path / "run") and isinstance(cfg.data_dir, str)
    json.dumps(cfg.to_dict())


def test_every_known_method_and_model_validates():
    from automix_lite import MIXERS

    # the methods a config accepts are exactly the library's: vanilla, every mixer, automix (not a copied list)
    assert set(_known_methods()) == {"vanilla", "automix", *MIXERS}
    for method in _known_methods():
        assert TrainConfig.preset("quick", method=method).method == method
    with pytest.raises(ValueError, match="method"):
        TrainConfig.preset("quick", method="mixupp")
    for model in CIFAR_MODELS + ("resnet18", "resnet50"):
        TrainConfig.preset("quick", model=model)


def test_cli_none_overrides_a_preset_value_and_absent_flags_keep_it():
    from automix_lite.__main__ import _config_from_args, build_parser

    preset = TrainConfig.preset("quick")
    assert preset.feature_stage is not None and preset.att_norm is not None  # the quick preset sets both
    kept = _config_from_args(build_parser().parse_args(["train", "--preset", "quick"]))
    assert kept.feature_stage == preset.feature_stage and kept.att_norm == preset.att_norm
    cleared = _config_from_args(build_parser().parse_args(
        ["train", "--preset", "quick", "--feature-stage", "none", "--att-norm", "none", "--epochs", "3"]))
    assert cleared.feature_stage is None and cleared.att_norm is None and cleared.epochs == 3
