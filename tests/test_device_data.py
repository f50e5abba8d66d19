"""Data on the device (automix_lite.device_data): the config switch, the on-device augmentation against
torchvision's reference ops, its rates, resumability, and train() with ``data_on_device=True``."""
from __future__ import annotations

import pytest

from automix_lite.__main__ import build_parser, _config_from_args
from automix_lite.config import TrainConfig


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
