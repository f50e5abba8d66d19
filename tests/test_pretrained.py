"""The shipped model (automix_lite/assets/): small, loadable, the recorded run, and showing learned masks."""
import json
from pathlib import Path

import pytest
import torch

from automix_lite import AutoMix, TrainConfig, load_pretrained
from automix_lite.trainer.data import build_loaders
from automix_lite.trainer.diagnostics import STRUCTURE_MIN, diagnose
from automix_lite.trainer.pretrained import pretrained_path

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_model_is_the_main_job_and_its_masks_are_learned():
    shipped = load_pretrained("quick")
    assert isinstance(shipped.model, AutoMix) and not shipped.model.training
    assert pretrained_path("quick").stat().st_size < 5e6 and shipped.img_size == 16
    cfg = TrainConfig.preset("quick")
    _, val_loader, _, info = build_loaders(cfg, device="cpu")
    assert (shipped.mean, shipped.std) == (tuple(info.mean), tuple(info.std))
    x, y = next(iter(val_loader))
    std = diagnose(shipped.model, [], val_loader, torch.device("cpu"))["mask_std"]  # what the run recorded
    record = shipped.record
    assert std == pytest.approx(record["diagnostics"]["mask_std"], abs=1e-6)  # the weights are the recorded run's
    assert std > STRUCTURE_MIN  # learned, structured masks (an untrained block gives ~0.01)
    with torch.no_grad():
        top1 = float((shipped.model(x).argmax(1) == y).float().mean())
    assert top1 > 0.9
    # the record is the README's main job, seed 0 (benchmarks/results/main_job.json): same command, same numbers
    main_job = json.loads((ROOT / "benchmarks" / "results" / "main_job.json").read_text())
    seed0 = next(r for r in main_job["runs"] if r["seed"] == 0)
    assert record["final_top1"] == seed0["final_top1"]
    assert record["diagnostics"]["mask_std"] == pytest.approx(seed0["diagnostics"]["mask_std"], abs=1e-9)


def test_unknown_names_are_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="Did you mean 'quick'"):
        load_pretrained("quik")
