"""Issue 22's correctness and safety list: each defect a user met, pinned by a test that failed before the fix."""
import json

import pytest
import torch

import automix_lite.core.augment as automix_module
from automix_lite import AutoMix, AutoMixAugment, mix, train
from automix_lite.__main__ import main as cli_main
from automix_lite.fast.runtime import resolve_amp
from automix_lite.trainer.engine import build_model, set_lr

from conftest import fake_config


def _tiny(tmp_path, **kw):
    return fake_config(tmp_path, **{"method": "vanilla", **kw})


@pytest.mark.parametrize("by_epoch", [True, False])
def test_warmup_never_runs_a_step_at_lr_zero(tmp_path, by_epoch):
    cfg = _tiny(tmp_path, epochs=4, warmup_epochs=2, sched_by_epoch=by_epoch, lr=0.1, min_lr=0.0)
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "base_lr": 0.1, "final_lr": 0.0}], lr=0.1)
    lrs = []
    for epoch in range(4):
        for step in range(5):
            set_lr(opt, cfg, epoch, step, 5)
            lrs.append(opt.param_groups[0]["lr"])
    warm = lrs[:10]
    assert warm[0] == pytest.approx(0.01) and warm[-1] == pytest.approx(0.1)  # 1/10 of the way, then all of it
    assert all(b > a for a, b in zip(warm, warm[1:]))
    assert lrs[10] == pytest.approx(0.1) and lrs[-1] < 0.1  # the cosine starts where the warm-up ends


def test_mix_with_a_trained_automix_uses_the_models_alpha(monkeypatch):
    model = AutoMix("resnet_tiny_cifar", num_classes=4, alpha=2.0).eval()
    seen = []
    real = automix_module.sample_lam
    monkeypatch.setattr(automix_module, "sample_lam", lambda a, g=None: seen.append(a) or real(a, g))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    mix(x, y, AutoMixAugment(model))
    mix(x, y, AutoMixAugment(model), alpha=0.5)
    assert seen == [2.0, 0.5]
    assert mix(x, y, "mixup", generator=torch.Generator().manual_seed(0)).lam[0] == \
        mix(x, y, "mixup", alpha=1.0, generator=torch.Generator().manual_seed(0)).lam[0]  # built-ins: still 1.0


def test_config_refuses_what_the_mix_block_refuses(tmp_path):
    with pytest.raises(ValueError, match="upsample"):
        _tiny(tmp_path, upsample="bicubic")
    assert _tiny(tmp_path, upsample="bilinear").upsample == "bilinear"


def test_automix_options_reach_the_model_from_config_and_cli(tmp_path):
    cfg = _tiny(tmp_path, method="automix", momentum_features="early_stop", head_ensemble=True,
                no_repeat_perm=True, use_scale=False)
    model = build_model(cfg, 4, 3)
    assert (model.momentum_features, model.head_ensemble, model.no_repeat_perm) == ("early_stop", True, True)
    assert model.mix_block.use_scale is False
    with pytest.raises(ValueError, match="momentum_features"):
        _tiny(tmp_path, momentum_features="early")
    from automix_lite.__main__ import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--preset", "quick", "--momentum-features", "early_stop",
                                      "--head-ensemble", "--out", str(tmp_path / "cli")])
    cfg = _config_from_args(args)
    assert cfg.momentum_features == "early_stop" and cfg.head_ensemble is True


def test_no_silent_defaults(tmp_path):
    with pytest.warns(RuntimeWarning, match="float32"):
        assert resolve_amp("bf16", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="max_nonfinite"):
        _tiny(tmp_path, max_nonfinite=0)
    cfg = _tiny(tmp_path, method="automix", lam_margin=-1.0)  # documented: < 0 disables the fallback
    assert build_model(cfg, 4, 3).lam_margin == -1.0


def test_cli_eval_uses_the_requested_device_not_the_runs(tmp_path, capsys):
    result = train(_tiny(tmp_path), figures=False, progress="off")
    ckpt = torch.load(result.out / "checkpoint.pt", weights_only=True)
    ckpt["config"].update(device="cuda:0", data_on_device=True)  # trained on a GPU, evaluated here on the CPU
    torch.save(ckpt, tmp_path / "gpu_run.pt")
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "gpu_run.pt"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])  # after the training run's own log line
    assert report["device"] == "cpu" and set(report["top1"]) == {"top1"}


def test_cli_eval_refuses_a_crafted_checkpoint(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "pwned"),))

    torch.save({"model": {}, "config": {}, "x": Evil()}, tmp_path / "evil.pt")
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "evil.pt")]) == 1  # CheckpointError, no traceback
    assert not (tmp_path / "pwned").exists()
    assert "no loadable checkpoint" in capsys.readouterr().err


def test_momentum_one_disables_the_ema_and_above_one_is_refused():
    model = AutoMix("resnet_tiny_cifar", num_classes=4, momentum=1.0, end_momentum=1.0)
    with torch.no_grad():
        for p in model.backbone_q.parameters():
            p.add_(1.0)  # the online network moves; the momentum encoder must not follow
    before = [p.clone() for p in model.backbone_k.parameters()]
    assert model.momentum_update(5, 10) == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.backbone_k.parameters(), strict=True))
    with pytest.raises(ValueError, match="momentum"):
        AutoMix("resnet_tiny_cifar", num_classes=4, momentum=1.5)
